"""Runs across restarts and stops (docs/runs.md §13 restarts, §14
SIGTERM): kill -9 during a run, downtime across ticks, a graceful stop that
lets a run finish, and one whose grace runs out."""

import asyncio
import signal
import time
import unittest

import websockets
import websockets.exceptions

from harness import async_test
from runs_helpers import BASE, MINUTE, RunsTest, proc_dead, proc_state

STOPPING_LINE = "stopping: no new connections or ticks"


class RestartTest(RunsTest):

    async def wait_stderr(self, server, text, timeout=15.0):
        deadline = time.monotonic() + timeout
        while text not in server.stderr():
            if time.monotonic() > deadline:
                raise AssertionError("server never logged %r:\n%s"
                                     % (text, server.stderr()))
            if not server.alive():
                raise AssertionError("server exited before logging %r:\n%s"
                                     % (text, server.stderr()))
            await asyncio.sleep(0.01)

    async def assertRefused(self, server):
        """A new WebSocket connection does not get through."""
        try:
            ws = await asyncio.wait_for(
                websockets.connect(server.url(), open_timeout=5,
                                   ping_interval=None, close_timeout=1), 10)
        except (OSError, EOFError, asyncio.TimeoutError,
                websockets.exceptions.WebSocketException):
            return
        await ws.close()
        self.fail("a new connection was accepted while stopping")

    async def wait_exit(self, server, timeout=30.0):
        rc = await asyncio.get_running_loop().run_in_executor(
            None, lambda: server.proc.wait(timeout))
        server.stop()  # already exited: checks status 0 and stderr
        return rc

    async def restart_at(self, es, t):
        es.set_clock_arg(t)
        await asyncio.get_running_loop().run_in_executor(None, es.server.start)

    @async_test(timeout=90)
    async def test_kill9_during_run_is_interrupted_and_not_refired(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        es.gate("k9")
        await self.add(c, "k9", "* * * * *", mode="block")
        self.assertEqual((await self.clock(c, set=BASE + MINUTE))["fired"], 1)
        run = await self.started(c, project_id="k9")
        await es.pid(run["id"], "child")
        es.server.kill9()
        # The run's processes outlive a SIGKILLed server; end them here so the
        # next run of k9 is the only one waiting on the gate.
        es.kill_leftovers()

        # restart at the same instant
        await self.restart_at(es, BASE + MINUTE)
        c = await self.admin(es.server)
        await self.watch(c)
        runs = await self.runs(c, "k9")
        self.assertEqual(len(runs), 1, runs)
        r = runs[0]
        self.assertEqual(r["id"], run["id"])
        self.assertEqual(r["outcome"], "interrupted", r)
        self.assertEqual(r["scheduled_for"], BASE + MINUTE)
        self.assertIsNotNone(r["finished_at"])
        self.assertTrue(r["reason"])
        st = await self.status(c, "k9")
        self.assertEqual(st["next_run_at"], BASE + 2 * MINUTE)
        self.assertEqual(st["last_run"]["outcome"], "interrupted")
        self.assertEqual((await self.clock(c, advance=0))["fired"], 0)
        self.assertEqual((await self.clock(c, set=BASE + 2 * MINUTE - 1))
                         ["fired"], 0)
        self.assertEqual(len(await self.runs(c, "k9")), 1)

        # the next minute fires once, as a new row
        self.assertEqual((await self.clock(c, set=BASE + 2 * MINUTE))
                         ["fired"], 1)
        run2 = await self.started(c, project_id="k9")
        self.assertEqual(run2["scheduled_for"], BASE + 2 * MINUTE)
        await es.pid(run2["id"], "child")

        # kill -9 again; restart a little later (no tick in between)
        es.server.kill9()
        es.kill_leftovers()
        await self.restart_at(es, BASE + 2 * MINUTE + 30)
        c = await self.admin(es.server)
        runs = await self.runs(c, "k9")
        self.assertEqual([(x["scheduled_for"], x["outcome"]) for x in runs],
                         [(BASE + 2 * MINUTE, "interrupted"),
                          (BASE + MINUTE, "interrupted")])
        self.assertEqual((await self.clock(c, advance=0))["fired"], 0)
        self.assertEqual(sorted(es.started_run_ids()),
                         sorted([run["id"], run2["id"]]))
        self.assertEqual((await self.status(c, "k9"))["next_run_at"],
                         BASE + 3 * MINUTE)

    @async_test(timeout=60)
    async def test_kill9_leaves_no_run_going_after_restart(self):
        """A run the restart records `interrupted` must not still be going:
        otherwise the `interrupted` row is false and the next tick starts a
        second run of the same deployment beside it (two overlapping runs).
        Expected: by the time the restarted server serves requests, the
        crashed server's run process group is gone (e.g. killed at restart,
        or tied to the server's life)."""
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        es.gate("orph")
        await self.add(c, "orph", "* * * * *", mode="block")
        await self.clock(c, set=BASE + MINUTE)
        run = await self.started(c, project_id="orph")
        pid = await es.pid(run["id"])
        child = await es.pid(run["id"], "child")
        es.server.kill9()
        await self.restart_at(es, BASE + MINUTE)
        c = await self.admin(es.server)
        await self.watch(c)
        self.assertEqual((await self.runs(c, "orph"))[0]["outcome"],
                         "interrupted")
        # the next tick starts a new run; the old one must not be going
        self.assertEqual((await self.clock(c, set=BASE + 2 * MINUTE))
                         ["fired"], 1)
        run2 = await self.started(c, project_id="orph")
        await es.pid(run2["id"], "child")
        try:
            await self.wait_dead(pid, timeout=5)
            await self.wait_dead(child, timeout=5)
        except AssertionError as e:
            raise AssertionError(
                "run %d, recorded interrupted, is still running (pid %d, "
                "state %s) beside run %d of the same deployment: %s"
                % (run["id"], pid, proc_state(pid), run2["id"], e)) from None

    @async_test(timeout=90)
    async def test_downtime_across_two_ticks_is_one_missed_row(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "down", "* * * * *")
        await self.clock(c, set=BASE + MINUTE)
        done = await c.wait_event(self.is_event("run_finished", "down"), 20)
        self.assertEqual(done["body"]["run"]["outcome"], "succeeded")
        await c.close()
        es.server.stop()

        # down across BASE+2m and BASE+3m
        await self.restart_at(es, BASE + 3 * MINUTE + 10)
        c = await self.admin(es.server)
        await self.watch(c)
        runs = await self.runs(c, "down")
        self.assertEqual([x["outcome"] for x in runs],
                         ["missed", "succeeded"], runs)
        m = runs[0]
        self.assertRunShape(m)
        self.assertEqual(m["missed_count"], 2)
        self.assertEqual(m["window_start"], BASE + 2 * MINUTE)
        self.assertEqual(m["window_end"], BASE + 3 * MINUTE)
        self.assertEqual(m["trigger"], "schedule")
        self.assertIsNone(m["started_at"])
        self.assertEqual(m["reason"], "server was not running")
        st = await self.status(c, "down")
        self.assertEqual(st["next_run_at"], BASE + 4 * MINUTE)
        self.assertEqual(st["last_run"]["id"], m["id"])
        # not run late
        self.assertEqual((await self.clock(c, advance=0))["fired"], 0)
        self.assertEqual(len(es.started_run_ids()), 1)
        # the schedule goes on
        self.assertEqual((await self.clock(c, set=BASE + 4 * MINUTE))
                         ["fired"], 1)
        ev = await c.wait_event(self.is_event("run_finished", "down"), 20)
        self.assertEqual(ev["body"]["run"]["scheduled_for"], BASE + 4 * MINUTE)
        await c.close()

        # a clean restart at the same instant adds nothing
        es.server.stop()
        await self.restart_at(es, BASE + 4 * MINUTE)
        c = await self.admin(es.server)
        runs = await self.runs(c, "down")
        self.assertEqual([(x["outcome"], x["scheduled_for"]) for x in runs],
                         [("succeeded", BASE + 4 * MINUTE),
                          ("missed", BASE + 3 * MINUTE),
                          ("succeeded", BASE + MINUTE)])
        self.assertEqual(len(es.started_run_ids()), 2)

    @async_test(timeout=90)
    async def test_sigterm_lets_a_running_run_finish(self):
        es = self.exec_server(args=("--shutdown-grace", "30s"))
        c = await self.admin(es.server)
        await self.watch(c)
        es.gate("term")
        await self.add(c, "term", mode="block")
        run = await self.run_now(c, "term")
        await self.started(c, run_id=run["id"])
        pid = await es.pid(run["id"], "child")
        t0 = time.monotonic()
        es.server.proc.send_signal(signal.SIGTERM)
        await self.wait_stderr(es.server, STOPPING_LINE)
        await self.assertRefused(es.server)
        self.assertTrue(es.server.alive())
        self.assertFalse(proc_dead(pid))
        await es.release("term")
        rc = await self.wait_exit(es.server)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 25, "waited for the grace")
        rows = es.db_runs("term")
        self.assertEqual([(x["id"], x["outcome"], x["exit_code"])
                          for x in rows], [(run["id"], "succeeded", 0)])

    async def stopping_with_a_run(self, es, c):
        """Block a run of `busy`, SIGTERM the server, wait until it says it
        is stopping. Returns the run."""
        es.gate("busy")
        await self.add(c, "busy", mode="block")
        run = await self.run_now(c, "busy")
        await self.started(c, run_id=run["id"])
        await es.pid(run["id"], "child")
        es.server.proc.send_signal(signal.SIGTERM)
        await self.wait_stderr(es.server, STOPPING_LINE)
        return run

    @async_test(timeout=60)
    async def test_sigterm_starts_no_new_manual_run(self):
        """While stopping (waiting for runs in progress), a manual run asked
        for on a connection that is still open is refused and starts no
        process: draining takes no new work, and a run started now would
        only be cut short by the grace (or prolong the stop)."""
        es = self.exec_server(args=("--shutdown-grace", "30s"))
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "late")
        run = await self.stopping_with_a_run(es, c)
        r = await c.call("rrext_deploy_run", projectId="late")
        await es.release("busy")
        rc = await self.wait_exit(es.server)
        self.assertEqual(rc, 0)
        late = es.db_runs("late")
        self.assertEqual(es.started_run_ids(), [run["id"]],
                         "a manual run started while stopping: %r; ledger %r"
                         % (r.get("body"), late))
        self.assertIs(r.get("success"), False, r)
        self.assertEqual(late, [])

    @async_test(timeout=60)
    async def test_sigterm_decides_no_tick(self):
        """While stopping, ticks are not decided. The real timer checks
        this (on_tick); rrtest_clock, the only way to make a tick due in a
        test, must behave the same: fired 0, no row, no process."""
        es = self.exec_server(args=("--shutdown-grace", "30s"))
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "tick", "* * * * *")
        run = await self.stopping_with_a_run(es, c)
        r = await c.call("rrtest_clock", set=BASE + MINUTE)
        await es.release("busy")
        rc = await self.wait_exit(es.server)
        self.assertEqual(rc, 0)
        self.assertEqual(es.started_run_ids(), [run["id"]],
                         "a tick fired while stopping: %r" % r.get("body"))
        self.assertEqual(es.db_runs("tick"), [])

    @async_test(timeout=90)
    async def test_sigterm_grace_over_marks_run_interrupted(self):
        es = self.exec_server(args=("--shutdown-grace", "1s"))
        c = await self.admin(es.server)
        await self.watch(c)
        es.gate("long")
        await self.add(c, "long", mode="block")
        run = await self.run_now(c, "long")
        await self.started(c, run_id=run["id"])
        pid = await es.pid(run["id"])
        child = await es.pid(run["id"], "child")
        t0 = time.monotonic()
        es.server.proc.send_signal(signal.SIGTERM)
        await self.wait_stderr(es.server, STOPPING_LINE)
        await self.assertRefused(es.server)
        rc = await self.wait_exit(es.server)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0)
        self.assertGreaterEqual(elapsed, 0.9)
        rows = es.db_runs("long")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["outcome"], "interrupted", rows)
        self.assertIsNotNone(rows[0]["finished_at"])
        self.assertTrue(rows[0]["reason"])
        # no process of the run outlives the server
        await self.wait_dead(pid)
        await self.wait_dead(child)

        # after a restart the row stays as it was and the deployment runs
        await self.restart_at(es, BASE + 10)
        c = await self.admin(es.server)
        await self.watch(c)
        runs = await self.runs(c, "long")
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0]["outcome"], "interrupted")
        self.assertEqual(runs[0]["reason"], rows[0]["reason"])
        run2 = await self.run_now(c, "long")
        await self.started(c, run_id=run2["id"])
        await es.release("long")
        self.assertEqual((await self.finished(c, run2["id"]))["outcome"],
                         "succeeded")


    # -- runs decided ahead (a second before their time) across a restart

    async def decide_ahead(self, c, n, prefix):
        """n every-minute deployments, decided a second before the minute
        (ledger rows committed as queued, runs held for their time)."""
        for i in range(n):
            await self.add(c, "%s%04d" % (prefix, i), "* * * * *")
        t = BASE + MINUTE
        self.assertEqual((await self.clock(c, set=t - 0.5, lead=1))["fired"], n)
        return t

    async def wait_db(self, es, pred, what, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            rows = es.db_runs()
            if pred(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError("never %s: %r" % (what, rows[:5]))
            await asyncio.sleep(0.05)

    @async_test(timeout=170)
    async def test_kill9_in_the_second_before_a_tick_loses_no_run(self):
        n = 1000
        es = self.exec_server()
        c = await self.admin(es.server)
        t = await self.decide_ahead(c, n, "ahead")
        self.assertEqual(es.started_run_ids(), [])
        es.server.kill9()

        # restart at once, still before the minute: held again, then run
        await self.restart_at(es, t - 0.4)
        c = await self.admin(es.server)
        self.assertEqual(es.started_run_ids(), [])
        self.assertEqual((await self.clock(c, set=t))["fired"], 0)
        rows = await self.wait_db(
            es, lambda rs: sum(r["outcome"] == "succeeded" for r in rs) == n,
            "ran all %d" % n)
        self.assertEqual(len(rows), n, "a scheduled time got two rows")
        self.assertEqual({r["project_id"] for r in rows},
                         {"ahead%04d" % i for i in range(n)})
        self.assertTrue(all(r["scheduled_for"] == t for r in rows))
        self.assertEqual(len(es.started_run_ids()), n)
        # and the next minute is the next tick, once each
        self.assertEqual((await self.clock(c, set=t + MINUTE))["fired"], n)

    @async_test(timeout=60)
    async def test_decided_run_starts_late_within_the_starting_deadline(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        t = await self.decide_ahead(c, 1, "late")
        es.server.kill9()
        await self.restart_at(es, t + 5)  # 5 s late: started at once
        c = await self.admin(es.server)
        rows = await self.wait_db(
            es, lambda rs: rs and rs[0]["outcome"] == "succeeded", "ran")
        self.assertEqual([(r["scheduled_for"], r["outcome"]) for r in rows],
                         [(t, "succeeded")])
        self.assertEqual((await self.status(c, "late0000"))["next_run_at"],
                         t + MINUTE)

    @async_test(timeout=60)
    async def test_decided_run_past_the_starting_deadline_is_missed_once(self):
        es = self.exec_server(args=["--starting-deadline", "30s"])
        c = await self.admin(es.server)
        t = await self.decide_ahead(c, 1, "gone")
        es.server.kill9()
        await self.restart_at(es, t + MINUTE + 10)  # 70 s late
        c = await self.admin(es.server)
        runs = await self.runs(c, "gone0000")
        self.assertEqual([(r["scheduled_for"], r["outcome"]) for r in runs],
                         [(t + MINUTE, "missed"), (t, "missed")], runs)
        newer, older = runs
        # the decided run: one time, its own row, said why
        self.assertEqual(older["missed_count"], 1)
        self.assertEqual((older["window_start"], older["window_end"]), (t, t))
        self.assertIn("starting deadline", older["reason"])
        self.assertIsNone(older["started_at"])
        # the tick that fell due while down: not counted twice
        self.assertEqual(newer["missed_count"], 1)
        self.assertEqual(newer["window_start"], t + MINUTE)
        self.assertEqual(es.started_run_ids(), [])
        self.assertEqual((await self.status(c, "gone0000"))["next_run_at"],
                         t + 2 * MINUTE)


if __name__ == "__main__":
    unittest.main()
