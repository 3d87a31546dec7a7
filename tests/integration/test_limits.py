"""Per-user deployment limit (docs/protocol.md §10: at most 10,000 per user), driven
with pipelined adds the way a bulk-import script would."""

import asyncio
import time
import unittest

from harness import ServerTest, async_test

LIMIT = 10000
BATCH = 500


class DeploymentLimitTest(ServerTest):

    async def add_many(self, c, prefix, n):
        done = 0
        while done < n:
            k = min(BATCH, n - done)
            futs, sends = [], []
            for i in range(done, done + k):
                f, s = c.start("rrext_deploy_add",
                               {"pipeline": {"project_id": "%s%05d" % (prefix, i)}})
                futs.append(f)
                sends.append(s)
            for s in sends:
                await s
            rs = await asyncio.wait_for(asyncio.gather(*futs), 120)
            for r in rs:
                self.assertOk(r)
            done += k

    @async_test(timeout=110)
    async def test_limit_per_user(self):
        a = await self.user_client()
        b = await self.user_client()
        t0 = time.monotonic()
        await self.add_many(a, "p", LIMIT)
        elapsed = time.monotonic() - t0
        r = await a.call("rrext_deploy_add", pipeline={"project_id": "over"})
        self.assertErr(r, "too_large", prefix="Deployment limit reached")
        # a duplicate at the limit is still reported as a duplicate or limit,
        # never a success
        r = await a.call("rrext_deploy_add", pipeline={"project_id": "p00000"})
        self.assertIs(r["success"], False)
        self.assertIn(r["code"], ("conflict", "too_large"))
        # the limit is per user
        self.assertOk(await b.call("rrext_deploy_add",
                                   pipeline={"project_id": "over"}))
        # list returns all 10,000 (about 0.5 MB, one frame, one line)
        lst = self.assertOk(await a.call("rrext_deploy_list"))["deployments"]
        self.assertEqual(len(lst), LIMIT)
        # removing one makes room for exactly one
        self.assertOk(await a.call("rrext_deploy_remove", projectId="p00000"))
        self.assertOk(await a.call("rrext_deploy_add",
                                   pipeline={"project_id": "over"}))
        r = await a.call("rrext_deploy_add", pipeline={"project_id": "over2"})
        self.assertErr(r, "too_large", prefix="Deployment limit reached")
        await self.assertAlive(a)
        print("\n  10,000 adds took %.1f s" % elapsed)


if __name__ == "__main__":
    unittest.main()
