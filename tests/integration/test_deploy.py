"""The rrext_deploy_* commands over a real WebSocket (docs/protocol.md §5 and the
record of §6): every success path and every error path, permissions,
per-user isolation, the duplicate-add race, verbatim pipelines, SDK framing."""

import asyncio
import json
import math
import time
import unittest

from harness import (ServerTest, async_test, compact_json, pipeline, py_frame,
                     raw_member, ts_frame)

RECORD_KEYS = ["pipeline", "schedule", "state", "created_by", "created_at",
               "updated_at", "userId", "createdAt", "updatedAt", "next_run_at",
               "last_run", "error", "owner_key_id"]


class DeployTest(ServerTest):

    def check_record(self, rec, user, project_id, schedule="manual",
                     state="active"):
        self.assertEqual(list(rec.keys())[:6], RECORD_KEYS[:6],
                         "the record's field order, docs/protocol.md §6")
        self.assertEqual(set(rec.keys()), set(RECORD_KEYS))
        self.assertEqual(rec["pipeline"]["project_id"], project_id)
        self.assertEqual(rec["schedule"], schedule)
        self.assertEqual(rec["state"], state)
        self.assertEqual(rec["created_by"], user)
        self.assertEqual(rec["userId"], user)
        for k in ("created_at", "updated_at"):
            self.assertIsInstance(rec[k], float, "%s must be a float" % k)
            self.assertGreater(rec[k], 1.6e9)
            self.assertLess(abs(rec[k] - time.time()), 3600 * 24 * 365 * 20)
        self.assertGreaterEqual(rec["updated_at"], rec["created_at"])
        self.assertEqual(rec["createdAt"], rec["created_at"])
        self.assertEqual(rec["updatedAt"], rec["updated_at"])
        self.assertIsNone(rec["last_run"])
        self.assertIsNone(rec["error"])
        self.assertIsInstance(rec["owner_key_id"], str)
        self.assertTrue(rec["owner_key_id"])
        if schedule == "manual" or state != "active":
            self.assertIsNone(rec["next_run_at"])
        else:
            self.assertIsInstance(rec["next_run_at"], float)

    # ------------------------------------------------------------- add

    @async_test()
    async def test_add_status_list_remove_roundtrip(self):
        c = await self.user_client()
        p = pipeline("p1")
        r = await c.call("rrext_deploy_add", pipeline=p)
        rec = self.assertOk(r)
        self.check_record(rec, c.user, "p1")
        self.assertEqual(rec["pipeline"], p)
        self.assertEqual(rec["owner_key_id"], self.server.key_id(c.user))
        st = self.assertOk(await c.call("rrext_deploy_status", projectId="p1"))
        self.assertEqual(st, rec)
        lst = self.assertOk(await c.call("rrext_deploy_list"))
        self.assertEqual(lst, {"deployments": [rec]})
        r = await c.call("rrext_deploy_remove", projectId="p1")
        self.assertEqual(self.assertOk(r), {})
        self.assertErr(await c.call("rrext_deploy_status", projectId="p1"),
                       "not_found", "Deployment not found: p1")
        self.assertErr(await c.call("rrext_deploy_remove", projectId="p1"),
                       "not_found", "Deployment not found: p1")
        self.assertEqual(self.assertOk(await c.call("rrext_deploy_list")),
                         {"deployments": []})

    @async_test()
    async def test_add_with_schedules(self):
        c = await self.user_client()
        for i, s in enumerate(("*/15 * * * *", "0 * * * *", "@hourly",
                               "@daily", "manual", "CRON_TZ=Europe/Paris 0 9 * * 1-5",
                               "0 0 29 2 *", "30 4 1,15 * 5", "0 12 * JAN-MAR sun")):
            before = time.time()
            rec = self.assertOk(await c.call("rrext_deploy_add",
                                             pipeline=pipeline("s%d" % i),
                                             schedule=s))
            self.check_record(rec, c.user, "s%d" % i, schedule=s)
            if s == "*/15 * * * *":
                nr = rec["next_run_at"]
                self.assertEqual(nr % 900, 0)
                self.assertGreater(nr, before - 1)
                self.assertLessEqual(nr, before + 901)
            if s in ("0 * * * *", "@hourly"):
                self.assertEqual(rec["next_run_at"] % 3600, 0)
                self.assertLessEqual(rec["next_run_at"], before + 3601)

    @async_test()
    async def test_add_invalid_schedule(self):
        c = await self.user_client()
        for s in ("not-a-cron", "* * * *", "* * * * * *", "*/0 * * * *",
                  "60 * * * *", "0 0 30 2 *", "@reboot", "@every 5m",
                  "0 0 LW * *", "0 0 * * 1#6", "H(5-1) * * * *", "", " ",
                  "CRON_TZ=Not/AZone 0 9 * * *",
                  "5-1 * * * *", "0 0 * * FOO"):
            r = await c.call("rrext_deploy_add", pipeline=pipeline("bad"),
                             schedule=s)
            msg = self.assertErr(r, "bad_request",
                                 prefix="Invalid schedule '%s': " % s)
            self.assertGreater(len(msg), len("Invalid schedule '%s': " % s),
                               "a specific reason is given")
        self.assertErr(await c.call("rrext_deploy_status", projectId="bad"),
                       "not_found")

    @async_test()
    async def test_add_schedule_wrong_types(self):
        c = await self.user_client()
        for s in (5, None, ["* * * * *"], {"cron": "x"}, True):
            r = await c.call("rrext_deploy_add", pipeline=pipeline("st"),
                             schedule=s)
            self.assertErr(r, "bad_request", "schedule must be a string")
        await self.assertAlive(c)

    @async_test()
    async def test_add_pipeline_errors(self):
        c = await self.user_client()
        cases = [
            ({}, "pipeline is required", "bad_request"),
            ({"pipeline": None}, "pipeline is required", "bad_request"),
            ({"pipeline": {}}, "pipeline is required", "bad_request"),
            ({"pipeline": ""}, "pipeline is required", "bad_request"),
            ({"pipeline": []}, "pipeline is required", "bad_request"),
            ({"pipeline": 0}, "pipeline is required", "bad_request"),
            ({"pipeline": False}, "pipeline is required", "bad_request"),
            ({"pipeline": "p1"}, "pipeline must be an object", "bad_request"),
            ({"pipeline": ["p1"]}, "pipeline must be an object", "bad_request"),
            ({"pipeline": 7}, "pipeline must be an object", "bad_request"),
            ({"pipeline": True}, "pipeline must be an object", "bad_request"),
            ({"pipeline": {"components": []}},
             "pipeline.project_id is required", "bad_request"),
            ({"pipeline": {"project_id": ""}},
             "pipeline.project_id is required", "bad_request"),
            ({"pipeline": {"project_id": None}},
             "pipeline.project_id is required", "bad_request"),
            ({"pipeline": {"project_id": 42}},
             "pipeline.project_id must be a string", "bad_request"),
            ({"pipeline": {"project_id": ["a"]}},
             "pipeline.project_id must be a string", "bad_request"),
            ({"pipeline": {"project_id": "x" * 257}},
             "pipeline.project_id is longer than 256 bytes", "too_large"),
            # 129 two-byte characters = 258 bytes
            ({"pipeline": {"project_id": "\u00e9" * 129}},
             "pipeline.project_id is longer than 256 bytes", "too_large"),
        ]
        for args, msg, code in cases:
            for style in ("python", "ts"):
                r = await c.request("rrext_deploy_add", args, style=style)
                self.assertErr(r, code, msg)
        self.assertEqual(self.assertOk(await c.call("rrext_deploy_list")),
                         {"deployments": []})
        await self.assertAlive(c)

    @async_test()
    async def test_project_id_limits_and_control_chars(self):
        c = await self.user_client()
        ok_ids = ["x" * 256, "\u00e9" * 128, "a/b", "..", "a b", "\U0001F600",
                  "p-1_2.3"]
        for pid in ok_ids:
            rec = self.assertOk(await c.call("rrext_deploy_add",
                                             pipeline={"project_id": pid}))
            self.assertEqual(rec["pipeline"]["project_id"], pid)
            st = self.assertOk(await c.call("rrext_deploy_status",
                                            projectId=pid))
            self.assertEqual(st["pipeline"]["project_id"], pid)
        for pid in ("a\x01b", "a\nb", "\tx", "x\x7f", "a\x00b", "\x1f"):
            r = await c.call("rrext_deploy_add", pipeline={"project_id": pid})
            msg = self.assertErr(r, "bad_request")
            self.assertIn("control", msg)
            self.assertIn("project_id", msg)
        lst = self.assertOk(await c.call("rrext_deploy_list"))["deployments"]
        self.assertEqual(len(lst), len(ok_ids))

    @async_test()
    async def test_duplicate_add(self):
        c = await self.user_client()
        rec = self.assertOk(await c.call("rrext_deploy_add",
                                         pipeline=pipeline("dup")))
        r = await c.call("rrext_deploy_add",
                         pipeline=pipeline("dup", description="other"),
                         schedule="@daily")
        self.assertErr(r, "conflict", "Deployment already exists: dup")
        st = self.assertOk(await c.call("rrext_deploy_status", projectId="dup"))
        self.assertEqual(st, rec, "a refused duplicate changes nothing")

    @async_test(timeout=90)
    async def test_racing_adds_exactly_one_wins(self):
        a = await self.user_client()
        b = await self.client(key=a.key)  # same user, second connection
        rounds = 60
        for i in range(rounds):
            pid = "race%d" % i
            fa, sa = a.start("rrext_deploy_add", {"pipeline": pipeline(pid)})
            fb, sb = b.start("rrext_deploy_add",
                             {"pipeline": pipeline(pid, description="b")})
            await asyncio.gather(sa, sb)
            ra, rb = await asyncio.wait_for(asyncio.gather(fa, fb), 30)
            oks = [r for r in (ra, rb) if r["success"]]
            errs = [r for r in (ra, rb) if not r["success"]]
            self.assertEqual(len(oks), 1, (ra, rb))
            self.assertErr(errs[0], "conflict",
                           "Deployment already exists: %s" % pid)
            st = self.assertOk(await a.call("rrext_deploy_status",
                                            projectId=pid))
            self.assertEqual(st, oks[0]["body"])
        lst = self.assertOk(await a.call("rrext_deploy_list"))["deployments"]
        self.assertEqual(len(lst), rounds)

    @async_test(timeout=90)
    async def test_racing_adds_many_connections(self):
        first = await self.user_client()
        conns = [first] + [await self.client(key=first.key) for _ in range(5)]
        for i in range(30):
            pid = "mrace%d" % i
            pending = [c.start("rrext_deploy_add",
                               {"pipeline": pipeline(pid, who=n)})
                       for n, c in enumerate(conns)]
            await asyncio.gather(*(s for _, s in pending))
            rs = await asyncio.wait_for(
                asyncio.gather(*(f for f, _ in pending)), 30)
            oks = [r for r in rs if r["success"]]
            self.assertEqual(len(oks), 1, rs)
            for r in rs:
                if not r["success"]:
                    self.assertErr(r, "conflict",
                                   "Deployment already exists: %s" % pid)
            st = self.assertOk(await first.call("rrext_deploy_status",
                                                projectId=pid))
            self.assertEqual(st["pipeline"], oks[0]["body"]["pipeline"])

    # ------------------------------------------------------------- list

    @async_test()
    async def test_list_sorted_and_sdk_framings(self):
        c = await self.user_client()
        ids = ["b", "a", "c10", "c2", "A", "_z", "\u00e9", "0"]
        for pid in ids:
            self.assertOk(await c.call("rrext_deploy_add",
                                       pipeline=pipeline(pid)))
        want = sorted(ids, key=lambda s: s.encode("utf-8"))
        # Python SDK: arguments {}
        r = await c.request("rrext_deploy_list", {}, style="python")
        got = [d["pipeline"]["project_id"] for d in r["body"]["deployments"]]
        self.assertEqual(got, want)
        # TS SDK: no arguments member at all
        r2 = await c.request("rrext_deploy_list", style="ts")
        self.assertNotIn("arguments", c.sent[-1])
        self.assertEqual(r2["body"], r["body"])
        # arguments: null
        seq = c.next_seq()
        r3 = await c.send_expect('{"type":"request","seq":%d,"command":'
                                 '"rrext_deploy_list","arguments":null}' % seq,
                                 seq)
        self.assertEqual(r3["body"], r["body"])
        # extra unknown arguments are ignored
        r4 = await c.call("rrext_deploy_list", teamId="x", token="y")
        self.assertEqual(r4["body"], r["body"])

    # ------------------------------------------------------------- status/remove

    @async_test()
    async def test_project_id_argument_errors(self):
        c = await self.user_client()
        for cmd in ("rrext_deploy_status", "rrext_deploy_remove",
                    "rrext_deploy_update"):
            for args, msg in (({}, "projectId is required"),
                              ({"projectId": ""}, "projectId is required"),
                              ({"projectId": None}, "projectId is required"),
                              ({"projectId": 0}, "projectId is required"),
                              ({"projectId": 12}, "projectId must be a string"),
                              ({"projectId": ["p"]},
                               "projectId must be a string"),
                              ({"projectId": {"a": 1}},
                               "projectId must be a string"),
                              ({"projectId": "nope"},
                               "Deployment not found: nope")):
                r = await c.request(cmd, args)
                code = "not_found" if "not found" in msg else "bad_request"
                self.assertErr(r, code, msg)
        await self.assertAlive(c)

    # ------------------------------------------------------------- update

    @async_test()
    async def test_update_schedule_state_pipeline(self):
        c = await self.user_client()
        rec = self.assertOk(await c.call("rrext_deploy_add",
                                         pipeline=pipeline("u1")))
        # schedule
        r = await c.call("rrext_deploy_update", projectId="u1",
                         schedule="*/15 * * * *")
        self.assertEqual(self.assertOk(r), {})
        st = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.check_record(st, c.user, "u1", schedule="*/15 * * * *")
        self.assertEqual(st["created_at"], rec["created_at"])
        self.assertGreaterEqual(st["updated_at"], rec["updated_at"])
        self.assertEqual(st["next_run_at"] % 900, 0)
        # pause / resume
        self.assertEqual(self.assertOk(await c.call(
            "rrext_deploy_update", projectId="u1", state="paused")), {})
        st2 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.check_record(st2, c.user, "u1", schedule="*/15 * * * *",
                          state="paused")
        self.assertIsNone(st2["next_run_at"])
        self.assertOk(await c.call("rrext_deploy_update", projectId="u1",
                                   state="active"))
        st3 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.assertEqual(st3["state"], "active")
        self.assertIsInstance(st3["next_run_at"], float)
        # pipeline replaced; project_id forced to projectId
        newp = {"components": [], "project_id": "other", "description": "v2"}
        self.assertOk(await c.call("rrext_deploy_update", projectId="u1",
                                   pipeline=newp))
        st4 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.assertEqual(st4["pipeline"], {"components": [], "project_id": "u1",
                                           "description": "v2"})
        self.assertEqual(list(st4["pipeline"]), ["components", "project_id",
                                                 "description"])
        self.assertErr(await c.call("rrext_deploy_status", projectId="other"),
                       "not_found")
        # pipeline without project_id: it is added
        self.assertOk(await c.call("rrext_deploy_update", projectId="u1",
                                   pipeline={"v": 3}))
        st5 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.assertEqual(st5["pipeline"], {"v": 3, "project_id": "u1"})
        # empty object pipeline is accepted on update
        self.assertOk(await c.call("rrext_deploy_update", projectId="u1",
                                   pipeline={}))
        st6 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.assertEqual(st6["pipeline"], {"project_id": "u1"})
        # nothing but projectId: only updated_at moves
        self.assertOk(await c.call("rrext_deploy_update", projectId="u1"))
        st7 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.assertGreaterEqual(st7["updated_at"], st6["updated_at"])
        for k in ("pipeline", "schedule", "state", "created_at", "created_by",
                  "owner_key_id"):
            self.assertEqual(st7[k], st6[k])
        # back to manual
        self.assertOk(await c.call("rrext_deploy_update", projectId="u1",
                                   schedule="manual"))
        st8 = self.assertOk(await c.call("rrext_deploy_status", projectId="u1"))
        self.assertIsNone(st8["next_run_at"])

    @async_test()
    async def test_update_errors_write_nothing(self):
        c = await self.user_client()
        self.assertOk(await c.call("rrext_deploy_add", pipeline=pipeline("u2"),
                                   schedule="@daily"))
        before = self.assertOk(await c.call("rrext_deploy_status",
                                            projectId="u2"))
        bad = [
            ({"pipeline": "x"}, "bad_request", "pipeline must be an object"),
            ({"pipeline": [1]}, "bad_request", "pipeline must be an object"),
            ({"pipeline": None}, "bad_request", "pipeline must be an object"),
            ({"pipeline": 3}, "bad_request", "pipeline must be an object"),
            ({"schedule": 3}, "bad_request", "schedule must be a string"),
            ({"schedule": None}, "bad_request", "schedule must be a string"),
            ({"schedule": ["@daily"]}, "bad_request",
             "schedule must be a string"),
            ({"state": "errored"}, "bad_request",
             "state must be 'active' or 'paused'"),
            ({"state": "bogus"}, "bad_request",
             "state must be 'active' or 'paused'"),
            ({"state": 1}, "bad_request", "state must be 'active' or 'paused'"),
            ({"state": None}, "bad_request",
             "state must be 'active' or 'paused'"),
            ({"state": "PAUSED"}, "bad_request",
             "state must be 'active' or 'paused'"),
            # a valid part with an invalid part: nothing is written
            ({"pipeline": {"project_id": "u2", "x": 1},
              "schedule": "not-a-cron"}, "bad_request", None),
            ({"pipeline": {"project_id": "u2", "x": 1}, "state": "nope"},
             "bad_request", "state must be 'active' or 'paused'"),
            ({"schedule": "@hourly", "state": "nope"}, "bad_request",
             "state must be 'active' or 'paused'"),
        ]
        for extra, code, msg in bad:
            args = {"projectId": "u2"}
            args.update(extra)
            r = await c.request("rrext_deploy_update", args)
            if msg is None:
                self.assertErr(r, code, prefix="Invalid schedule 'not-a-cron': ")
            else:
                self.assertErr(r, code, msg)
            after = self.assertOk(await c.call("rrext_deploy_status",
                                               projectId="u2"))
            self.assertEqual(after, before, "failed update %r wrote" % extra)

    # ------------------------------------------------------------- perms

    @async_test()
    async def test_monitor_only_key(self):
        owner = await self.user_client()
        self.assertOk(await owner.call("rrext_deploy_add",
                                       pipeline=pipeline("m1")))
        mon = await self.user_client(perms="task.monitor", user=owner.user)
        for cmd, args in (("rrext_deploy_add", {"pipeline": pipeline("m2")}),
                          ("rrext_deploy_update", {"projectId": "m1",
                                                   "state": "paused"}),
                          ("rrext_deploy_remove", {"projectId": "m1"}),
                          ("rrext_deploy_remove", {"projectId": "missing"}),
                          ("rrext_deploy_add", {})):
            r = await mon.request(cmd, args)
            self.assertErr(r, "forbidden", "Permission 'task.control' denied")
        await self.assertAlive(mon)
        lst = self.assertOk(await mon.call("rrext_deploy_list"))["deployments"]
        self.assertEqual([d["pipeline"]["project_id"] for d in lst], ["m1"])
        st = self.assertOk(await mon.call("rrext_deploy_status", projectId="m1"))
        self.assertEqual(st["state"], "active")
        self.assertOk(await mon.call("rrext_deploy_preview",
                                     schedule="@daily"))

    @async_test()
    async def test_control_only_key(self):
        c = await self.user_client(perms="task.control")
        self.assertOk(await c.call("rrext_deploy_add", pipeline=pipeline("c1")))
        self.assertOk(await c.call("rrext_deploy_update", projectId="c1",
                                   schedule="@daily"))
        for cmd, args in (("rrext_deploy_list", {}),
                          ("rrext_deploy_status", {"projectId": "c1"}),
                          ("rrext_deploy_preview", {"schedule": "@daily"})):
            r = await c.request(cmd, args)
            self.assertErr(r, "forbidden", "Permission 'task.monitor' denied")
        self.assertOk(await c.call("rrext_deploy_remove", projectId="c1"))

    # ------------------------------------------------------------- isolation

    @async_test()
    async def test_users_isolated(self):
        a = await self.user_client()
        b = await self.user_client()
        rec_a = self.assertOk(await a.call("rrext_deploy_add",
                                           pipeline=pipeline("shared")))
        self.assertOk(await a.call("rrext_deploy_add",
                                   pipeline=pipeline("a_only")))
        for cmd, args in (("rrext_deploy_status", {"projectId": "a_only"}),
                          ("rrext_deploy_update", {"projectId": "a_only",
                                                   "state": "paused"}),
                          ("rrext_deploy_update", {"projectId": "a_only",
                                                   "pipeline": {"x": 1}}),
                          ("rrext_deploy_remove", {"projectId": "a_only"})):
            r = await b.request(cmd, args)
            self.assertErr(r, "not_found", "Deployment not found: a_only")
        self.assertEqual(self.assertOk(await b.call("rrext_deploy_list")),
                         {"deployments": []})
        # b may use the same project id in its own namespace
        rec_b = self.assertOk(await b.call("rrext_deploy_add",
                                           pipeline=pipeline("shared"),
                                           schedule="@hourly"))
        self.assertEqual(rec_b["created_by"], b.user)
        self.assertOk(await b.call("rrext_deploy_remove", projectId="shared"))
        st = self.assertOk(await a.call("rrext_deploy_status",
                                        projectId="shared"))
        self.assertEqual(st, rec_a)
        lst = self.assertOk(await a.call("rrext_deploy_list"))["deployments"]
        self.assertEqual(sorted(d["pipeline"]["project_id"] for d in lst),
                         ["a_only", "shared"])

    @async_test()
    async def test_two_keys_same_user_share_deployments(self):
        a = await self.user_client()
        a2 = await self.user_client(user=a.user)
        rec = self.assertOk(await a.call("rrext_deploy_add",
                                         pipeline=pipeline("k1")))
        st = self.assertOk(await a2.call("rrext_deploy_status", projectId="k1"))
        self.assertEqual(st, rec)
        r = await a2.call("rrext_deploy_add", pipeline=pipeline("k1"))
        self.assertErr(r, "conflict", "Deployment already exists: k1")
        rec2 = self.assertOk(await a2.call("rrext_deploy_add",
                                           pipeline=pipeline("k2")))
        ids = {k["id"] for k in self.server.list_keys()
               if k["user"] == a.user}
        self.assertEqual({rec["owner_key_id"], rec2["owner_key_id"]}, ids,
                         "owner_key_id is the id of the key that added it")

    # ------------------------------------------------------------- fidelity

    RAW_PIPELINE = (
        '{ "zeta" : 1, "project_id" : "fid\\u00e9\\ud83d\\ude00",'
        ' "alpha":{"nested":{"deeper":[1,2,{"x":[[],{}]}]}},'
        ' "big": 12345678901234567890, "huge": 1e400, "negzero": -0.0,'
        ' "trail": 0.1000, "exp": 1E+2, "neg": -1.5e-7, "int": -0,'
        ' "esc": "q\\"b\\\\s\\/n\\nt\\tr\\rf\\fb\\bu\\u0001\\u001f\\u007f",'
        ' "nul": "a\\u0000b", "raw": "\u00e9\U0001F600\u4e2d",'
        ' "lit": [true, false, null], "empty": "", "dupe": 1, "dupe": 2,'
        '\n\t"ws" :\r\n [ 1 , 2 ] }')

    async def add_raw_pipeline(self, c, raw, style_ws=" "):
        seq = c.next_seq()
        text = ('{"type": "request", "seq": %d, "command": "rrext_deploy_add",'
                ' "arguments": {"pipeline": %s, "schedule": "manual"}}'
                % (seq, raw))
        return await c.send_expect(text, seq)

    @async_test()
    async def test_pipeline_verbatim(self):
        c = await self.user_client()
        raw = self.RAW_PIPELINE
        r = await self.add_raw_pipeline(c, raw)
        self.assertOk(r)
        want = compact_json(raw)
        self.assertEqual(raw_member(r["_raw"], "body", "pipeline"), want)
        pid = "fid\u00e9\U0001F600"
        self.assertEqual(r["body"]["pipeline"]["project_id"], pid)
        st = await c.call("rrext_deploy_status", projectId=pid)
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"), want)
        lst = await c.call("rrext_deploy_list")
        self.assertIn('"pipeline":' + want, lst["_raw"])
        # the TS spelling of the same id (raw UTF-8) finds it too
        st2 = await c.request("rrext_deploy_status", {"projectId": pid},
                              style="ts")
        self.assertEqual(raw_member(st2["_raw"], "body", "pipeline"), want)

    @async_test()
    async def test_pipeline_key_order_and_python_escapes(self):
        c = await self.user_client()
        p = {"z": 1, "project_id": "order", "m": {"b": 1, "a": 2},
             "a": ["\U0001F680", "\u00fc", "\u2028", "\\", "\""],
             "f": 0.1, "n": None}
        for style in ("python", "ts"):
            if style == "ts":
                p["project_id"] = "order_ts"
            r = await c.request("rrext_deploy_add", {"pipeline": p},
                                style=style)
            self.assertOk(r)
            sent = (py_frame if style == "python" else ts_frame)(p)
            got = raw_member(r["_raw"], "body", "pipeline")
            self.assertEqual(got, compact_json(sent))
            self.assertEqual(list(json.loads(got)), ["z", "project_id", "m",
                                                     "a", "f", "n"])
            if style == "python":
                self.assertIn("\\ud83d\\ude80", got)
            else:
                self.assertIn("\U0001F680", got)

    @async_test()
    async def test_pipeline_lone_surrogates_verbatim(self):
        # A string cut inside an emoji: Python's json.dumps (and
        # JSON.stringify) write the lone half as "\ud800". RocketRide stores
        # such pipelines; so does rrdeploy, and gives them back as sent.
        c = await self.user_client()
        cut = "\U0001F600".encode("utf-16-le")[:2].decode("utf-16-le",
                                                           "surrogatepass")
        p = {"project_id": "lone", "name": "smile " + cut,
             "parts": ["\ud800", "x\udc00y", "\ud83d\u0041", "\udfff\ud800"],
             "ok": "\U0001F600"}
        r = await c.call("rrext_deploy_add", pipeline=p, schedule="manual")
        self.assertOk(r)
        sent = compact_json(py_frame(p))
        self.assertIn("\\ud800", sent)
        got = raw_member(r["_raw"], "body", "pipeline")
        self.assertEqual(got, sent)
        self.assertEqual(json.loads(got), p)
        st = await c.call("rrext_deploy_status", projectId="lone")
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"), sent)
        self.assertEqual(st["body"]["pipeline"], p)
        lst = await c.call("rrext_deploy_list")
        self.assertIn('"pipeline":' + sent, lst["_raw"])
        # an update with one keeps it too
        p["parts"].append("\udbff")
        self.assertOk(await c.call("rrext_deploy_update", projectId="lone",
                                   pipeline=p))
        st = await c.call("rrext_deploy_status", projectId="lone")
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"),
                         compact_json(py_frame(p)))
        self.assertEqual(st["body"]["pipeline"], p)

    @async_test()
    async def test_escaped_and_duplicate_project_id_keys(self):
        c = await self.user_client()
        # the key spelled with an escape is still project_id
        raw = '{"project\\u005fid": "esckey", "a": 1}'
        r = await self.add_raw_pipeline(c, raw)
        self.assertOk(r)
        self.assertEqual(raw_member(r["_raw"], "body", "pipeline"),
                         compact_json(raw))
        self.assertOk(await c.call("rrext_deploy_status", projectId="esckey"))
        # duplicate project_id keys: the last one wins, as in every parser
        raw = '{"project_id": "first", "project_id": "second"}'
        r = await self.add_raw_pipeline(c, raw)
        self.assertOk(r)
        self.assertEqual(r["body"]["pipeline"]["project_id"], "second")
        self.assertOk(await c.call("rrext_deploy_status", projectId="second"))
        self.assertErr(await c.call("rrext_deploy_status", projectId="first"),
                       "not_found")
        # update forces the id; what the record says must match where it is
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type":"request","seq":%d,"command":"rrext_deploy_update",'
            '"arguments":{"projectId":"second","pipeline":'
            '{"project_id":"x","project\\u005fid":"y","k":1}}}' % seq, seq)
        self.assertOk(r)
        st = self.assertOk(await c.call("rrext_deploy_status",
                                        projectId="second"))
        self.assertEqual(st["pipeline"]["project_id"], "second")
        self.assertEqual(st["pipeline"]["k"], 1)

    @async_test()
    async def test_number_forms_verbatim(self):
        c = await self.user_client()
        nums = ["0", "-0", "-0.0", "0.1000", "1E+2", "1e-400", "-1e400",
                "1e400", "2.5E-3", "123456789012345678901234567890",
                "-123456789012345678901234567890", "1" + "0" * 400,
                "9007199254740993", "1.7976931348623157e308", "5e-324",
                "0.30000000000000004"]
        raw = '{"project_id": "nums", "n": [%s]}' % ", ".join(nums)
        r = await self.add_raw_pipeline(c, raw)
        self.assertOk(r)
        self.assertEqual(raw_member(r["_raw"], "body", "pipeline"),
                         compact_json(raw))
        st = await c.call("rrext_deploy_status", projectId="nums")
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"),
                         compact_json(raw))
        # big numbers elsewhere in the request do not disturb it
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type":"request","seq":%d,"command":"rrext_deploy_status",'
            '"arguments":{"projectId":"nums","x":1e999,"y":-1e999}}' % seq, seq)
        self.assertOk(r)

    @async_test(timeout=90)
    async def test_large_responses_pipelined(self):
        """30 pipelined status replies of a 1 MiB record (30 MiB queued):
        server-side flow control must not lose or reorder anything."""
        c = await self.user_client()
        p = {"project_id": "fat", "pad": "y" * (1024 * 1024 - 40)}
        self.assertOk(await c.call("rrext_deploy_add", pipeline=p))
        futs, sends = [], []
        for i in range(30):
            cmd = "rrext_deploy_status" if i % 3 else "rrext_ping"
            f, s = c.start(cmd, {"projectId": "fat"})
            futs.append(f)
            sends.append(s)
        for s in sends:
            await s
        rs = await asyncio.wait_for(asyncio.gather(*futs), 80)
        for i, r in enumerate(rs):
            body = self.assertOk(r)
            if i % 3:
                self.assertEqual(body["pipeline"], p)
            else:
                self.assertEqual(body, {"pong": True})
        seqs = [json.loads(f)["request_seq"] for f in c.frames[-30:]]
        self.assertEqual(seqs, sorted(seqs))

    @async_test()
    async def test_update_pipeline_verbatim(self):
        c = await self.user_client()
        self.assertOk(await c.call("rrext_deploy_add",
                                   pipeline=pipeline("upd")))
        raw = ('{"b": 12345678901234567890, "project_id": "upd",'
               ' "c": [1e400, -0.0, 0.1000], "s": "\\ud83d\\ude00"}')
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type": "request", "seq": %d, "command": "rrext_deploy_update",'
            ' "arguments": {"projectId": "upd", "pipeline": %s}}' % (seq, raw),
            seq)
        self.assertEqual(self.assertOk(r), {})
        st = await c.call("rrext_deploy_status", projectId="upd")
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"),
                         compact_json(raw))
        # a different project_id is replaced in place, the rest kept verbatim
        raw2 = raw.replace('"project_id": "upd"', '"project_id": "zzz"')
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type": "request", "seq": %d, "command": "rrext_deploy_update",'
            ' "arguments": {"projectId": "upd", "pipeline": %s}}' % (seq, raw2),
            seq)
        self.assertOk(r)
        st = await c.call("rrext_deploy_status", projectId="upd")
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"),
                         compact_json(raw))

    @async_test()
    async def test_pipeline_size_limit(self):
        c = await self.user_client()
        limit = 1024 * 1024
        base = '{"project_id":"big%s","pad":"%s"}'
        fixed = len(base % ("A", ""))
        exact = base % ("A", "x" * (limit - fixed))
        self.assertEqual(len(exact), limit)
        r = await self.add_raw_pipeline(c, exact)
        self.assertOk(r)
        self.assertEqual(raw_member(r["_raw"], "body", "pipeline"), exact)
        over = base % ("B", "x" * (limit - fixed + 1))
        r = await self.add_raw_pipeline(c, over)
        self.assertErr(r, "too_large")
        self.assertIn("pipeline", r["message"])
        # the limit applies to the compacted text: white space does not count
        spaced = exact.replace('"pad":', '"pad" :  ' + " " * 100).replace(
            "bigA", "bigC")
        r = await self.add_raw_pipeline(c, spaced)
        self.assertOk(r)
        # update is bounded too
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type":"request","seq":%d,"command":"rrext_deploy_update",'
            '"arguments":{"projectId":"bigA","pipeline":%s}}'
            % (seq, over.replace("bigB", "bigA")), seq)
        self.assertErr(r, "too_large")
        st = await c.call("rrext_deploy_status", projectId="bigA")
        self.assertEqual(raw_member(st["_raw"], "body", "pipeline"), exact)
        self.assertErr(await c.call("rrext_deploy_status", projectId="bigB"),
                       "not_found")
        await self.assertAlive(c)

    # ------------------------------------------------------------- framing

    @async_test()
    async def test_exact_sdk_requests(self):
        """Requests byte for byte as the SDKs build them."""
        c = await self.client()
        key = self.server.admin_key
        # Python SDK
        r = await c.send_expect(json.dumps(
            {"type": "request", "seq": 1, "command": "auth",
             "arguments": {"auth": key, "clientName": "Python SDK",
                           "clientVersion": "1.1.0"}}), 1)
        self.assertOk(r)
        self.assertEqual(r["request_seq"], 1)
        pid = "sdk_\u00e9\U0001F600"
        r = await c.send_expect(json.dumps(
            {"type": "request", "seq": 2, "command": "rrext_deploy_add",
             "arguments": {"pipeline": pipeline(pid)}}), 2)
        self.assertOk(r)
        self.assertIn("\\ud83d\\ude00", c.sent[-1])
        r = await c.send_expect(json.dumps(
            {"type": "request", "seq": 3, "command": "rrext_deploy_list",
             "arguments": {}}), 3)
        self.assertIn(pid, [d["pipeline"]["project_id"]
                            for d in r["body"]["deployments"]])
        # TypeScript SDK, new connection
        t = await self.client()
        r = await t.send_expect(
            '{"type":"request","seq":1,"command":"auth","arguments":{"auth":"%s",'
            '"clientName":"TypeScript SDK","clientVersion":"1.1.0"}}' % key, 1)
        self.assertOk(r)
        r = await t.send_expect(
            '{"type":"request","seq":2,"command":"rrext_deploy_list"}', 2)
        self.assertIn(pid, [d["pipeline"]["project_id"]
                            for d in r["body"]["deployments"]])
        r = await t.send_expect(
            ('{"type":"request","seq":3,"command":"rrext_deploy_status",'
             '"arguments":{"projectId":"%s"}}' % pid).encode("utf-8")
            .decode("utf-8"), 3)
        self.assertOk(r)
        r = await t.send_expect(
            '{"type":"request","seq":4,"command":"rrext_deploy_remove",'
            '"arguments":{"projectId":"%s"}}' % pid, 4)
        self.assertEqual(r["body"], {})
        self.assertEqual(r["command"], "rrext_deploy_remove")

    @async_test()
    async def test_pipelined_requests_correlate(self):
        c = await self.user_client()
        futs, sends = [], []
        for i in range(100):
            f, s = c.start("rrext_deploy_add",
                           {"pipeline": pipeline("pp%03d" % i)})
            futs.append(f)
            sends.append(s)
        for s in sends:
            await s
        rs = await asyncio.wait_for(asyncio.gather(*futs), 60)
        for i, r in enumerate(rs):
            self.assertOk(r)
            self.assertEqual(r["body"]["pipeline"]["project_id"], "pp%03d" % i)
        lst = self.assertOk(await c.call("rrext_deploy_list"))["deployments"]
        self.assertEqual([d["pipeline"]["project_id"] for d in lst],
                         ["pp%03d" % i for i in range(100)])

    @async_test()
    async def test_token_and_extra_arguments_tolerated(self):
        c = await self.user_client()
        r = await c.request("rrext_deploy_add",
                            {"pipeline": pipeline("tok"), "token": "tk_x",
                             "teamId": "t"})
        self.assertOk(r)
        seq = c.next_seq()
        r = await c.send_expect(json.dumps(
            {"type": "request", "seq": seq, "command": "rrext_deploy_status",
             "token": "tk_root", "arguments": {"projectId": "tok"}}), seq)
        self.assertOk(r)


if __name__ == "__main__":
    unittest.main()
