"""Scheduled and manual runs (docs/runs.md, docs/protocol.md §5): ticks on
the test clock, the pipeline on stdin and the RR_* environment, overlap
skips, pause/resume, manual runs with idempotency keys, the output tail, a
wall clock stepped back, and the missing executor."""

import unittest

from harness import async_test, raw_member
from runs_helpers import BASE, MINUTE, RunsTest, iso


class ScheduledRunsTest(RunsTest):

    @async_test(timeout=60)
    async def test_every_minute_runs_with_stdin_and_env(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        rec = await self.add(c, "tick", "* * * * *", note="caf\u00e9 \"q\"")
        self.assertEqual(rec["next_run_at"], BASE + MINUTE)
        self.assertIsNone(rec["last_run"])
        raw_pipe = raw_member(
            (await c.call("rrext_deploy_status", projectId="tick"))["_raw"],
            "body", "pipeline")
        # nothing is due yet
        self.assertEqual((await self.clock(c, advance=0))["fired"], 0)
        self.assertEqual(await self.runs(c, "tick"), [])

        ids = []
        for i in range(1, 4):
            minute = BASE + i * MINUTE
            now = (await c.request("rrtest_clock",
                                   {"set": minute}))["body"]
            self.assertEqual(now, {"now": minute, "fired": 1})
            started = await self.started(c, project_id="tick",
                                         timeout=20) if i == 1 else None
            ev = await c.wait_event(
                lambda b, n=len(ids): b["action"] == "run_finished"
                and b["run"]["scheduled_for"] == minute, 20)
            run = ev["body"]["run"]
            self.assertRunShape(run)
            if started:
                self.assertEqual(started["id"], run["id"])
                self.assertEqual(started["outcome"], "running")
            self.assertEqual(run["outcome"], "succeeded", run)
            self.assertEqual(run["trigger"], "schedule")
            self.assertEqual(run["projectId"], "tick")
            self.assertEqual(run["userId"], "admin")
            self.assertEqual(run["exit_code"], 0)
            self.assertIsNone(run["signal"])
            self.assertIsNone(run["reason"])
            self.assertEqual(run["output_tail"], "hello %d\n" % run["id"])
            # the test clock stamps the ledger
            self.assertEqual(run["created_at"], minute)
            self.assertEqual(run["started_at"], minute)
            self.assertEqual(run["finished_at"], minute)
            # what the process saw
            stdin = (await es.wait_file(run["id"], "stdin")).decode()
            self.assertEqual(stdin, raw_pipe)
            env = es.env(run["id"])
            self.assertEqual(env, {
                "RR_PROJECT_ID": "tick", "RR_USER_ID": "admin",
                "RR_RUN_ID": str(run["id"]), "RR_TRIGGER": "schedule",
                "RR_SCHEDULED_AT": iso(minute)})
            ids.append(run["id"])
        self.assertEqual(len(set(ids)), 3)
        self.assertEqual(es.started_run_ids(), sorted(ids))
        runs = await self.runs(c, "tick")
        self.assertEqual([r["id"] for r in runs], sorted(ids, reverse=True))
        self.assertEqual([r["scheduled_for"] for r in runs],
                         [BASE + 3 * MINUTE, BASE + 2 * MINUTE, BASE + MINUTE])
        st = await self.status(c, "tick")
        self.assertEqual(st["last_run"]["id"], ids[-1])
        self.assertEqual(st["next_run_at"], BASE + 4 * MINUTE)
        # limit
        self.assertEqual([r["id"] for r in await self.runs(c, "tick", 2)],
                         sorted(ids, reverse=True)[:2])
        # mid-minute advances fire nothing more
        self.assertEqual((await self.clock(c, advance=59))["fired"], 0)
        self.assertEqual(len(await self.runs(c, "tick")), 3)

    @async_test(timeout=60)
    async def test_failing_run_keeps_exit_code(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "bad", "* * * * *", mode="fail")
        await self.clock(c, set=BASE + MINUTE)
        ev = await c.wait_event(self.is_event("run_finished", "bad"), 20)
        run = ev["body"]["run"]
        self.assertEqual(run["outcome"], "failed", run)
        self.assertEqual(run["exit_code"], 3)
        self.assertIsNone(run["signal"])
        self.assertEqual(run["output_tail"], "failing\n")

    @async_test(timeout=60)
    async def test_slow_run_makes_next_tick_skipped_overlap(self):
        es = self.exec_server()
        es.gate("slow")
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "slow", "* * * * *", mode="block")
        self.assertEqual((await self.clock(c, set=BASE + MINUTE))["fired"], 1)
        first = await self.started(c, project_id="slow", timeout=20)
        await es.pid(first["id"], "child")  # it is blocked on its gate
        self.assertEqual((await self.clock(c, advance=MINUTE))["fired"], 1)
        ev = await c.wait_event(self.is_event("tick_skipped", "slow"), 10)
        skipped = ev["body"]["run"]
        self.assertRunShape(skipped)
        self.assertEqual(skipped["outcome"], "skipped")
        self.assertEqual(skipped["reason"], "overlap")
        self.assertEqual(skipped["scheduled_for"], BASE + 2 * MINUTE)
        self.assertEqual(skipped["trigger"], "schedule")
        self.assertIsNone(skipped["started_at"])
        runs = await self.runs(c, "slow")
        self.assertEqual([(r["outcome"], r["scheduled_for"]) for r in runs],
                         [("skipped", BASE + 2 * MINUTE),
                          ("running", BASE + MINUTE)])
        # only one process ever started
        self.assertEqual(es.started_run_ids(), [first["id"]])
        await es.release("slow")
        done = await self.finished(c, first["id"])
        self.assertEqual(done["outcome"], "succeeded", done)
        # the next tick runs normally
        self.assertEqual((await self.clock(c, advance=MINUTE))["fired"], 1)
        ev = await c.wait_event(
            lambda b: b["action"] == "run_started"
            and b["run"]["scheduled_for"] == BASE + 3 * MINUTE, 20)
        await es.release("slow")
        self.assertEqual((await self.finished(c, ev["body"]["run"]["id"]))
                         ["outcome"], "succeeded")

    @async_test(timeout=60)
    async def test_pause_stops_firing_resume_restarts(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "pz", "* * * * *")
        await self.clock(c, set=BASE + MINUTE)
        await c.wait_event(self.is_event("run_finished", "pz"), 20)
        self.assertEqual((await self.status(c, "pz"))["next_run_at"],
                         BASE + 2 * MINUTE)

        self.assertEqual(self.assertOk(await c.call(
            "rrext_deploy_update", projectId="pz", state="paused")), {})
        ev = await c.wait_event(self.is_event("state_changed", "pz"), 10)
        self.assertEqual(ev["body"]["state"], "paused")
        st = await self.status(c, "pz")
        self.assertEqual(st["state"], "paused")
        self.assertIsNone(st["next_run_at"])
        for _ in range(5):
            self.assertEqual((await self.clock(c, advance=MINUTE))["fired"], 0)
        self.assertEqual(len(await self.runs(c, "pz")), 1)
        r = await c.call("rrext_deploy_run", projectId="pz")
        self.assertErr(r, "conflict", "Deployment 'pz' is paused")

        now = BASE + 6 * MINUTE
        self.assertOk(await c.call("rrext_deploy_update", projectId="pz",
                                   state="active"))
        await c.wait_event(self.is_event("state_changed", "pz", state="active"),
                           10)
        ev = [e for e in c.events if e["body"]["action"] == "state_changed"]
        self.assertEqual([e["body"]["state"] for e in ev],
                         ["paused", "active"])
        st = await self.status(c, "pz")
        self.assertEqual(st["state"], "active")
        self.assertEqual(st["next_run_at"], now + MINUTE)
        self.assertEqual((await self.clock(c, advance=MINUTE))["fired"], 1)
        ev = await c.wait_event(
            lambda b: b["action"] == "run_finished"
            and b["run"]["scheduled_for"] == now + MINUTE, 20)
        self.assertEqual(ev["body"]["run"]["outcome"], "succeeded")
        # no missed row for the paused minutes: a pause is not an outage
        self.assertEqual([r["outcome"] for r in await self.runs(c, "pz")],
                         ["succeeded", "succeeded"])

    @async_test(timeout=60)
    async def test_clock_stepped_back_fires_nothing_twice(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "back", "* * * * *")
        fired_at = []
        for i in range(1, 4):
            t = BASE + i * MINUTE
            self.assertEqual((await self.clock(c, set=t))["fired"], 1)
            ev = await c.wait_event(
                lambda b, t=t: b["action"] == "run_finished"
                and b["run"]["scheduled_for"] == t, 20)
            self.assertEqual(ev["body"]["run"]["outcome"], "succeeded")
            fired_at.append(t)
        last = fired_at[-1]
        # one hour back, then through the same minutes again
        t = last - 3600
        self.assertEqual((await self.clock(c, set=t))["fired"], 0)
        self.assertEqual((await self.status(c, "back"))["next_run_at"],
                         last + MINUTE)
        while t < last + MINUTE - 1:
            t += MINUTE
            t = min(t, last + MINUTE - 1)
            r = await self.clock(c, set=t)
            self.assertEqual(r["fired"], 0, "fired again at %s" % iso(t))
        # the exact minutes fired before, once more
        for ft in fired_at:
            self.assertEqual((await self.clock(c, set=ft))["fired"], 0)
        runs = await self.runs(c, "back")
        self.assertEqual(sorted(r["scheduled_for"] for r in runs), fired_at)
        self.assertEqual(len(es.started_run_ids()), 3)
        # past the last fired minute it goes on
        self.assertEqual((await self.clock(c, set=last + MINUTE))["fired"], 1)
        ev = await c.wait_event(
            lambda b: b["action"] == "run_finished"
            and b["run"]["scheduled_for"] == last + MINUTE, 20)
        runs = await self.runs(c, "back")
        self.assertEqual([r["scheduled_for"] for r in runs],
                         [last + MINUTE] + fired_at[::-1])
        self.assertEqual(len({r["scheduled_for"] for r in runs}), 4)

    @async_test(timeout=60)
    async def test_clock_jump_forward_is_one_run_and_one_missed_row(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "jump", "* * * * *")
        # BASE+10 -> BASE+5m10s: ticks at 1..5 min are due; the latest runs
        self.assertEqual((await self.clock(c, advance=5 * MINUTE))["fired"], 1)
        ev = await c.wait_event(self.is_event("run_finished", "jump"), 20)
        self.assertEqual(ev["body"]["run"]["scheduled_for"], BASE + 5 * MINUTE)
        runs = await self.runs(c, "jump")
        self.assertEqual([r["outcome"] for r in runs], ["succeeded", "missed"])
        missed = runs[1]
        self.assertRunShape(missed)
        self.assertEqual(missed["missed_count"], 4)
        self.assertEqual(missed["window_start"], BASE + MINUTE)
        self.assertEqual(missed["window_end"], BASE + 4 * MINUTE)
        self.assertEqual(len(es.started_run_ids()), 1)


