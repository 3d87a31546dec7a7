"""Real-time smoke test (docs/runs.md §7: a due tick starts within a second): no test clock; a
`* * * * *` deployment fires at the next real minute boundary and its run
starts within 1 s of it. Slow (up to a minute of waiting): ctest label
"slow"."""

import sys
import time
import unittest

from harness import async_test
from runs_helpers import RunsTest


class RealTimeTest(RunsTest):

    @async_test(timeout=140)
    async def test_every_minute_fires_within_a_second(self):
        es = self.exec_server(test_clock=None)
        c = await self.admin(es.server)
        await self.watch(c)
        t_add = time.time()
        rec = await self.add(c, "rt", "* * * * *")
        boundary = (int(t_add) // 60 + 1) * 60
        self.assertIn(rec["next_run_at"], (boundary, boundary + 60))
        started = await self.started(c, project_id="rt", timeout=75)
        seen = time.time()
        lateness = started["started_at"] - started["scheduled_for"]
        sys.stderr.write("\nrealtime: scheduled_for %.0f started_at %.6f "
                         "lateness %.3f ms (event seen %.3f ms after the "
                         "minute)\n" % (started["scheduled_for"],
                                        started["started_at"],
                                        lateness * 1000,
                                        (seen - started["scheduled_for"])
                                        * 1000))
        self.assertEqual(started["scheduled_for"], rec["next_run_at"])
        self.assertEqual(started["scheduled_for"] % 60, 0)
        self.assertGreaterEqual(lateness, 0.0, "started before its minute")
        self.assertLess(lateness, 1.0)
        done = await self.finished(c, started["id"], timeout=20)
        self.assertEqual(done["outcome"], "succeeded", done)
        env = es.env(started["id"])
        self.assertEqual(env["RR_TRIGGER"], "schedule")
        self.assertEqual(env["RR_SCHEDULED_AT"],
                         time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                       time.gmtime(started["scheduled_for"])))
        st = await self.status(c, "rt")
        self.assertEqual(st["next_run_at"], started["scheduled_for"] + 60)


if __name__ == "__main__":
    unittest.main()
