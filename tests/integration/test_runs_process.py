"""Run processes (docs/runs.md §4, §12): cancel, --run-timeout and remove
end the run's whole process group; --max-runs caps concurrent runs without
losing any."""

import os
import signal
import time
import unittest

from harness import async_test
from runs_helpers import BASE, MINUTE, RunsTest, proc_dead


class ProcessTest(RunsTest):

    async def blocked_run(self, es, c, project_id):
        """Start a manual run of a block-mode deployment and wait until its
        process and its background child exist. Returns (run, pid, child)."""
        es.gate(project_id)
        run = await self.run_now(c, project_id)
        await self.started(c, run_id=run["id"])
        pid = await es.pid(run["id"])
        child = await es.pid(run["id"], "child")
        self.assertFalse(proc_dead(pid))
        self.assertFalse(proc_dead(child))
        # the run is its own process group, the child in it
        self.assertEqual(os.getpgid(pid), pid)
        self.assertEqual(os.getpgid(child), pid)
        self.assertNotEqual(os.getpgid(pid), os.getpgid(es.server.proc.pid))
        return run, pid, child

    @async_test(timeout=60)
    async def test_cancel_stops_the_process_group(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "cx", mode="block")
        run, pid, child = await self.blocked_run(es, c, "cx")
        self.assertEqual(self.assertOk(
            await c.call("rrext_deploy_cancel", projectId="cx")), {})
        done = await self.finished(c, run["id"], timeout=20)
        self.assertEqual(done["outcome"], "cancelled", done)
        self.assertEqual(done["signal"], signal.SIGTERM)
        self.assertIsNone(done["exit_code"])
        await self.wait_dead(pid)
        await self.wait_dead(child)
        self.assertEqual((await self.runs(c, "cx"))[0]["outcome"], "cancelled")
        r = await c.call("rrext_deploy_cancel", projectId="cx")
        self.assertErr(r, "conflict", "Deployment 'cx' is not running")
        # it can run again
        run2, _, _ = await self.blocked_run(es, c, "cx")
        await es.release("cx")
        self.assertEqual((await self.finished(c, run2["id"]))["outcome"],
                         "succeeded")

    @async_test(timeout=60)
    async def test_run_timeout_kills_the_process_group(self):
        es = self.exec_server(args=("--run-timeout", "1s"))
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "slowpoke", mode="block")
        run, pid, child = await self.blocked_run(es, c, "slowpoke")
        done = await self.finished(c, run["id"], timeout=20)
        self.assertEqual(done["outcome"], "timed_out", done)
        self.assertEqual(done["signal"], signal.SIGTERM)
        self.assertTrue(done["reason"], done)
        await self.wait_dead(pid)
        await self.wait_dead(child)
        st = await self.status(c, "slowpoke")
        self.assertEqual(st["last_run"]["outcome"], "timed_out")

    @async_test(timeout=60)
    async def test_timeout_escalates_to_kill_after_10s(self):
        es = self.exec_server(args=("--run-timeout", "0.5s"))
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "stubborn", mode="stubborn")
        t0 = time.monotonic()
        run, pid, child = await self.blocked_run(es, c, "stubborn")
        done = await self.finished(c, run["id"], timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(done["outcome"], "timed_out", done)
        self.assertEqual(done["signal"], signal.SIGKILL)
        self.assertGreaterEqual(took, 10.0)
        self.assertLess(took, 20.0)
        await self.wait_dead(pid)
        await self.wait_dead(child)

    @async_test(timeout=60)
    async def test_ticks_over_the_cap_wait_and_are_not_lost(self):
        es = self.exec_server(args=("--max-runs", "1"))
        c = await self.admin(es.server)
        await self.watch(c)
        names = ("t1", "t2", "t3")
        for n in names:
            await self.add(c, n, "* * * * *", mode="block")
            es.gate(n)
        self.assertEqual((await self.clock(c, set=BASE + MINUTE))["fired"], 3)
        rows = {n: (await self.runs(c, n))[0] for n in names}
        self.assertEqual(sorted(r["outcome"] for r in rows.values()),
                         ["queued", "queued", "running"]
                         if any(r["outcome"] == "running"
                                for r in rows.values())
                         else ["queued", "queued", "queued"])
        for _ in names:
            run = await c.wait_event(
                lambda b: b["action"] == "run_started"
                and b["run"]["id"] not in {
                    e["body"]["run"]["id"] for e in c.events
                    if e["body"]["action"] == "run_finished"}, 20)
            run = run["body"]["run"]
            self.assertEqual(run["scheduled_for"], BASE + MINUTE)
            live = [e for e in c.events if e["body"]["action"] == "run_started"]
            done = [e for e in c.events if e["body"]["action"] == "run_finished"]
            self.assertEqual(len(live) - len(done), 1)
            await es.pid(run["id"], "child")
            await es.release(run["projectId"])
            await self.finished(c, run["id"])
        for n in names:
            rs = await self.runs(c, n)
            self.assertEqual([(r["outcome"], r["scheduled_for"]) for r in rs],
                             [("succeeded", BASE + MINUTE)])
        self.assertEqual(len(es.started_run_ids()), 3)

    @async_test(timeout=60)
    async def test_cancel_a_queued_run(self):
        """Over --max-runs a run waits queued; cancelling it (or removing
        its deployment) means it never starts."""
        es = self.exec_server(args=("--max-runs", "1"))
        c = await self.admin(es.server)
        await self.watch(c)
        for n in ("q1", "q2", "q3"):
            await self.add(c, n, mode="block")
            es.gate(n)
        r1, _, _ = await self.blocked_run(es, c, "q1")
        r2 = await self.run_now(c, "q2")
        r3 = await self.run_now(c, "q3")
        self.assertEqual(r2["outcome"], "queued")
        self.assertEqual((await self.runs(c, "q2"))[0]["outcome"], "queued")
        self.assertOk(await c.call("rrext_deploy_cancel", projectId="q2"))
        done2 = await self.finished(c, r2["id"])
        self.assertEqual(done2["outcome"], "cancelled")
        self.assertIsNone(done2["started_at"])
        self.assertOk(await c.call("rrext_deploy_remove", projectId="q3"))
        await es.release("q1")
        await self.finished(c, r1["id"])
        # the freed slot goes to nobody: q2 was cancelled, q3 removed
        r4 = await self.run_now(c, "q2")
        await self.started(c, run_id=r4["id"])
        await es.pid(r4["id"], "child")
        self.assertEqual(es.started_run_ids(), [r1["id"], r4["id"]])
        self.assertNotIn(r3["id"], [e["body"]["run"]["id"] for e in c.events
                                    if e["body"].get("run")])
        await es.release("q2")
        await self.finished(c, r4["id"])

    @async_test(timeout=60)
    async def test_remove_stops_the_running_process(self):
        es = self.exec_server()
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, "rm", mode="block")
        run, pid, child = await self.blocked_run(es, c, "rm")
        self.assertEqual(self.assertOk(
            await c.call("rrext_deploy_remove", projectId="rm")), {})
        await c.wait_event(self.is_event("removed", "rm"), 10)
        await self.wait_dead(pid)
        await self.wait_dead(child)
        r = await c.call("rrext_deploy_runs", projectId="rm")
        self.assertErr(r, "not_found", "Deployment not found: rm")
        # a new deployment of the same name starts clean
        await self.add(c, "rm")
        self.assertEqual(await self.runs(c, "rm"), [])
        run2 = await self.run_now(c, "rm")
        self.assertEqual((await self.finished(c, run2["id"]))["outcome"],
                         "succeeded")
        self.assertEqual([r["id"] for r in await self.runs(c, "rm")],
                         [run2["id"]])

    @async_test(timeout=90)
    async def test_max_runs_caps_concurrency_and_loses_nothing(self):
        es = self.exec_server(args=("--max-runs", "2"))
        c = await self.admin(es.server)
        await self.watch(c)
        names = ["cap%d" % i for i in range(5)]
        for n in names:
            await self.add(c, n, mode="block")
            es.gate(n)
        runs = {}
        for n in names:
            runs[n] = await self.run_now(c, n)
        ids = {r["id"]: n for n, r in runs.items()}

        def running_now():
            """Runs started and not finished, from the event stream."""
            live, peak = set(), 0
            for ev in c.events:
                b = ev["body"]
                if b["action"] == "run_started":
                    live.add(b["run"]["id"])
                elif b["action"] == "run_finished":
                    live.discard(b["run"]["id"])
                peak = max(peak, len(live))
            return live, peak

        finished = set()
        while len(finished) < 5:
            # wait until min(2, unfinished) runs are going
            want = min(2, 5 - len(finished))
            while True:
                live, peak = running_now()
                self.assertLessEqual(peak, 2, "more than 2 runs at once")
                if len(live) >= want:
                    break
                await c.wait_event(None, 20, start=len(c.events))
            # the ledger agrees: 2 running, the rest queued
            states = {}
            for n in names:
                if runs[n]["id"] not in finished:
                    states[n] = (await self.runs(c, n))[0]["outcome"]
            self.assertEqual(sorted(states.values()),
                             sorted(["running"] * want +
                                    ["queued"] * (len(states) - want)),
                             states)
            # and so do the processes: exactly `want` alive
            for rid in live:
                await es.pid(rid, "child")
            alive = [i for i in es.started_run_ids()
                     if not proc_dead(es.pid_now(i))]
            self.assertEqual(sorted(alive), sorted(live))
            # release one of them
            rid = min(live)
            await es.release(ids[rid])
            done = await self.finished(c, rid)
            self.assertEqual(done["outcome"], "succeeded", done)
            finished.add(rid)
        live, peak = running_now()
        self.assertEqual(peak, 2)
        self.assertEqual(live, set())
        for n in names:
            rs = await self.runs(c, n)
            self.assertEqual([(r["id"], r["outcome"]) for r in rs],
                             [(runs[n]["id"], "succeeded")])
        self.assertEqual(sorted(es.started_run_ids()), sorted(ids))


if __name__ == "__main__":
    unittest.main()
