"""Admission control before authentication (docs/protocol.md §4.1, §10;
docs/operations.md §8): the failed-auth throttle per address and for all
addresses together, its aggregated log lines, the cap on unauthenticated
connections per address, and the small message limit before
authentication. Every test runs its own server.

Clients connect from different loopback addresses (127.0.0.2, 127.0.0.3, ...)
when a test needs several client addresses: the server counts each as a
client address of its own."""

import asyncio
import json
import os
import re
import socket
import sys
import time
import unittest

from harness import Server, ServerTest, async_test, pipeline
from test_abuse import RawWS, metrics, percentile, report

MiB = 1024 * 1024

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


def proc_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (field, pid))


def pinger_main(port, key, seconds):
    """Run in a process of its own (so that the load the test itself makes
    does not show up as latency): authenticate, then rrext_deploy_status
    "lat" every 5 ms for `seconds`; print the latencies in ms as JSON."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")
    s.sendall(RawWS.upgrade_request())
    while f.readline() not in (b"\r\n", b""):
        pass

    def call(seq, command, args):
        s.sendall(RawWS.frame(json.dumps({"type": "request", "seq": seq,
                                          "command": command,
                                          "arguments": args})))
        while True:
            b0, b1 = f.read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(f.read(2), "big")
            elif n == 127:
                n = int.from_bytes(f.read(8), "big")
            msg = json.loads(f.read(n))
            if msg.get("request_seq") == seq:
                return msg

    if not call(1, "auth", {"auth": key})["success"]:
        raise SystemExit("pinger: auth failed")
    lat, seq, end = [], 1, time.monotonic() + seconds
    while time.monotonic() < end:
        seq += 1
        t = time.perf_counter()
        if not call(seq, "rrext_deploy_status", {"projectId": "lat"})["success"]:
            raise SystemExit("pinger: status failed")
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    print(json.dumps(lat))


async def run_pinger(port, key, seconds):
    """pinger_main in a child process; its latencies."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import test_guard; test_guard.pinger_main(%d, %r, %r)"
        % (port, key, seconds),
        cwd=os.path.dirname(os.path.abspath(__file__)),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError("pinger failed (%s)" % proc.returncode)
    return json.loads(out)


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
        # 16 connections at once, and the server may count a closed one a
        # moment longer than the client does: a cap well above that
        srv = self.new_server(["--max-unauth-per-address", "64"])
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


    @async_test(timeout=90)
    async def test_flood_from_many_addresses_spares_good_standing(self):
        """150 addresses each try a wrong key twice. Every first try is
        checked (an address that never failed is in good standing); the
        global limit (100, then 10 a second) then refuses most second tries
        unchecked, "on this server". Meanwhile a newcomer address and an
        address that authenticated before (even after a typo of its own)
        are still checked, and the refused ones may try again after the
        wait they are told."""
        N = 150
        srv = self.new_server()
        trusted = RawAuth(srv.port, srv.admin_key, source="127.0.2.1")
        self.assertIsNone(await trusted.attempt())
        self.assertEqual(await RawAuth(srv.port, WRONG_KEY, "127.0.2.1")
                         .attempt(), "Invalid API key")
        floods = [RawAuth(srv.port, WRONG_KEY, "127.0.1.%d" % (i + 1))
                  for i in range(N)]
        gate = asyncio.Semaphore(8)

        async def attempt(r):
            async with gate:
                return await r.attempt()
        first = await asyncio.gather(*(attempt(r) for r in floods))
        self.assertEqual(first, ["Invalid API key"] * N)
        second = await asyncio.gather(*(attempt(r) for r in floods))
        refused = [m for m in second if m.startswith(
            "Too many failed authentication attempts on this server: retry in ")]
        self.assertEqual(len(refused) + second.count("Invalid API key"), N)
        self.assertGreater(len(refused), N // 2, second)
        # still checked while the limit holds
        newcomer = RawAuth(srv.port, srv.admin_key, source="127.0.3.1")
        self.assertIsNone(await newcomer.attempt())
        self.assertIsNone(await trusted.attempt())
        flooder = floods[0]
        msg = await flooder.attempt()
        if msg != "Invalid API key":
            wait = int(re.search(r"retry in (\d+) s$", msg).group(1))
            await asyncio.sleep(wait)  # as the message says
            self.assertEqual(await flooder.attempt(), "Invalid API key")
        m = await metrics(srv)
        self.assertGreaterEqual(m['rrdeploy_auth_throttled_total{limit="global"}'],
                                len(refused))
        report("flood from %d addresses: every first try checked, %d of %d "
               "second tries refused by the global limit; a newcomer and a "
               "returning address checked meanwhile" % (N, len(refused), N))
        srv.stop()

    # ---------------------------------------------------------- connections

    async def wait_metric(self, srv, name, want, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            got = (await metrics(srv))[name]
            if got == want:
                return
            self.assertLess(time.monotonic(), deadline,
                            "%s is %s, not %s" % (name, got, want))
            await asyncio.sleep(0.02)

    @async_test()
    async def test_unauthenticated_connections_per_address(self):
        """Ten unauthenticated connections from one address are fine; the
        eleventh is closed at once, 1008 with its reason. One more is
        admitted as soon as one of the ten authenticates, or closes. Other
        addresses are not affected; authenticated sessions do not count,
        but one that deauthenticates counts again."""
        srv = self.new_server()
        reason = "too many unauthenticated connections from this address"
        held = [await self.client(srv) for _ in range(10)]
        for c in held:
            self.assertOk(await c.call("rrext_public_probe"))
        await self.wait_metric(srv, "rrdeploy_connections_unauthenticated", 10)

        async def refused():
            c = await self.client(srv)
            self.assertEqual(await c.wait_closed(10), 1008)
            self.assertEqual(c.ws.close_reason, reason)

        async def admitted():
            c = await self.client(srv)
            self.assertOk(await c.call("rrext_public_probe"))
            self.assertFalse(c.is_closed())
            return c

        await refused()
        other = await self.client(srv, source="127.0.0.2")
        self.assertOk(await other.call("rrext_public_probe"))
        # one authenticates: its slot is free once its reply is out
        await held[0].auth(srv.admin_key)
        held.append(await admitted())
        await refused()
        # one closes: free once the server has seen it go
        await held[1].close()
        await self.wait_metric(srv, "rrdeploy_connections_unauthenticated",
                               9 + 1)
        held.append(await admitted())
        await refused()
        # a deauth makes a session count again, even over the cap
        self.assertOk(await held[0].call("deauth"))
        await self.wait_metric(srv, "rrdeploy_connections_unauthenticated",
                               11 + 1)
        self.assertOk(await held[0].call("rrext_public_probe"))
        await refused()
        m = await metrics(srv)
        self.assertEqual(m["rrdeploy_connections_refused_total"], 4)
        for c in held[2:]:
            self.assertFalse(c.is_closed())
        srv.stop()

    # ---------------------------------------------------------- big messages

    @async_test(timeout=120)
    async def test_big_unauthenticated_messages_cost_nothing(self):
        """40 unauthenticated connections, each from its own address, send
        15 MiB messages for 3 s, a new connection for each: half as one
        frame announcing 15 MiB,
        half as 32 KiB fragments; half of them a JSON array of zeros (the
        costliest thing to parse). The server closes each with 1009 once
        64 KiB have come, so its memory grows by less than 50 MB, and an
        authenticated client's requests keep a p99 under 50 ms."""
        N, ROUNDS, SECONDS, SIZE, CHUNK = 40, 2, 3.0, 15 * MiB, 64 * 1024
        # ASan keeps freed memory in a quarantine (256 MB by default), so
        # every closed connection's buffers would stay in RSS; a small one
        # lets RSS show what the server actually holds. (A release build
        # grows by about 8 MiB here.)
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "detect_leaks=1") +
                               ":quarantine_size_mb=4")
        srv = Server(env=env)
        self.servers.append(srv)
        srv.start()
        pid = srv.proc.pid
        admin = await self.admin(srv)
        self.assertOk(await admin.call("rrext_deploy_add",
                                       pipeline=pipeline("lat")))
        await self.assertAlive(admin)
        rss0 = proc_status_kib(pid, "VmRSS")
        zeros = b'{"type":"request","seq":1,"command":"rrext_deploy_list",' \
                b'"arguments":{"a":[' + b"0," * (CHUNK // 2)
        spaces = b" " * CHUNK
        closes = []

        async def one_message(i, rnd):
            ws = RawWS(srv.port)
            ws.reader, ws.writer = await asyncio.open_connection(
                "127.0.0.1", srv.port, local_addr=("127.0.0.%d" % (10 + i), 0))
            await ws.handshake()
            # a small send buffer: the client learns of the close after a
            # few hundred KiB instead of pushing megabytes into the kernel
            ws.writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            body = zeros if i % 2 else spaces
            fragmented = (i + rnd) % 2 == 0
            mask = b"\0\0\0\0"  # a zero mask: the payload goes as it is
            closed = asyncio.ensure_future(ws.read_message(15))
            sent = 0
            try:
                if not fragmented:
                    ws.writer.write(b"\x81\xff" + SIZE.to_bytes(8, "big") + mask)
                # stop writing once the server has closed: writing on
                # would only load this process, not the server
                while sent < SIZE and not closed.done():
                    if fragmented:
                        op = 0x01 if sent == 0 else 0x00
                        piece = body[:32 * 1024]
                        ws.writer.write(bytes([op, 0xfe]) +
                                        len(piece).to_bytes(2, "big") + mask +
                                        piece)
                        sent += len(piece)
                    else:
                        ws.writer.write(body)
                        sent += len(body)
                    await ws.writer.drain()
            except ConnectionError:
                pass
            try:
                r = await closed
            except (asyncio.IncompleteReadError, ConnectionError):
                r = None  # reset before the Close frame could be read
            closes.append((r, sent))
            ws.drop()

        async def sender(i):
            rnd = 0
            while rnd < ROUNDS or time.monotonic() - t0 < SECONDS:
                await one_message(i, rnd)
                rnd += 1

        rss_max = [rss0]
        stop = asyncio.Event()

        async def sample_rss():
            while not stop.is_set():
                rss_max[0] = max(rss_max[0], proc_status_kib(pid, "VmRSS"))
                await asyncio.sleep(0.02)

        pinger = asyncio.ensure_future(
            run_pinger(srv.port, srv.admin_key, SECONDS + 0.5))
        sampler = asyncio.ensure_future(sample_rss())
        t0 = time.monotonic()
        await asyncio.gather(*(sender(i) for i in range(N)))
        elapsed = time.monotonic() - t0
        lat = await pinger
        stop.set()
        await sampler
        hwm = proc_status_kib(pid, "VmHWM")
        grow_mib = (max(hwm, rss_max[0]) - rss0) / 1024.0
        p99 = percentile(lat, 0.99)
        coded = [r for r, _ in closes if r is not None]
        report("big unauthenticated messages: %d x 15 MiB in %.2f s, the "
               "client wrote at most %.2f MiB before it saw the close (median "
               "%.2f); server RSS %.1f MiB, +%.1f MiB at most (VmHWM %.1f "
               "MiB); %d requests meanwhile, p50 %.2f p99 %.2f max %.2f ms"
               % (len(closes), elapsed, max(s for _, s in closes) / MiB,
                  percentile([s for _, s in closes], 0.5) / MiB, rss0 / 1024.0,
                  grow_mib, hwm / 1024.0, len(lat), percentile(lat, 0.5), p99,
                  max(lat)))
        self.assertGreaterEqual(len(closes), N * ROUNDS)
        self.assertGreater(len(coded), len(closes) // 2, closes[:5])
        for r in coded:
            self.assertEqual(r, ("close", 1009))
        self.assertLess(grow_mib, 50.0)
        self.assertGreater(len(lat), 20)
        self.assertLess(p99, 50.0)
        m = await metrics(srv)
        self.assertEqual(m["rrdeploy_messages_too_large_total"], len(closes))
        # none of them was ever handled
        self.assertFalse([k for k in m if "rrext_deploy_list" in k], m)
        await self.assertAlive(admin)
        srv.stop()


if __name__ == "__main__":
    unittest.main()
