"""Auth with a RocketRide credential that the engine checks (docs/protocol.md
§4.2, §5.1), over a real WebSocket, with the server's stand-in engine
(rrtest_engine, test builds with --test-clock): the connection is not read
while its auth waits, the messages behind the auth are answered after it
and in order, refusals and an engine that cannot be asked or does not
answer, the auth timeout of a socket that waits, shared checks, the cache,
a connection that closes while waiting, and the counters in /metrics.

Every test starts with a fresh stand-in (and so a fresh cache) and uses
credentials of its own."""

import asyncio
import json
import time
import unittest

from harness import ServerTest, async_test
from test_abuse import RawWS, metrics

UNREACHABLE = ("Authentication unavailable: the RocketRide engine cannot be "
               "reached (%s)")
LATE = ("Authentication unavailable: the RocketRide engine did not answer in "
        "time")
BOTH = 3  # task.control | task.monitor


class EngineAuthTest(ServerTest):
    SERVER_ARGS = ("--test-clock", "--auth-timeout", "1")

    async def engine(self, **args):
        """Tell the stand-in engine something; its state back."""
        if not hasattr(self, "_ctl") or self._ctl.is_closed():
            self._ctl = await self.admin()
        return self.assertOk(await self._ctl.request("rrtest_engine", args))

    async def asked(self, cred, timeout=10.0):
        """Wait until the engine has been asked about cred."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.engine()
            if cred in st["pending"]:
                return st
            if time.monotonic() > deadline:
                raise AssertionError("the engine was never asked: %r" % st)
            await asyncio.sleep(0.05)

    async def waiting(self, n, timeout=10.0):
        """Wait until n sessions hold an auth waiting for the engine."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.engine()
            if st["waiting"] == n:
                return st
            if time.monotonic() > deadline:
                raise AssertionError("not %d sessions waiting: %r" % (n, st))
            await asyncio.sleep(0.05)

    def cred(self, what):
        return "rr-%s-%s" % (self._testMethodName, what)

    @async_test()
    async def test_pipelined_requests_wait_for_the_verdict(self):
        await self.engine(enable=True)
        cred = self.cred("k")
        ws = await RawWS(self.server.port).connect()
        await ws.handshake()
        texts = [ws.request_text("auth", {"auth": cred})[1],
                 ws.request_text("rrext_ping")[1],
                 ws.request_text("rrext_deploy_list")[1]]
        # one write: all three arrive in the same read
        ws.writer.write(b"".join(RawWS.frame(t) for t in texts))
        await ws.writer.drain()
        await self.asked(cred)
        # nothing is answered while the engine thinks, and the auth timeout
        # (1 s) does not drop a socket that waits for its verdict
        with self.assertRaises(asyncio.TimeoutError):
            await ws.read_message(timeout=1.8)
        await self.engine(answer=cred, user="engine_bob", perms=BOTH)
        got = [await ws.read_message(timeout=10) for _ in range(3)]
        self.assertEqual([r["request_seq"] for r in got], [1, 2, 3], got)
        self.assertEqual([r["seq"] for r in got], [1, 2, 3], got)
        self.assertTrue(all(r["success"] for r in got), got)
        self.assertEqual(got[0]["command"], "auth")
        body = got[0]["body"]
        self.assertEqual(body["userId"], "engine_bob")
        self.assertEqual(body["userToken"], "")
        self.assertEqual(sorted(body["organizations"][0]["teams"][0]
                                ["permissions"]),
                         ["task.control", "task.monitor"])
        self.assertEqual(got[1]["body"], {"pong": True})
        self.assertEqual(got[2]["body"], {"deployments": []})
        # the connection is read again
        ws.send(ws.request_text("rrext_ping")[1])
        r = await ws.read_message(timeout=10)
        self.assertEqual(r["request_seq"], 4)
        ws.writer.close()

    @async_test()
    async def test_refusal_text_then_close(self):
        await self.engine(enable=True)
        cred = self.cred("k")
        c = await self.client()
        fut, send = c.start("auth", {"auth": cred})
        await send
        ping, send = c.start("rrext_ping")
        await send
        await self.asked(cred)
        await self.engine(answer=cred, refuse="Invalid API key")
        r = await asyncio.wait_for(fut, 10)
        self.assertErr(r, "unauthorized", "Invalid API key")
        self.assertEqual(r["request_seq"], 1)
        self.assertEqual(await c.wait_closed(10), 1008)
        with self.assertRaises(ConnectionError):
            await ping  # dropped with the connection

    @async_test()
    async def test_engine_unreachable_is_not_the_clients_fault(self):
        await self.engine(enable=True)
        before = await metrics(self.server)
        # identify itself fails
        await self.engine(down=True)
        c = await self.client()
        r = await c.auth(self.cred("a"), check=False)
        self.assertErr(r, "unauthorized", UNREACHABLE % "I/O error")
        await c.wait_closed(10)
        await self.engine(down=False)
        # the upstream reports it cannot reach the engine
        cred = self.cred("b")
        c = await self.client()
        fut, send = c.start("auth", {"auth": cred})
        await send
        await self.asked(cred)
        await self.engine(answer=cred, unreachable="connection refused")
        self.assertErr(await asyncio.wait_for(fut, 10), "unauthorized",
                       UNREACHABLE % "connection refused")
        await c.wait_closed(10)
        after = await metrics(self.server)
        self.assertEqual(after["rrdeploy_auth_failures_total"],
                         before["rrdeploy_auth_failures_total"])
        key = 'rrdeploy_engine_auth_total{result="unavailable"}'
        self.assertEqual(after[key] - before[key], 2)

    @async_test()
    async def test_no_verdict_in_time(self):
        await self.engine(enable=True, wait_ms=1500)
        cred = self.cred("k")
        c = await self.client()
        t0 = time.monotonic()
        fut, send = c.start("auth", {"auth": cred})
        await send
        r = await asyncio.wait_for(fut, 15)
        waited = time.monotonic() - t0
        self.assertErr(r, "unauthorized", LATE)
        self.assertGreater(waited, 1.2)
        await c.wait_closed(10)
        # the verdict that comes afterwards finds nobody waiting
        await self.engine(answer=cred, user="late_user", perms=BOTH)
        await self.assertAlive(await self.admin())

    @async_test()
    async def test_shared_check_and_cache(self):
        await self.engine(enable=True)
        cred = self.cred("k")
        asked0 = (await self.engine())["asked"]
        a = await self.client()
        b = await self.client()
        fa, send = a.start("auth", {"auth": cred})
        await send
        await self.asked(cred)
        fb, send = b.start("auth", {"auth": "Bearer " + cred})
        await send
        st = await self.waiting(2)  # both held, b's auth handled
        self.assertEqual(st["asked"] - asked0, 1, st)  # one check for both
        await self.engine(answer=cred, user="shared_user", perms=2)
        for f in (fa, fb):
            body = self.assertOk(await asyncio.wait_for(f, 10))
            self.assertEqual(body["userId"], "shared_user")
        # within 30 s: answered from the cache, the engine not asked
        c = await self.client()
        r = await c.auth(cred)
        self.assertEqual(r["body"]["userId"], "shared_user")
        self.assertEqual((await self.engine())["asked"] - asked0, 1)
        await self.assertAlive(c)
        m = await metrics(self.server)
        self.assertGreaterEqual(m['rrdeploy_engine_auth_total{result="cached"}'], 1)
        self.assertGreaterEqual(m['rrdeploy_engine_auth_total{result="accepted"}'], 2)

    @async_test()
    async def test_close_while_waiting(self):
        await self.engine(enable=True)
        cred = self.cred("k")
        c = await self.client()
        _, send = c.start("auth", {"auth": cred})
        await send
        await self.asked(cred)
        await c.close()
        await self.waiting(0)  # the server has let the session go
        await self.engine(answer=cred, user="gone_user", perms=BOTH)
        # the server is fine, and the verdict is cached for the next one
        d = await self.client()
        r = await d.auth(cred)
        self.assertEqual(r["body"]["userId"], "gone_user")

    @async_test()
    async def test_local_keys_stay_local(self):
        await self.engine(enable=True)
        asked0 = (await self.engine())["asked"]
        c = await self.client()
        await c.auth(self.server.admin_key)
        c = await self.client()
        r = await c.auth("rrk_" + "0" * 64, check=False)
        self.assertErr(r, "unauthorized", "Invalid API key")
        self.assertEqual((await self.engine())["asked"], asked0)


