"""Watch events and errored owners (docs/protocol.md §8 rrext_deploy_watch,
docs/runs.md §10 errored): events for started, finished, skipped, missed and state changes,
only for the subscriber's own deployments (and only the one project when
filtered); a revoked or expired owner key marks its deployments errored, with
an event, and nothing of theirs runs again."""

import asyncio
import time
import unittest

from harness import async_test
from runs_helpers import BASE, MINUTE, RunsTest


class WatchTest(RunsTest):

    @async_test(timeout=60)
    async def test_events_only_for_own_deployments(self):
        es = self.exec_server()
        srv = es.server
        alice_all = await self.user_client(server=srv, user="alice")
        alice_one = await self.user_client(server=srv, user="alice")
        bob = await self.user_client(server=srv, user="bob")
        unwatched = await self.user_client(server=srv, user="alice")
        clock = await self.admin(srv)
        self.assertEqual(await self.watch(alice_all),
                         {"watching": True, "projectId": None})
        self.assertEqual(await self.watch(alice_one, "a1"),
                         {"watching": True, "projectId": "a1"})
        self.assertEqual(await self.watch(bob),
                         {"watching": True, "projectId": None})
        # watch then unwatch: no events at all
        await self.watch(unwatched)
        self.assertEqual(await self.watch(unwatched, enable=False),
                         {"watching": False, "projectId": None})

        es.gate("a1")
        await self.add(alice_all, "a1", "* * * * *", mode="block")
        await self.add(alice_all, "a2")
        # bob's deployment has the same project id as alice's
        await self.add(bob, "a1", "* * * * *")
        await self.add(bob, "b1")

        # tick: alice's a1 starts (and blocks), bob's a1 runs
        self.assertEqual((await self.clock(clock, set=BASE + MINUTE))
                         ["fired"], 2)
        a1_run = await self.started(alice_all, project_id="a1")
        self.assertEqual(a1_run["userId"], "alice")
        ev = await bob.wait_event(self.is_event("run_finished", "a1"), 20)
        self.assertEqual(ev["body"]["run"]["userId"], "bob")
        # next tick: alice's a1 is skipped (overlap), bob's runs again
        self.assertEqual((await self.clock(clock, advance=MINUTE))
                         ["fired"], 2)
        skipped = (await alice_all.wait_event(
            self.is_event("tick_skipped", "a1"), 10))["body"]["run"]
        self.assertEqual(skipped["reason"], "overlap")
        await bob.wait_event(
            lambda b: b["action"] == "run_finished"
            and b["run"]["scheduled_for"] == BASE + 2 * MINUTE, 20)
        await es.release("a1")
        await self.finished(alice_all, a1_run["id"])
        # a manual run of a2 and of b1
        b1 = await self.run_now(bob, "b1")
        await self.finished(bob, b1["id"])
        a2 = await self.run_now(alice_all, "a2")
        await self.finished(alice_all, a2["id"])
        # pause a1 (state change), remove a2
        self.assertOk(await alice_all.call("rrext_deploy_update",
                                           projectId="a1", state="paused"))
        self.assertOk(await alice_all.call("rrext_deploy_remove",
                                           projectId="a2"))
        await alice_all.wait_event(self.is_event("removed", "a2"), 10)
        # a last event every alice watcher must get, marking the end: events
        # are sent in order on each connection, so anything for alice_one
        # would have arrived before it
        self.assertOk(await alice_all.call("rrext_deploy_update",
                                           projectId="a1", state="active"))
        await alice_one.wait_event(
            self.is_event("state_changed", "a1", state="active"), 10)
        await alice_all.wait_event(
            self.is_event("state_changed", "a1", state="active"), 10)
        # and one for bob
        self.assertOk(await bob.call("rrext_deploy_remove", projectId="b1"))
        await bob.wait_event(self.is_event("removed", "b1"), 10)

        def summary(c):
            out = []
            for e in c.events:
                self.assertEqual(e["event"], "apaevt_deploy")
                b = e["body"]
                run = b.get("run")
                if run is not None:
                    self.assertRunShape(run)
                # when it happened, by the server's (test) clock
                self.assertIsInstance(b["at"], (int, float))
                self.assertGreaterEqual(b["at"], BASE)
                when = {"run_started": "started_at", "run_finished": "finished_at",
                        "tick_skipped": "created_at"}.get(b["action"])
                if when:
                    self.assertEqual(b["at"], run[when])
                out.append((b["action"], b["projectId"],
                            run["userId"] if run else None,
                            b.get("state")))
            return out

        self.assertEqual(summary(alice_all), [
            ("run_started", "a1", "alice", None),
            ("tick_skipped", "a1", "alice", None),
            ("run_finished", "a1", "alice", None),
            ("run_started", "a2", "alice", None),
            ("run_finished", "a2", "alice", None),
            ("state_changed", "a1", None, "paused"),
            ("removed", "a2", None, None),
            ("state_changed", "a1", None, "active"),
        ])
        self.assertEqual(summary(alice_one), [
            ("run_started", "a1", "alice", None),
            ("tick_skipped", "a1", "alice", None),
            ("run_finished", "a1", "alice", None),
            ("state_changed", "a1", None, "paused"),
            ("state_changed", "a1", None, "active"),
        ])
        bob_events = summary(bob)
        self.assertEqual(bob_events, [
            ("run_started", "a1", "bob", None),
            ("run_finished", "a1", "bob", None),
            ("run_started", "a1", "bob", None),
            ("run_finished", "a1", "bob", None),
            ("run_started", "b1", "bob", None),
            ("run_finished", "b1", "bob", None),
            ("removed", "b1", None, None),
        ])
        self.assertEqual(unwatched.events, [])
        self.assertEqual(clock.events, [])
        # the state_changed event carries the error field (null here)
        sc = [e["body"] for e in alice_all.events
              if e["body"]["action"] == "state_changed"]
        self.assertIn("error", sc[0])
        self.assertIsNone(sc[0]["error"])

    @async_test(timeout=60)
    async def test_watch_argument_errors(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        r = await c.call("rrext_deploy_watch", enable="yes")
        self.assertErr(r, "bad_request", "enable must be a boolean")
        r = await c.call("rrext_deploy_watch", projectId=5)
        self.assertErr(r, "bad_request")
        self.assertIn("projectId", r["message"])
        ro = await self.user_client(perms="task.control", server=es.server)
        r = await ro.call("rrext_deploy_watch")
        self.assertErr(r, "forbidden", "Permission 'task.monitor' denied")
        r = await ro.call("rrext_deploy_runs", projectId="x")
        self.assertErr(r, "forbidden", "Permission 'task.monitor' denied")
        mon = await self.user_client(perms="task.monitor", server=es.server)
        for cmd in ("rrext_deploy_run", "rrext_deploy_cancel"):
            r = await mon.call(cmd, projectId="x")
            self.assertErr(r, "forbidden", "Permission 'task.control' denied")
        for limit in (0, -1, 1.5, "2", 100000):
            r = await c.call("rrext_deploy_runs", projectId="x", limit=limit)
            self.assertErr(r, "bad_request")
        await self.add(c, "x")
        for key in ("", 5, True, "k" * 100000):
            r = await c.call("rrext_deploy_run", projectId="x",
                             idempotencyKey=key)
            self.assertErr(r, "bad_request")
        self.assertEqual(await self.runs(c, "x"), [])


class ErroredOwnerTest(RunsTest):

    @async_test(timeout=60)
    async def test_revoked_owner_key_errors_deployment_for_good(self):
        es = self.exec_server()
        srv = es.server
        owner = await self.user_client(server=srv, user="carol")
        watcher = await self.user_client(server=srv, user="carol",
                                         perms="task.monitor")
        clock = await self.admin(srv)
        await self.watch(watcher)
        rec = await self.add(owner, "rv", "* * * * *")
        await self.add(owner, "rv_manual")
        owner_key_id = srv.key_id("carol", owner.key_label)
        self.assertEqual(rec["owner_key_id"], owner_key_id)
        self.assertEqual((await self.clock(clock, set=BASE + MINUTE))
                         ["fired"], 1)
        await watcher.wait_event(self.is_event("run_finished", "rv"), 20)

        t0 = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            None, srv.revoke_key, owner.key)
        evs = []
        for pid in ("rv", "rv_manual"):
            ev = await watcher.wait_event(
                self.is_event("state_changed", pid), 5)
            evs.append(ev)
        took = time.monotonic() - t0
        self.assertLess(took, 3.0, "errored after %.2fs" % took)
        why = "owner key %s was revoked" % owner_key_id
        for ev in evs:
            self.assertEqual(ev["body"]["state"], "errored")
            self.assertEqual(ev["body"]["error"], why)
        # the owner's own session is gone
        r = await owner.call("rrext_deploy_list")
        self.assertErr(r, "unauthorized", "Not authenticated")
        await owner.wait_closed(10)

        st = await self.status(watcher, "rv")
        self.assertEqual(st["state"], "errored")
        self.assertEqual(st["error"], why)
        self.assertIsNone(st["next_run_at"])
        n_runs = len(await self.runs(watcher, "rv"))
        # many ticks later: nothing
        for _ in range(10):
            self.assertEqual((await self.clock(clock, advance=MINUTE))
                             ["fired"], 0)
        self.assertEqual((await self.clock(clock, advance=86400))["fired"], 0)
        self.assertEqual(len(await self.runs(watcher, "rv")), n_runs)
        self.assertEqual(await self.runs(watcher, "rv_manual"), [])
        self.assertEqual(len(es.started_run_ids()), 1)
        # not by hand either, nor back to life
        owner2 = await self.user_client(server=srv, user="carol")
        r = await owner2.call("rrext_deploy_run", projectId="rv")
        self.assertErr(r, "conflict",
                       "Deployment 'rv' is errored: %s" % why)
        r = await owner2.call("rrext_deploy_update", projectId="rv",
                              state="active")
        self.assertErr(r, "conflict")
        self.assertEqual(len(es.started_run_ids()), 1)
        # after a restart it is still errored and still does not fire
        await owner2.close()
        await watcher.close()
        await clock.close()
        srv.stop()
        es.set_clock_arg(BASE + 3 * 86400)
        srv.start()
        c = await self.client(srv, key=owner2.key)
        st = await self.status(c, "rv")
        self.assertEqual(st["state"], "errored")
        self.assertEqual(st["error"], why)
        self.assertEqual((await self.clock(c, advance=MINUTE))["fired"], 0)
        self.assertEqual(len(await self.runs(c, "rv")), n_runs)
        self.assertEqual(len(es.started_run_ids()), 1)
        # remove + add gives a working deployment owned by the new key
        self.assertOk(await c.call("rrext_deploy_remove", projectId="rv"))
        rec = await self.add(c, "rv")
        self.assertEqual(rec["state"], "active")
        await self.watch(c)
        run = await self.run_now(c, "rv")
        self.assertEqual((await self.finished(c, run["id"]))["outcome"],
                         "succeeded")

    @async_test(timeout=60)
    async def test_expired_owner_key_errors_at_next_tick(self):
        # The test clock starts at the real time, so the key's real expiry
        # is reached by moving the clock.
        es = self.exec_server(test_clock=True)
        srv = es.server
        key = srv.create_key("dave", label="short", expires="1d")
        kid = srv.key_id("dave", "short")
        owner = await self.client(srv, key=key)
        watcher = await self.user_client(server=srv, user="dave",
                                         perms="task.monitor")
        clock = await self.admin(srv)
        await self.watch(watcher)
        await self.add(owner, "ex", "0 * * * *")
        await self.add(owner, "ex_manual")
        # an hour later it still runs
        r = await self.clock(clock, advance=3600)
        self.assertEqual(r["fired"], 1)
        await watcher.wait_event(self.is_event("run_finished", "ex"), 20)
        # two days later: the next tick finds the key expired
        r = await self.clock(clock, advance=2 * 86400)
        ev = await watcher.wait_event(self.is_event("state_changed", "ex"), 10)
        why = "owner key %s expired" % kid
        self.assertEqual(ev["body"]["state"], "errored")
        self.assertEqual(ev["body"]["error"], why)
        runs = await self.runs(watcher, "ex")
        self.assertNotIn("running", [x["outcome"] for x in runs])
        self.assertEqual(len(es.started_run_ids()), 1)
        st = await self.status(watcher, "ex")
        self.assertEqual((st["state"], st["error"], st["next_run_at"]),
                         ("errored", why, None))
        # the manual deployment errors at its next manual run
        owner2 = await self.user_client(server=srv, user="dave")
        r = await owner2.call("rrext_deploy_run", projectId="ex_manual")
        self.assertErr(r, "conflict",
                       "Deployment 'ex_manual' is errored: %s" % why)
        ev = await watcher.wait_event(
            self.is_event("state_changed", "ex_manual"), 10)
        self.assertEqual(ev["body"]["error"], why)
        self.assertEqual(len(es.started_run_ids()), 1)
        for _ in range(3):
            await self.clock(clock, advance=3600)
        self.assertEqual(len(es.started_run_ids()), 1)


if __name__ == "__main__":
    unittest.main()
