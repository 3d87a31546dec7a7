"""Admission control before authentication (docs/protocol.md §4.1, §10;
docs/operations.md §8): the failed-auth throttle per address and for all
addresses together, its aggregated log lines, the cap on unauthenticated
connections per address, and the small message limit before
authentication. Every test runs its own server.

Clients connect from different loopback addresses (127.0.0.2, 127.0.0.3, ...)
when a test needs several client addresses: the server counts each as a
client address of its own."""

import asyncio
import os
import re
import time
import unittest

from harness import ServerTest, async_test, pipeline
from test_abuse import RawWS, metrics, percentile, report

WRONG_KEY = "rrk_" + "f00d" * 16  # well-formed, never issued


class RawAuth:
    """One connection from `source` that upgrades, sends an auth and
    returns the reply's message (None on success)."""

    def __init__(self, port, key, source="127.0.0.1"):
        self.port = port
        self.source = source
        ws = RawWS(port)
        _, text = ws.request_text("auth", {"auth": key})
        self.frame = RawWS.frame(text)  # built once: the mask does not matter

    async def attempt(self):
        ws = RawWS(self.port)
        ws.reader, ws.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(self.source, 0))
        try:
            ws.writer.write(RawWS.upgrade_request())
            head = await asyncio.wait_for(ws.reader.readuntil(b"\r\n\r\n"), 15)
            if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                raise AssertionError("upgrade refused: %r" % head[:200])
            ws.writer.write(self.frame)
            r = await ws.read_message(15)
            if isinstance(r, tuple):
                raise AssertionError("closed %r before the auth reply" % (r,))
            if r["success"]:
                return None
            if r["code"] != "unauthorized":
                raise AssertionError("auth reply %r" % r)
            return r["message"]
        finally:
            ws.drop()


def log_lines(server, start):
    """The server's log lines from byte offset `start` of its stderr."""
    return server.stderr()[start:].splitlines()


class GuardTest(ServerTest):
    SHARED_SERVER = False

    # ---------------------------------------------------------- throttle

    @async_test(timeout=150)
    async def test_wrong_key_flood_is_throttled_and_logged_briefly(self):
        """10,000 wrong-key attempts from one address: after a burst of 30
        checked keys, one is checked every 2 s and the rest are refused
        without a check, with a message saying when to retry; the socket
        always closes. The server logs the first failure and then one
        summary per 10 s, never the key. Another address is not affected,
        and the flooding address itself gets in with the right key once it
        waits as told."""
        N, WORKERS = 10000, 16
        srv = self.new_server()
        log_start = len(srv.stderr())
        flood = RawAuth(srv.port, WRONG_KEY)
        counts = {}
        todo = iter(range(N))

        async def worker():
            for _ in todo:
                msg = await flood.attempt()
                counts[msg] = counts.get(msg, 0) + 1

        t0 = time.monotonic()
        workers = [asyncio.ensure_future(worker()) for _ in range(WORKERS)]
        # meanwhile, a user from another address authenticates normally
        other = await self.client(srv, key=srv.admin_key, source="127.0.0.2")
        await self.assertAlive(other)
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - t0

        checked = counts.pop("Invalid API key", 0)
        throttled = sum(n for m, n in counts.items()
                        if m.startswith("Too many failed authentication "
                                        "attempts from this address: retry in "))
        self.assertEqual(checked + throttled, N, counts)
        self.assertGreaterEqual(checked, 30)
        self.assertLessEqual(checked, 30 + elapsed / 2 + 1)
        self.assertGreater(throttled, 0.99 * N)
        for m in counts:
            self.assertRegex(m, r"retry in [12] s$")

        # the right key from the flooding address: refused unchecked, then
        # accepted after the wait the message asks for
        right = RawAuth(srv.port, srv.admin_key)
        msg = await right.attempt()
        self.assertIsNotNone(msg, "a throttled address was checked")
        wait = int(re.search(r"retry in (\d+) s$", msg).group(1))
        await asyncio.sleep(wait)  # what a client is told to do
        self.assertIsNone(await right.attempt())
        await self.assertAlive(other)

        m = await metrics(srv)
        self.assertEqual(m["rrdeploy_auth_failures_total"], checked)
        self.assertEqual(m['rrdeploy_auth_throttled_total{limit="address"}'],
                         throttled + 1)
        self.assertEqual(m['rrdeploy_auth_throttled_total{limit="global"}'], 0)

        lines = log_lines(srv, log_start)
        flood_lines = len(lines)
        self.assertLessEqual(flood_lines, 20, "\n".join(lines))
        # The summaries account for every event: wait for the last one
        # (due 10 s after its window opened).
        pat = re.compile(r"from 127\.0\.0\.1 in the last \d+ s: (.*)$")
        deadline = time.monotonic() + 25
        while True:
            lines = log_lines(srv, log_start)
            firsts = [l for l in lines if "auth failed: Invalid API key "
                      "(from 127.0.0.1; more are summarised every 10 s)" in l]
            failed = len(firsts)
            thr = 0
            for l in lines:
                mm = pat.search(l)
                if mm:
                    f = re.search(r"(\d+) failed auths", mm.group(1))
                    t = re.search(r"(\d+) auths throttled", mm.group(1))
                    failed += int(f.group(1)) if f else 0
                    thr += int(t.group(1)) if t else 0
            if (failed, thr) == (checked, throttled + 1):
                break
            self.assertLess(time.monotonic(), deadline,
                            "summaries %r do not add up to %r:\n%s"
                            % ((failed, thr), (checked, throttled + 1),
                               "\n".join(lines)))
            await asyncio.sleep(0.2)
        self.assertEqual(len(firsts), 1)
        self.assertTrue(any("before authentication, in the last" in l
                            for l in lines))
        self.assertNotIn(WRONG_KEY, srv.stderr())
        self.assertNotIn(srv.admin_key, srv.stderr()[log_start:])
        report("wrong-key flood: %d attempts in %.2f s from one address: %d "
               "keys checked, %d refused unchecked; %d log lines during the "
               "flood, %d once summarised"
               % (N, elapsed, checked, throttled, flood_lines, len(lines)))
        srv.stop()


if __name__ == "__main__":
    unittest.main()
