"""rrext_deploy_preview (docs/protocol.md §5, docs/schedules.md §11): fire times, zones, errors, bounds."""

import unittest

import binascii

from harness import ServerTest, async_test, pipeline

JAN1_2026 = 1767225600.0  # 2026-01-01T00:00:00Z, a Thursday


class PreviewTest(ServerTest):

    @async_test()
    async def test_every_15_minutes(self):
        c = await self.admin()
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="*/15 * * * *",
                                          **{"from": JAN1_2026}))
        self.assertEqual(body["schedule"], "*/15 * * * *")
        self.assertEqual(body["timezone"], "UTC")
        self.assertEqual([n["at"] for n in body["next"]],
                         [JAN1_2026 + 900 * k for k in range(1, 6)])
        self.assertEqual([n["local"] for n in body["next"]],
                         ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00",
                          "2026-01-01T00:45:00+00:00", "2026-01-01T01:00:00+00:00",
                          "2026-01-01T01:15:00+00:00"])
        for n in body["next"]:
            self.assertIsInstance(n["at"], float)
        self.assertIsInstance(body["warnings"], list)
        # strictly after `from`, also from a fractional instant
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="*/15 * * * *", count=1,
                                          **{"from": JAN1_2026 + 899.5}))
        self.assertEqual([n["at"] for n in body["next"]], [JAN1_2026 + 900])
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="*/15 * * * *", count=1,
                                          **{"from": JAN1_2026 + 900}))
        self.assertEqual([n["at"] for n in body["next"]], [JAN1_2026 + 1800])

    @async_test()
    async def test_presets_and_default_from(self):
        import time
        c = await self.admin()
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="@hourly", count=3))
        ats = [n["at"] for n in body["next"]]
        self.assertEqual(len(ats), 3)
        self.assertGreater(ats[0], time.time() - 5)
        self.assertLessEqual(ats[0], time.time() + 3600)
        self.assertEqual([a % 3600 for a in ats], [0, 0, 0])
        self.assertEqual(ats[1] - ats[0], 3600)
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="@yearly",
                                          **{"from": JAN1_2026}))
        self.assertEqual(body["next"][0]["local"], "2027-01-01T00:00:00+00:00")

    @async_test()
    async def test_cron_tz(self):
        c = await self.admin()
        body = self.assertOk(await c.call(
            "rrext_deploy_preview", schedule="CRON_TZ=America/New_York 0 9 * * *",
            count=2, **{"from": JAN1_2026}))
        self.assertEqual(body["timezone"], "America/New_York")
        self.assertEqual(body["next"][0]["at"], JAN1_2026 + 14 * 3600)
        self.assertEqual(body["next"][0]["local"], "2026-01-01T09:00:00-05:00")
        self.assertEqual(body["next"][1]["at"], JAN1_2026 + 86400 + 14 * 3600)

    @async_test()
    async def test_invalid_schedules(self):
        c = await self.admin()
        for s in ("not-a-cron", "* * * *", "61 * * * *", "@reboot",
                  "CRON_TZ=Mars/Base 0 9 * * *", "0 0 30 2 *"):
            r = await c.call("rrext_deploy_preview", schedule=s)
            self.assertErr(r, "bad_request", prefix="Invalid schedule '%s': " % s)
        for s in (5, ["@daily"], True, {"a": 1}):
            r = await c.call("rrext_deploy_preview", schedule=s)
            self.assertErr(r, "bad_request", "schedule must be a string")
        for args in ({}, {"schedule": None}):
            r = await c.request("rrext_deploy_preview", args)
            self.assertErr(r, "bad_request", "schedule is required")
        await self.assertAlive(c)

    @async_test()
    async def test_count_bounds(self):
        c = await self.admin()
        for n in (1, 7, 1000):
            body = self.assertOk(await c.call("rrext_deploy_preview",
                                              schedule="* * * * *", count=n,
                                              **{"from": JAN1_2026}))
            self.assertEqual(len(body["next"]), n)
            self.assertEqual(body["next"][-1]["at"], JAN1_2026 + 60 * n)
        for n in (0, -1, 1001, 1.5, "5", True, [5], 10 ** 12):
            r = await c.call("rrext_deploy_preview", schedule="* * * * *",
                             count=n)
            self.assertErr(r, "bad_request",
                           "count must be an integer from 1 to 1000")
        for f in ("now", [1], True, 1e300, -1e300):
            r = await c.call("rrext_deploy_preview", schedule="* * * * *",
                             **{"from": f})
            self.assertErr(r, "bad_request",
                           "from must be a number of Unix seconds")
        # count null = default 5
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="@daily", count=None))
        self.assertEqual(len(body["next"]), 5)

    @async_test()
    async def test_warnings(self):
        c = await self.admin()
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="*/7 * * * *",
                                          **{"from": JAN1_2026}))
        self.assertTrue(body["warnings"], "uneven step */7 warns")
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="0 0 13 * 5",
                                          **{"from": JAN1_2026}))
        self.assertTrue(body["warnings"], "DOM/DOW OR rule warns")
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="0 * * * *",
                                          **{"from": JAN1_2026}))
        self.assertEqual(body["warnings"], [])

    @async_test()
    async def test_never_sparse_schedule(self):
        """Feb 29 only: the next five are leap years, found quickly."""
        c = await self.admin()
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="0 0 29 2 *",
                                          **{"from": JAN1_2026}))
        self.assertEqual([n["local"][:10] for n in body["next"]],
                         ["2028-02-29", "2032-02-29", "2036-02-29",
                          "2040-02-29", "2044-02-29"])

    @async_test()
    async def test_last_nth_and_full_range_fields(self):
        c = await self.admin()
        cases = {
            "0 0 L * *": ["2026-01-31", "2026-02-28", "2026-03-31"],
            "0 0 L 2 *": ["2026-02-28", "2027-02-28", "2028-02-29"],
            "0 0 * * L5": ["2026-01-30", "2026-02-27", "2026-03-27"],
            "0 0 * * 5L": ["2026-01-30", "2026-02-27", "2026-03-27"],
            "0 9 * * 1#2": ["2026-01-12", "2026-02-09", "2026-03-09"],
            "0 0 ? * MON": ["2026-01-05", "2026-01-12", "2026-01-19"],
            # a field covering its whole range is unrestricted: no OR rule
            "51 0 */1 * 0,1,6": ["2026-01-03", "2026-01-04", "2026-01-05"],
            "8-8/1 0 14 * */1": ["2026-01-14", "2026-02-14", "2026-03-14"],
        }
        for sched, days in cases.items():
            body = self.assertOk(await c.call("rrext_deploy_preview",
                                              schedule=sched, count=3,
                                              **{"from": JAN1_2026}))
            self.assertEqual([n["local"][:10] for n in body["next"]], days,
                             sched)
            self.assertEqual(body["resolved"], sched)
            self.assertNotIn("hashedFrom", body)
            self.assertFalse(any("either matches" in w
                                 for w in body["warnings"]), sched)
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="0 0 31 * *",
                                          **{"from": JAN1_2026}))
        self.assertIn("no fire in February, April, June, September or "
                      "November: those months have no matching day",
                      body["warnings"])
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="0 0 * 2 5#5", count=2,
                                          **{"from": JAN1_2026}))
        self.assertEqual([n["local"][:10] for n in body["next"]],
                         ["2036-02-29", "2064-02-29"])
        self.assertIn("fires in February only in leap years when the 1st is "
                      "a Friday", body["warnings"])

    @async_test(timeout=90)
    async def test_hashed_schedule_stable(self):
        srv = self.new_server()
        c = await self.user_client(server=srv, user="hash_alice")
        b1 = self.assertOk(await c.call("rrext_deploy_preview",
                                        schedule="H H(1-5) * * *",
                                        projectId="etl"))
        # croniter's value with hash_id = user "\0" project id
        crc = binascii.crc32(b"hash_alice\0etl")
        self.assertEqual(b1["resolved"],
                         "%d %d * * *" % (crc % 60, (crc >> 1) % 5 + 1))
        self.assertEqual(b1["hashedFrom"],
                         {"user": "hash_alice", "projectId": "etl"})
        b2 = self.assertOk(await c.call("rrext_deploy_preview",
                                        schedule="H H(1-5) * * *",
                                        projectId="etl"))
        self.assertEqual(b2["resolved"], b1["resolved"])
        b3 = self.assertOk(await c.call("rrext_deploy_preview",
                                        schedule="H/15 * * * *"))
        self.assertEqual(b3["hashedFrom"],
                         {"user": "hash_alice", "projectId": ""})
        crc0 = binascii.crc32(b"hash_alice\0")
        self.assertEqual(b3["resolved"], "%d-59/15 * * * *" % (crc0 % 15))
        rec = self.assertOk(await c.call("rrext_deploy_add",
                                         pipeline=pipeline("etl"),
                                         schedule="H H(1-5) * * *"))
        self.assertEqual(rec["schedule"], "H H(1-5) * * *")
        b4 = self.assertOk(await c.call("rrext_deploy_preview",
                                        schedule="H H(1-5) * * *",
                                        projectId="etl", count=1,
                                        **{"from": rec["created_at"]}))
        self.assertEqual(rec["next_run_at"], b4["next"][0]["at"])
        await c.close()
        srv.restart()
        c = await self.client(srv, key=c.key)
        st = self.assertOk(await c.call("rrext_deploy_status",
                                        projectId="etl"))
        self.assertEqual(st["next_run_at"], rec["next_run_at"])
        self.assertErr(await c.call("rrext_deploy_preview",
                                    schedule="H(9-1) * * * *"),
                       "bad_request",
                       "Invalid schedule 'H(9-1) * * * *': reversed range "
                       "H(9-1) in minute")


class PreviewServerZoneTest(ServerTest):
    SERVER_ARGS = ("--timezone", "Europe/Paris")

    @async_test()
    async def test_server_default_zone(self):
        c = await self.admin()
        body = self.assertOk(await c.call("rrext_deploy_preview",
                                          schedule="0 9 * * *", count=1,
                                          **{"from": JAN1_2026}))
        self.assertEqual(body["timezone"], "Europe/Paris")
        self.assertEqual(body["next"][0]["at"], JAN1_2026 + 8 * 3600)
        self.assertEqual(body["next"][0]["local"], "2026-01-01T09:00:00+01:00")
        body = self.assertOk(await c.call(
            "rrext_deploy_preview", schedule="CRON_TZ=UTC 0 9 * * *", count=1,
            **{"from": JAN1_2026}))
        self.assertEqual(body["timezone"], "UTC")
        self.assertEqual(body["next"][0]["at"], JAN1_2026 + 9 * 3600)



if __name__ == "__main__":
    unittest.main()
