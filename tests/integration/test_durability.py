"""Durability (docs/operations.md §10): every acknowledged write survives `kill -9` at
once after its acknowledgement; keys and records survive restarts; a restart
on a non-empty database prints no new bootstrap key."""

import asyncio
import json
import unittest

from harness import (ServerTest, async_test, pipeline, raw_elements,
                     raw_member)

N = 200


class DurabilityTest(ServerTest):
    SHARED_SERVER = False

    async def pipelined(self, c, reqs):
        futs, sends = [], []
        for cmd, args in reqs:
            f, s = c.start(cmd, args)
            futs.append(f)
            sends.append(s)
        for s in sends:
            await s
        return futs

    async def records_by_id(self, c):
        r = await c.call("rrext_deploy_list")
        self.assertOk(r)
        raws = raw_elements(raw_member(r["_raw"], "body", "deployments"))
        out = {}
        for raw in raws:
            rec = json.loads(raw)
            out[rec["pipeline"]["project_id"]] = (rec, raw)
        return out

    @async_test(timeout=120)
    async def test_kill9_right_after_last_ack(self):
        srv = self.new_server()
        admin_key = srv.admin_key
        c = await self.admin(srv)
        schedules = ["manual", "0 0 1 1 *", "@yearly", "manual"]
        reqs = []
        for i in range(N):
            p = pipeline("d%03d" % i, n=i, text="v\u00e9\U0001F600 %d" % i,
                         big=12345678901234567890 + i)
            reqs.append(("rrext_deploy_add",
                         {"pipeline": p, "schedule": schedules[i % 4]}))
        futs = await self.pipelined(c, reqs)
        acks = {}
        for i, f in enumerate(futs):
            r = await asyncio.wait_for(f, 60)
            self.assertOk(r)
            acks["d%03d" % i] = (r["body"], raw_member(r["_raw"], "body"))
        # updates and removes, pipelined; SIGKILL at the very last ack
        upd = [("rrext_deploy_update",
                {"projectId": "d%03d" % i, "schedule": "@monthly"})
               for i in range(0, N, 7)]
        paused = [("rrext_deploy_update",
                   {"projectId": "d%03d" % i, "state": "paused"})
                  for i in range(1, N, 11)]
        newp = [("rrext_deploy_update",
                 {"projectId": "d%03d" % i,
                  "pipeline": {"project_id": "d%03d" % i, "v": 2}})
                for i in range(2, N, 13)]
        rm = [("rrext_deploy_remove", {"projectId": "d%03d" % i})
              for i in range(3, N, 17)]
        tail = [("rrext_deploy_add",
                 {"pipeline": pipeline("last%02d" % i)}) for i in range(20)]
        futs = await self.pipelined(c, upd + paused + newp + rm + tail)
        results = await asyncio.wait_for(asyncio.gather(*futs), 60)
        srv.kill9()  # immediately after the last acknowledgement
        for r in results:
            self.assertOk(r)
        for i, r in enumerate(results[-20:]):
            acks["last%02d" % i] = (r["body"], raw_member(r["_raw"], "body"))

        srv.start()
        self.assertNotIn("first start", srv.stderr())
        self.assertEqual(srv.admin_key, admin_key)
        c2 = await self.admin(srv)
        got = await self.records_by_id(c2)

        changed = set()
        for _, a in upd:
            changed.add(a["projectId"])
        for _, a in paused + newp:
            changed.add(a["projectId"])
        removed = {a["projectId"] for _, a in rm}
        want_ids = set(acks) - removed
        self.assertEqual(set(got), want_ids)
        for pid in want_ids:
            ack_rec, ack_raw = acks[pid]
            rec, raw = got[pid]
            if pid not in changed:
                self.assertEqual(raw, ack_raw, "record %s changed" % pid)
                continue
            self.assertEqual(rec["created_at"], ack_rec["created_at"])
            self.assertGreaterEqual(rec["updated_at"], ack_rec["updated_at"])
        for _, a in upd:
            if a["projectId"] not in removed:
                self.assertEqual(got[a["projectId"]][0]["schedule"],
                                 "@monthly")
        for _, a in paused:
            if a["projectId"] not in removed:
                self.assertEqual(got[a["projectId"]][0]["state"], "paused")
                self.assertIsNone(got[a["projectId"]][0]["next_run_at"])
        for _, a in newp:
            if a["projectId"] not in removed:
                self.assertEqual(
                    raw_member(got[a["projectId"]][1], "pipeline"),
                    '{"project_id":"%s","v":2}' % a["projectId"])
        # status agrees with list after the restart
        for pid in ("d000", "d199", "last19"):
            st = await c2.call("rrext_deploy_status", projectId=pid)
            self.assertEqual(raw_member(st["_raw"], "body"), got[pid][1])
        await c2.close()
        srv.stop()

    @async_test(timeout=90)
    async def test_keys_and_records_survive_clean_restart(self):
        srv = self.new_server()
        user_key = srv.create_key("alice", perms="task.monitor", label="ro")
        c = await self.admin(srv)
        rec = self.assertOk(await c.call("rrext_deploy_add",
                                         pipeline=pipeline("keep"),
                                         schedule="@daily"))
        await c.close()
        revoked = srv.create_key("bob")
        srv.revoke_key(revoked)
        srv.restart()
        self.assertNotIn("first start", srv.stderr())
        c = await self.admin(srv)
        st = self.assertOk(await c.call("rrext_deploy_status",
                                        projectId="keep"))
        self.assertEqual(st["pipeline"], rec["pipeline"])
        self.assertEqual(st["created_at"], rec["created_at"])
        self.assertEqual(st["schedule"], "@daily")
        u = await self.client(srv)
        r = await u.auth(user_key)
        self.assertEqual(r["body"]["userId"], "alice")
        self.assertErr(await u.call("rrext_deploy_add",
                                    pipeline=pipeline("x")),
                       "forbidden", "Permission 'task.control' denied")
        b = await self.client(srv)
        r = await b.auth(revoked, check=False)
        self.assertErr(r, "unauthorized", "API key revoked")
        await b.wait_closed(10)
        # SIGINT stops cleanly too
        for cl in (c, u):
            await cl.close()
        import signal
        srv.stop(sig=signal.SIGINT)

    @async_test(timeout=60)
    async def test_stop_with_open_connections(self):
        """SIGTERM with live sessions and in-flight requests: exit 0, no
        sanitizer report (checked by stop())."""
        srv = self.new_server()
        clients = [await self.admin(srv) for _ in range(5)]
        idle = [await self.client(srv) for _ in range(3)]
        futs = []
        for i, c in enumerate(clients):
            f, s = c.start("rrext_deploy_add",
                           {"pipeline": pipeline("s%d" % i,
                                                 pad="x" * 200000)})
            await s
            futs.append(f)
        await asyncio.wait_for(asyncio.gather(*futs), 30)
        srv.stop()
        for c in clients + idle:
            await c.wait_closed(10)


if __name__ == "__main__":
    unittest.main()