class MonitorTest(ServerTest):
    """rrext_monitor delivers the caller's apaevt_deploy events."""

    SERVER_ARGS = ("--test-clock",)

    @async_test()
    async def test_monitor_events(self):
        c = await self.user_client()
        await c.ok("rrext_deploy_add", pipeline={"project_id": "m1"})
        await c.ok("rrext_deploy_add", pipeline={"project_id": "m2"})
        await c.ok("rrext_monitor", projectId="m1", types=["task"])
        await c.ok("rrext_deploy_update", projectId="m2", state="paused")
        await c.ok("rrext_deploy_update", projectId="m1", state="paused")
        ev = await c.wait_event(lambda b: b["action"] == "state_changed")
        self.assertEqual(ev["event"], "apaevt_deploy")
        self.assertEqual(ev["body"]["projectId"], "m1")  # not m2's
        n = len(c.events)
        await c.ok("rrext_monitor", token="*", types="255")
        await c.ok("rrext_deploy_update", projectId="m2", state="active")
        ev = await c.wait_event(lambda b: b["projectId"] == "m2", start=n)
        # removed: nothing more
        await c.ok("rrext_monitor", token="*", types=[])
        await c.ok("rrext_monitor", projectId="m1", types=0)
        n = len(c.events)
        await c.ok("rrext_deploy_update", projectId="m1", state="active")
        await self.assertAlive(c)
        self.assertEqual(len(c.events), n)
        r = await c.call("rrext_monitor", token="*", projectId="m1")
        self.assertErr(r, "bad_request", "You must specifiy either token or "
                       "project_id/source, not both")


if __name__ == "__main__":
    unittest.main()
