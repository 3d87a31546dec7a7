"""Long work that must not stall the service thread (docs/runs.md §9, §10):
revoking a key that owns 10,000 deployments errors them all at once while
another user's requests stay fast; 10,000 every-minute deployments catch up
after the clock jumps 30 days, and after 30 days down, in time proportional
to the deployments, not to the ticks they missed.

Latencies are measured by a client that sends one request after another the
whole time, so a stall of the service thread shows up as one slow request;
the work is timed from the moment it was asked for to the moment the
database says it is done. The bounds are those of a release build, scaled
for a sanitizer build (harness.SLOW_BUILD); every figure is printed."""

import asyncio
import sqlite3
import time
import unittest

from harness import SLOW_BUILD, ServerTest, async_test, pipeline

N = 10000
BASE = 1767225600           # 2026-01-01T00:00:00Z
DAYS30 = 30 * 86400


def count(db, sql):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


class LongWorkTest(ServerTest):

    SHARED_SERVER = False

    async def add_many(self, c, n, prefix, schedule, batch=500):
        """n deployments, pipelined batch by batch (they share commits)."""
        for start in range(0, n, batch):
            futs = []
            for i in range(start, min(n, start + batch)):
                fut, send = c.start("rrext_deploy_add", {
                    "pipeline": pipeline("%s%05d" % (prefix, i)),
                    "schedule": schedule})
                await send
                futs.append(fut)
            for fut in futs:
                r = await asyncio.wait_for(fut, 60)
                self.assertTrue(r.get("success"), r)

    async def poll_status(self, c, project_id, lat, stop):
        """One status request after another until stop is set."""
        while not stop.is_set():
            t0 = time.monotonic()
            await c.ok("rrext_deploy_status", projectId=project_id)
            lat.append(time.monotonic() - t0)

    async def wait_db(self, db, sql, want, timeout):
        deadline = time.monotonic() + timeout
        while count(db, sql) != want:
            if time.monotonic() > deadline:
                raise AssertionError("never %d for %s (now %d)"
                                     % (want, sql, count(db, sql)))
            await asyncio.sleep(0.01)

    @async_test(timeout=300)
    async def test_revoking_a_key_that_owns_10000_deployments(self):
        srv = self.new_server()
        owner = await self.user_client(server=srv)
        await self.add_many(owner, N, "r", "manual")
        other = await self.user_client(server=srv)
        await other.ok("rrext_deploy_add", pipeline=pipeline("mine"))

        lat, stop = [], asyncio.Event()
        poller = asyncio.create_task(self.poll_status(other, "mine", lat, stop))
        while len(lat) < 50:  # the poller is going
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: srv.revoke_key(owner.key))
        revoked = time.monotonic()
        await self.wait_db(srv.db, "SELECT count(*) FROM deployments WHERE "
                           "state = 'errored'", N, timeout=30)
        took = time.monotonic() - revoked
        stop.set()
        await poller

        p99, worst = pct(lat, 0.99), max(lat)
        print("\n  %d deployments errored %.3f s after the revocation; other "
              "user's status: %d requests, p99 %.1f ms, max %.1f ms"
              % (N, took, len(lat), p99 * 1e3, worst * 1e3))
        self.assertLess(took, 1.0 * SLOW_BUILD)
        self.assertLess(p99, 0.050 * SLOW_BUILD)
        errors = count(srv.db, "SELECT count(DISTINCT error) FROM deployments "
                       "WHERE state = 'errored'")
        self.assertEqual(errors, 1)
        self.assertEqual(count(srv.db, "SELECT state FROM deployments WHERE "
                               "project_id = 'mine'"), "active")
        # one log line for the whole key, not one per deployment
        self.assertEqual(srv.stderr().count("deployment(s) errored"), 1)

    @async_test(timeout=400)
    async def test_catching_up_after_30_days(self):
        srv = self.new_server(extra_args=["--test-clock=%d" % (BASE + 10)])
        owner = await self.user_client(server=srv)
        await self.add_many(owner, N, "m", "* * * * *")
        other = await self.user_client(server=srv)
        await other.ok("rrext_deploy_add", pipeline=pipeline("mine"))
        loop = asyncio.get_running_loop()
        spare = await loop.run_in_executor(None, lambda: srv.create_key("spare"))

        # The clock jumps 30 days: every deployment has 43,200 missed ticks.
        # As after a real clock step, the daemon's timer works through them.
        lat, stop = [], asyncio.Event()
        poller = asyncio.create_task(self.poll_status(other, "mine", lat, stop))
        while len(lat) < 20:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        r = await owner.request("rrtest_clock",
                                {"set": BASE + DAYS30 + 30, "wait": False})
        self.assertTrue(r.get("success"), r)
        revoke = loop.run_in_executor(None, lambda: srv.revoke_key(spare))
        await self.wait_db(srv.db, "SELECT count(*) FROM runs WHERE outcome = "
                           "'missed'", N, timeout=120)
        # every deployment ran (and failed: no executor) once, for the latest
        await self.wait_db(srv.db, "SELECT count(*) FROM runs WHERE outcome = "
                           "'failed'", N, timeout=120)
        took = time.monotonic() - t0
        await revoke  # `keys revoke` succeeded during the catch-up
        stop.set()
        await poller
        worst = max(lat)
        print("\n  clock +30 days, %d deployments: caught up in %.2f s; the "
              "other user's %d requests meanwhile took at most %.0f ms"
              % (N, took, len(lat), worst * 1e3))
        self.assertLess(worst, 1.0 * SLOW_BUILD)
        self.assertEqual(count(srv.db, "SELECT sum(missed_count) FROM runs WHERE "
                               "outcome = 'missed'"), N * (DAYS30 // 60 - 1))

        # Stopped, and started again 30 days later.
        srv.stop()
        srv.extra_args = ["--test-clock=%d" % (BASE + 2 * DAYS30 + 30)]
        t0 = time.monotonic()
        await loop.run_in_executor(None, srv.start)
        took = time.monotonic() - t0
        print("  restart after 30 days down: listening after %.2f s" % took)
        self.assertLess(took, 2.0 * SLOW_BUILD)
        self.assertEqual(count(srv.db, "SELECT count(*) FROM runs WHERE "
                               "outcome = 'missed'"), 2 * N)


if __name__ == "__main__":
    unittest.main()