class ManualRunsTest(RunsTest):

    @async_test(timeout=60)
    async def test_manual_run_refused_while_running_and_idempotent(self):
        es = self.exec_server()
        es.gate("man")
        c = await self.admin(es.server)
        await self.watch(c)
        rec = await self.add(c, "man", mode="block")  # schedule: manual
        self.assertEqual(rec["schedule"], "manual")
        self.assertIsNone(rec["next_run_at"])
        now = BASE + 10

        run = await self.run_now(c, "man", key="k1")
        self.assertRunShape(run)
        self.assertEqual(run["trigger"], "manual")
        self.assertIn(run["outcome"], ("queued", "running"))
        self.assertIsNone(run["scheduled_for"])
        self.assertEqual(run["idempotency_key"], "k1")
        self.assertEqual(run["created_at"], now)
        await self.started(c, run_id=run["id"])
        await es.pid(run["id"], "child")
        env = es.env(run["id"])
        self.assertEqual(env["RR_TRIGGER"], "manual")
        self.assertEqual(env["RR_SCHEDULED_AT"], iso(now))
        self.assertEqual(env["RR_RUN_ID"], str(run["id"]))

        # a second run while it runs: refused, with or without a new key
        r = await c.call("rrext_deploy_run", projectId="man")
        self.assertErr(r, "conflict", "Deployment 'man' is already running")
        r = await c.call("rrext_deploy_run", projectId="man",
                         idempotencyKey="k2")
        self.assertErr(r, "conflict", "Deployment 'man' is already running")
        # the same key: the original run, nothing new
        again = await self.run_now(c, "man", key="k1")
        self.assertEqual(again["id"], run["id"])
        self.assertEqual(again["outcome"], "running")

        await es.release("man")
        done = await self.finished(c, run["id"])
        self.assertEqual(done["outcome"], "succeeded")
        again = await self.run_now(c, "man", key="k1")
        self.assertEqual(again["id"], run["id"])
        self.assertEqual(again["outcome"], "succeeded")
        self.assertEqual(len(await self.runs(c, "man")), 1)
        self.assertEqual(es.started_run_ids(), [run["id"]])
        # idempotency keys are per deployment
        await self.add(c, "man2")
        other = await self.run_now(c, "man2", key="k1")
        self.assertNotEqual(other["id"], run["id"])
        await self.finished(c, other["id"])
        # a new key starts a new run
        nxt = await self.run_now(c, "man", key="k2")
        self.assertNotEqual(nxt["id"], run["id"])
        await self.started(c, run_id=nxt["id"])
        await es.release("man")
        self.assertEqual((await self.finished(c, nxt["id"]))["outcome"],
                         "succeeded")
        self.assertEqual([r["id"] for r in await self.runs(c, "man")],
                         [nxt["id"], run["id"]])
        # cancel with nothing running
        r = await c.call("rrext_deploy_cancel", projectId="man")
        self.assertErr(r, "conflict", "Deployment 'man' is not running")
        # unknown deployment
        r = await c.call("rrext_deploy_run", projectId="nope")
        self.assertErr(r, "not_found", "Deployment not found: nope")

    @async_test(timeout=60)
    async def test_output_tail_is_last_64k(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "big", mode="big")
        run = await self.run_now(c, "big")
        done = await self.finished(c, run["id"])
        full = "".join("%d\n" % i for i in range(1, 40001))
        self.assertGreater(len(full), 3 * 65536)
        self.assertEqual(done["outcome"], "succeeded")
        self.assertEqual(len(done["output_tail"]), 65536)
        self.assertEqual(done["output_tail"], full[-65536:])
        # the same through runs; records carry a summary without output,
        # so a list of 10,000 deployments cannot grow by 64 KiB each
        runs = await self.runs(c, "big")
        self.assertEqual(runs[0]["output_tail"], full[-65536:])
        st = await self.status(c, "big")
        self.assertEqual(st["last_run"]["id"], done["id"])
        self.assertEqual(st["last_run"]["outcome"], "succeeded")
        self.assertNotIn("output_tail", st["last_run"])

    @async_test(timeout=60)
    async def test_no_executor_configured(self):
        es = self.exec_server(exec_script=False)
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "noexec")
        run = await self.run_now(c, "noexec")
        done = await self.finished(c, run["id"])
        self.assertEqual(done["outcome"], "failed", done)
        self.assertEqual(done["reason"], "no executor configured")
        self.assertIsNotNone(done["finished_at"])
        runs = await self.runs(c, "noexec")
        self.assertEqual(runs[0]["outcome"], "failed")
        self.assertEqual(runs[0]["reason"], "no executor configured")
        # the deployment is free for another run
        run2 = await self.run_now(c, "noexec")
        self.assertEqual((await self.finished(c, run2["id"]))["reason"],
                         "no executor configured")
        self.assertIn("no --exec", es.server.stderr())

    @async_test(timeout=60)
    async def test_records_carry_their_last_run(self):
        es = self.exec_server(exec_script=False)
        c = await self.admin(es.server)
        await self.watch(c)
        for pid in ("lr_a", "lr_b", "lr_c", "lr_d"):
            await self.add(c, pid)
        b1 = await self.finished(c, (await self.run_now(c, "lr_b"))["id"])
        b2 = await self.finished(c, (await self.run_now(c, "lr_b"))["id"])
        d1 = await self.finished(c, (await self.run_now(c, "lr_d"))["id"])
        body = self.assertOk(await c.call("rrext_deploy_list"))
        last = {d["pipeline"]["project_id"]: d["last_run"]
                for d in body["deployments"]}
        self.assertIsNone(last["lr_a"])
        self.assertIsNone(last["lr_c"])
        self.assertEqual(last["lr_b"]["id"], b2["id"])
        self.assertNotEqual(b1["id"], b2["id"])
        self.assertEqual(last["lr_d"]["id"], d1["id"])
        self.assertEqual(last["lr_d"]["outcome"], "failed")
        self.assertEqual((await self.status(c, "lr_b"))["last_run"]["id"], b2["id"])

    @async_test(timeout=30)
    async def test_rrtest_clock_needs_test_clock(self):
        es = self.exec_server(test_clock=None)
        c = await self.admin(es.server)
        r = await c.call("rrtest_clock", advance=60)
        self.assertErr(r, "bad_request", "Invalid command: rrtest_clock")


if __name__ == "__main__":
    unittest.main()
