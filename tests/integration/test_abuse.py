"""The server under abuse: a thousand concurrent authenticated
connections, a slow reader flooding large-response requests, clients that
vanish mid-request, unauthenticated floods, and silent sockets that never
authenticate. Each test runs its own server and stops it with SIGTERM at the
end, so a leak (LeakSanitizer), a crash or an unclean exit fails the test.

Some clients here are hand-rolled (RawWS below: asyncio streams, our own
HTTP upgrade and masked frames) so that the test, not a library, decides when
-- and whether -- a socket is read or how it is torn down.

ctest label: integration;abuse."""

import asyncio
import base64
import http.client
import json
import os
import resource
import socket
import struct
import sys
import time
import unittest

from harness import WS_PATH, ServerTest, async_test, pipeline

MiB = 1024 * 1024
# Every client here connects from 127.0.0.1, and several tests open tens or
# hundreds of sockets before authenticating them: far over the default cap
# of 10 unauthenticated connections per address (tested in test_guard.py).
UNAUTH_CAP_RAISED = ["--max-unauth-per-address", "100000"]


# ---------------------------------------------------------------- raw client

class RawWS:
    """A minimal WebSocket client over asyncio streams: it reads only when
    told to, writes masked frames, and can drop the connection at any point
    (FIN or RST)."""

    def __init__(self, port):
        self.port = port
        self.reader = None
        self.writer = None
        self.seq = 0

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port)
        return self

    @staticmethod
    def upgrade_request(path=WS_PATH):
        key = base64.b64encode(os.urandom(16)).decode()
        return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode()

    async def handshake(self, timeout=15.0):
        self.writer.write(self.upgrade_request())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"),
                                      timeout)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise AssertionError("upgrade refused: %r" % head[:300])
        return self

    @staticmethod
    def frame(payload, opcode=1, fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        if n:
            m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")
        else:
            body = b""
        return head + mask + body

    def request_text(self, command, args=None):
        self.seq += 1
        return self.seq, json.dumps({"type": "request", "seq": self.seq,
                                     "command": command,
                                     "arguments": args or {}})

    def send(self, data, opcode=1, fin=True):
        self.writer.write(self.frame(data, opcode, fin))

    async def read_frame(self, timeout=30.0):
        """(opcode, fin, payload); raises IncompleteReadError on EOF."""
        async def rd():
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            if b1 & 0x80:
                raise AssertionError("server sent a masked frame")
            return b0 & 0x0F, bool(b0 & 0x80), await self.reader.readexactly(n)
        return await asyncio.wait_for(rd(), timeout)

    async def read_message(self, timeout=30.0):
        """The next text message, parsed; ('close', code) for a Close frame."""
        parts = []
        while True:
            op, fin, payload = await self.read_frame(timeout)
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                return ("close", code)
            if op in (9, 10):
                continue
            parts.append(payload)
            if fin:
                return json.loads(b"".join(parts))

    async def auth(self, key):
        seq, text = self.request_text("auth", {"auth": key,
                                               "clientName": "Python SDK",
                                               "clientVersion": "1.1.0"})
        self.send(text)
        r = await self.read_message()
        if not (isinstance(r, dict) and r.get("success") is True
                and r.get("request_seq") == seq):
            raise AssertionError("raw auth failed: %r" % (r,))
        return self

    async def read_until_eof(self, timeout):
        """Read (and ignore) everything until the server closes; True if it
        did within timeout."""
        try:
            async def drain():
                while await self.reader.read(65536):
                    pass
            await asyncio.wait_for(drain(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True

    def drop(self, rst=False):
        """Go away without a closing handshake: close the socket now (a FIN,
        or a RST if unread data is left), or a RST for sure when rst. Never
        writer.close(): it waits to flush what a stalled peer will never
        take."""
        if self.writer is None:
            return
        if rst:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                except OSError:
                    pass
        self.writer.transport.abort()
        self.writer = None


# ---------------------------------------------------------------- helpers

def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def metrics(server):
    """The /metrics text, parsed: {'name{labels}': value}."""
    def get():
        conn = http.client.HTTPConnection("127.0.0.1", server.port,
                                          timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode()
            if resp.status != 200:
                raise AssertionError("/metrics: %d %s" % (resp.status, body))
            return body
        finally:
            conn.close()
    text = await asyncio.get_running_loop().run_in_executor(None, get)
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def requests_ok(m, command):
    return int(m.get('rrdeploy_requests_total{command="%s",outcome="ok"}'
                     % command, 0))


def percentile(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def report(msg):
    sys.stderr.write("\nabuse: %s\n" % msg)


class AbuseTest(ServerTest):
    SHARED_SERVER = False

    async def wait_connections(self, server, want, timeout):
        """Wait until /metrics shows `want` open sessions; return it."""
        deadline = time.monotonic() + timeout
        while True:
            n = int((await metrics(server))["rrdeploy_connections"])
            if n == want or time.monotonic() > deadline:
                return n
            await asyncio.sleep(0.1)

    async def replies_until_closed(self, c, most):
        """Unclaimed replies on c until the server closes it (then wait for
        the close code), or until `most` have arrived."""
        replies = []
        while len(replies) < most:
            r = await c.recv_raw(30)
            if r is None:
                await c.wait_closed(10)
                break
            replies.append(r)
        return replies

    async def add_many(self, c, specs):
        """rrext_deploy_add each (project_id, pipeline) pipelined; return
        the records by project_id."""
        out = {}
        for i in range(0, len(specs), 50):
            batch = specs[i:i + 50]
            futs = []
            for pid, p in batch:
                fut, send = c.start("rrext_deploy_add", {"pipeline": p})
                await send
                futs.append(fut)
            for (pid, p), r in zip(batch, await asyncio.gather(*futs)):
                out[pid] = self.assertOk(r)
                self.assertEqual(out[pid]["pipeline"], p)
        return out

    # ---------------------------------------------------------- 1

    @async_test(timeout=60)
    async def test_thousand_concurrent_authenticated_connections(self):
        """1,000 WebSocket sessions on one server, all authenticated with one
        key, each pipelining status/list/ping/not-found at once: every answer
        carries its own request_seq and the right body. The server starts
        with a soft open-file limit of 256, so it must raise its own."""
        N, NDEP = 1000, 40
        limit = raise_nofile()
        if limit < N + 200:
            self.fail("RLIMIT_NOFILE hard limit %d is too low for %d "
                      "connections" % (limit, N))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, limit))
        try:
            srv = self.new_server(UNAUTH_CAP_RAISED)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        with open("/proc/%d/limits" % srv.proc.pid) as f:
            soft = [line.split()[3] for line in f
                    if line.startswith("Max open files")][0]
        self.assertEqual(int(soft), min(limit, 65536),
                         "serve did not raise its open-file limit")
        key = await asyncio.get_running_loop().run_in_executor(
            None, lambda: srv.create_key("crowd"))
        setup = await self.client(srv, key=key)
        recs = await self.add_many(setup, [
            ("d%02d" % i, pipeline("d%02d" % i, note="n%d" % i))
            for i in range(NDEP)])
        listing = self.assertOk(await setup.call("rrext_deploy_list"))
        self.assertEqual({r["pipeline"]["project_id"]
                          for r in listing["deployments"]}, set(recs))

        t0 = time.monotonic()
        gate = asyncio.Semaphore(100)

        async def open_one(i):
            async with gate:
                return await self.client(srv, key=key,
                                         style="ts" if i % 2 else "python")
        conns = await asyncio.gather(*(open_one(i) for i in range(N)))
        t_open = time.monotonic() - t0
        m = await metrics(srv)
        self.assertEqual(int(m["rrdeploy_connections"]), N + 1)

        async def work(i, c):
            pid = "d%02d" % (i % NDEP)
            reqs = [("rrext_deploy_status", {"projectId": pid}),
                    ("rrext_deploy_list", None),
                    ("rrext_ping", None),
                    ("rrext_deploy_status", {"projectId": "none%d" % i})]
            first = c.seq + 1
            futs = []
            for cmd, args in reqs:
                fut, send = c.start(cmd, args)
                await send
                futs.append(fut)
            rs = await asyncio.gather(*futs)
            for k, ((cmd, _), r) in enumerate(zip(reqs, rs)):
                self.assertEqual(r["request_seq"], first + k, r)
                self.assertEqual(r["command"], cmd, r)
            self.assertEqual(self.assertOk(rs[0]), recs[pid])
            self.assertEqual(self.assertOk(rs[1]), listing)
            self.assertEqual(self.assertOk(rs[2]), {"pong": True})
            self.assertErr(rs[3], "not_found",
                           "Deployment not found: none%d" % i)

        t1 = time.monotonic()
        await asyncio.gather(*(work(i, c) for i, c in enumerate(conns)))
        t_work = time.monotonic() - t1
        for c in conns:
            c.check()
            self.assertFalse(c.is_closed())
        m = await metrics(srv)
        self.assertEqual(requests_ok(m, "rrext_deploy_status"), N)
        self.assertEqual(requests_ok(m, "rrext_ping"), N)
        t2 = time.monotonic()
        await asyncio.gather(*(c.close() for c in conns))
        self.assertEqual(await self.wait_connections(srv, 1, 20), 1)
        await self.assertAlive(setup)
        report("1000 connections: opened+authenticated in %.2f s, %d "
               "requests answered in %.2f s, closed in %.2f s"
               % (t_open, 4 * N, t_work, time.monotonic() - t2))
        srv.stop()

    # ---------------------------------------------------------- 2

    @async_test(timeout=90)
    async def test_slow_reader_flood_is_throttled(self):
        """Client A pipelines ~1 MiB rrext_deploy_list requests as fast as
        the kernel takes them and never reads. The server must stop reading A
        once A's queue is full (bounded memory, a bounded number of lists
        answered), while client B's requests keep a p99 under 50 ms."""
        NDEP, PAD, NB = 100, 10 * 1024, 500
        # Flow control keeps at most 4 MiB (+ one response) queued for A;
        # measured growth under ASan+UBSan is ~25 MiB (redzones, quarantined
        # buffers of the few lists built). 100 MiB leaves 4x headroom and is
        # still far below an unthrottled server (+1 GiB every few seconds).
        RSS_BOUND_MIB, RUNAWAY_MIB = 100, 400
        srv = self.new_server()
        loop = asyncio.get_running_loop()
        key_a = await loop.run_in_executor(None, lambda: srv.create_key("big"))
        key_b = await loop.run_in_executor(None,
                                           lambda: srv.create_key("small"))
        setup = await self.client(srv, key=key_a)
        await self.add_many(setup, [
            ("big%03d" % i,
             pipeline("big%03d" % i, pad="%03d" % i + "x" * PAD))
            for i in range(NDEP)])
        one = await setup.call("rrext_deploy_list")
        list_bytes = len(one["_raw"])
        self.assertGreater(list_bytes, NDEP * PAD)
        await setup.close()
        b = await self.client(srv, key=key_b)
        brec = self.assertOk(await b.call("rrext_deploy_add",
                                          pipeline=pipeline("mine")))
        await self.assertAlive(b)

        a = await RawWS(srv.port).connect()
        await a.handshake()
        await a.auth(key_a)
        pid = srv.proc.pid
        await asyncio.sleep(0.2)
        rss0 = vm_rss_kib(pid)
        m0 = await metrics(srv)
        lists0 = requests_ok(m0, "rrext_deploy_list")

        # One 64 KiB block of ~800 list requests, built once and written
        # over and over (A never reads, so repeated seqs do not matter):
        # building frames in the loop would hog this process's event loop
        # and show up as B's latency.
        frames = [a.frame(a.request_text("rrext_deploy_list")[1])
                  for _ in range(800)]
        block = b"".join(frames)
        sent = 0
        last_progress = [time.monotonic()]

        async def flood():
            nonlocal sent
            while True:
                a.writer.write(block)
                await a.writer.drain()
                sent += len(frames)
                last_progress[0] = time.monotonic()
                await asyncio.sleep(0)  # let B run

        rss_max = [rss0]
        runaway = []

        async def sample_rss():
            # Guard the machine: a server that never stops reading A would
            # grow by a GiB every few seconds. Past RUNAWAY_MIB, drop A.
            while True:
                rss = vm_rss_kib(pid)
                rss_max[0] = max(rss_max[0], rss)
                if (rss - rss0) / 1024.0 > RUNAWAY_MIB and not runaway:
                    runaway.append(time.monotonic() - t0)
                    flooder.cancel()
                    a.drop(rst=True)
                await asyncio.sleep(0.02)

        t0 = time.monotonic()
        flooder = asyncio.ensure_future(flood())
        sampler = asyncio.ensure_future(sample_rss())
        lat, lat_at = [], []
        try:
            for i in range(NB):
                if runaway or time.monotonic() - t0 > 30:
                    break
                s = time.perf_counter()
                lat_at.append((time.monotonic() - t0) * 1000)
                if i % 2:
                    r = await b.call("rrext_deploy_status", projectId="mine")
                    self.assertEqual(self.assertOk(r), brec)
                else:
                    self.assertEqual(self.assertOk(await b.call("rrext_ping")),
                                     {"pong": True})
                lat.append((time.perf_counter() - s) * 1000)
            t_b = time.monotonic() - t0
            # A has been stuck (the kernel takes nothing more) for a while
            while (not runaway and time.monotonic() - t0 < 30 and
                   time.monotonic() - last_progress[0] < 1.0):
                await asyncio.sleep(0.1)
            stuck_for = time.monotonic() - last_progress[0]
            m1 = await metrics(srv)
            await asyncio.sleep(1.0)
            m2 = await metrics(srv)
            rss1 = vm_rss_kib(pid)
        finally:
            sampler.cancel()
            flooder.cancel()
        lists1 = requests_ok(m1, "rrext_deploy_list") - lists0
        lists2 = requests_ok(m2, "rrext_deploy_list") - lists0
        p50, p90, p99 = (percentile(lat, q) for q in (0.5, 0.9, 0.99))
        grow = (rss_max[0] - rss0) / 1024.0
        report("slow reader: list response %.2f MiB; A sent %d requests "
               "(%.2f MiB) and was stuck for %.1f s%s; server answered %d "
               "lists (%d a second later); RSS %.1f MiB -> max %.1f MiB "
               "(+%.1f MiB), %.1f MiB at the end; B: %d requests in %.2f s, "
               "p50 %.2f p90 %.2f p99 %.2f max %.2f ms; over 10 ms: %s"
               % (list_bytes / MiB, sent,
                  len(block) * sent / len(frames) / MiB,
                  stuck_for, " (DROPPED at +%.1f s: runaway RSS)" % runaway[0]
                  if runaway else "", lists1, lists2, rss0 / 1024.0,
                  rss_max[0] / 1024.0, grow, rss1 / 1024.0, len(lat), t_b,
                  p50, p90, p99, max(lat),
                  ", ".join("#%d at +%.0f ms: %.1f ms" % (i, at, ms)
                            for i, (at, ms) in enumerate(zip(lat_at, lat))
                            if ms > 10) or "none"))
        self.assertFalse(runaway, "server RSS grew past +%d MiB while A "
                         "flooded: A was never throttled" % RUNAWAY_MIB)
        self.assertEqual(len(lat), NB, "B's requests took over 30 s")
        self.assertGreater(stuck_for, 0.5, "A was never throttled: the "
                           "server kept reading its requests")
        self.assertEqual(lists2, lists1, "the server still reads A")
        self.assertLess(lists1 * list_bytes, 64 * MiB,
                        "lists answered to a client that never reads")
        self.assertLess(lists1, sent, "the server read all of A's requests")
        self.assertLess(grow, RSS_BOUND_MIB,
                        "server RSS grew by %.1f MiB" % grow)
        self.assertLess(p99, 50.0, "B's p99 latency %.2f ms" % p99)

        # Still healthy: B works, A can go, and its session is freed.
        await self.assertAlive(b)
        a.drop()
        self.assertEqual(await self.wait_connections(srv, 1, 10), 1)
        await self.assertAlive(b)
        c = await self.client(srv, key=key_a)
        self.assertEqual(len(self.assertOk(
            await c.call("rrext_deploy_list"))["deployments"]), NDEP)
        srv.stop()

    # ---------------------------------------------------------- 3

    @async_test(timeout=90)
    async def test_mid_request_disconnects_leak_nothing(self):
        """Clients vanish (FIN or RST) at the worst moments, many times
        each: inside a fragmented message, right after a big request, in the
        middle of a multi-megabyte response, during the WebSocket handshake,
        and after raw garbage. The server keeps serving, frees every session,
        and exits cleanly on SIGTERM with no LeakSanitizer/ASan report."""
        R = 24  # rounds per kind; half end in FIN, half in RST
        asan = os.environ.get("ASAN_OPTIONS", "")
        self.assertNotIn("detect_leaks=0", asan)
        srv = self.new_server(UNAUTH_CAP_RAISED)
        self.assertNotIn("detect_leaks=0", srv.env.get("ASAN_OPTIONS", ""))
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, lambda: srv.create_key("big"))
        setup = await self.client(srv, key=key)
        await self.add_many(setup, [
            ("huge%d" % i, pipeline("huge%d" % i, pad="y" * (768 * 1024)))
            for i in range(4)])
        watcher = await self.client(srv, key=key)
        self.assertOk(await watcher.call("rrext_deploy_watch"))
        list_bytes = len((await setup.call("rrext_deploy_list"))["_raw"])
        self.assertGreater(list_bytes, 3 * MiB)
        port = srv.port
        counts = {}

        async def authed():
            c = await RawWS(port).connect()
            await c.handshake()
            return await c.auth(key)

        async def frag(i):      # (a) inside a fragmented message
            c = await RawWS(port).connect()
            await c.handshake()
            if i % 3:
                await c.auth(key)
            seq, text = c.request_text("rrext_deploy_add", {
                "pipeline": pipeline("frag%d" % i, pad="f" * 300000)})
            data = text.encode()
            c.send(data[:100000], opcode=1, fin=False)
            c.send(data[100000:200000], opcode=0, fin=False)
            if i % 2:
                c.send(b"", opcode=9)  # a ping between fragments
            await c.writer.drain()
            await asyncio.sleep(0.01 * (i % 4))
            c.drop(rst=i % 2 == 0)

        async def big_request(i):  # (b) right after a big request
            c = await authed()
            _, add = c.request_text("rrext_deploy_add", {
                "pipeline": pipeline("b%03d" % i, pad="b" * (900 * 1024))})
            c.send(add)
            c.send(c.request_text("rrext_deploy_list")[1])
            c.send(c.request_text("rrext_deploy_status",
                                  {"projectId": "huge0"})[1])
            await c.writer.drain()
            if i % 3 == 0:
                await asyncio.sleep(0.05)
            c.drop(rst=i % 2 == 0)

        async def mid_response(i):  # (c) in the middle of a big response
            c = await authed()
            for _ in range(2):
                c.send(c.request_text("rrext_deploy_list")[1])
            await c.writer.drain()
            got = 0
            want = (i % 6 + 1) * 256 * 1024
            while got < want:
                chunk = await asyncio.wait_for(c.reader.read(65536), 30)
                self.assertTrue(chunk, "server closed mid-response")
                got += len(chunk)
            c.drop(rst=i % 2 == 0)

        async def handshake(i):  # (d) during the WebSocket handshake
            c = await RawWS(port).connect()
            req = RawWS.upgrade_request()
            cut = [len(req) // 3, len(req) - 2, len(req)][i % 3]
            c.writer.write(req[:cut])
            await c.writer.drain()
            if i % 4 == 0:
                await asyncio.sleep(0.02)
            c.drop(rst=i % 2 == 0)

        async def garbage(i):  # (e) raw TCP garbage
            c = await RawWS(port).connect()
            data = [os.urandom(1 + i * 97),
                    b"GET /task/service HTTP/1.1\r\n" + os.urandom(500),
                    b"\x16\x03\x01\x02\x00" + os.urandom(400),
                    b"\x81\xfe\xff\xff" + os.urandom(64)][i % 4]
            c.writer.write(data)
            await c.writer.drain()
            if i % 3 == 0:
                await asyncio.sleep(0.02)
            c.drop(rst=i % 2 == 0)

        t0 = time.monotonic()
        for kind in (frag, big_request, mid_response, handshake, garbage):
            gate = asyncio.Semaphore(8)

            async def one(i, kind=kind):
                async with gate:
                    await kind(i)
            await asyncio.gather(*(one(i) for i in range(R)))
            counts[kind.__name__] = R
            await self.assertAlive(setup)
        # and all kinds at once
        gate = asyncio.Semaphore(16)

        async def mixed(i):
            async with gate:
                await (frag, big_request, mid_response, handshake,
                       garbage)[i % 5](i + R)
        await asyncio.gather(*(mixed(i) for i in range(2 * R)))
        t_abuse = time.monotonic() - t0

        # Every dropped session is gone; the server still answers properly.
        self.assertEqual(await self.wait_connections(srv, 2, 15), 2)
        await self.assertAlive(setup)
        lst = self.assertOk(await setup.call("rrext_deploy_list"))
        names = {d["pipeline"]["project_id"] for d in lst["deployments"]}
        self.assertTrue({"huge0", "huge1", "huge2", "huge3"} <= names)
        self.assertFalse({n for n in names if n.startswith("frag")},
                         "a deployment from an unfinished message")
        self.assertEqual(len(self.assertOk(await setup.call(
            "rrext_deploy_status", projectId="huge3"))["pipeline"]["pad"]),
            768 * 1024)
        m = await metrics(srv)
        report("disconnects: %d rounds each of %s (+%d mixed) in %.2f s; "
               "%d sessions accepted; %d adds landed"
               % (R, ", ".join(counts), 2 * R, t_abuse,
                  m["rrdeploy_connections_total"],
                  requests_ok(m, "rrext_deploy_add")))
        for c in (setup, watcher):
            await c.close()
            c.check()
        srv.stop()  # SIGTERM: raises on an unclean exit or a sanitizer report
        err = srv.stderr()
        self.assertNotIn("LeakSanitizer", err)
        self.assertNotIn("AddressSanitizer", err)

    # ---------------------------------------------------------- 4

    @async_test(timeout=90)
    async def test_unauthenticated_flood_cut_off_others_unaffected(self):
        """Waves of twenty unauthenticated connections each pipeline 40
        probes and malformed messages at once: each gets exactly 20
        answers, then "Too many requests before authentication" and a 1008
        close, nothing more. An authenticated client pinging throughout
        never fails."""
        K, BURST = 20, 20
        srv = self.new_server(UNAUTH_CAP_RAISED)
        admin = await self.client(srv, key=srv.admin_key)
        stop = asyncio.Event()
        lat = []

        async def pinger():
            while not stop.is_set():
                s = time.perf_counter()
                self.assertEqual(self.assertOk(await admin.call("rrext_ping")),
                                 {"pong": True})
                lat.append((time.perf_counter() - s) * 1000)
                await asyncio.sleep(0.002)

        def message(i):
            if i % 3 == 2:
                return "{not json"
            return ('{"type":"request","seq":%d,'
                    '"command":"rrext_public_probe","arguments":{}}' % (i + 1))

        async def flooder(k):
            c = await self.client(srv, style="ts" if k % 2 else "python")
            try:
                for i in range(2 * BURST):
                    await c.send_raw(message(i))
            except Exception:
                pass  # the server may close while we are still sending
            # at most one reply past the cut-off, so a server that never
            # cuts off fails the count at once
            replies = await self.replies_until_closed(c, BURST + 2)
            code = c.closed.result() if c.is_closed() else None
            return replies, code

        ping_task = asyncio.ensure_future(pinger())
        results = []
        t0 = time.monotonic()
        while len(results) < 3 * K or time.monotonic() - t0 < 1.0:
            results += await asyncio.gather(*(flooder(k) for k in range(K)))
        t_flood = time.monotonic() - t0
        stop.set()
        await ping_task

        for replies, code in results:
            self.assertEqual(len(replies), BURST + 1, replies)
            for i, r in enumerate(replies[:BURST]):
                if i % 3 == 2:
                    self.assertErr(r, "bad_request",
                                   prefix="Malformed request: ")
                    self.assertEqual(r["request_seq"], 0)
                else:
                    self.assertOk(r)
                    self.assertEqual(r["request_seq"], i + 1)
            last = replies[BURST]
            self.assertErr(last, "unauthorized",
                           "Too many requests before authentication")
            self.assertIn(last["request_seq"], (0, BURST + 1))
            self.assertEqual(code, 1008)
        self.assertGreater(len(lat), 10)
        report("unauthenticated flood: %d connections (%d at a time) x %d "
               "messages, each cut off at message %d, in %.2f s; meanwhile %d "
               "pings, p50 %.2f p99 %.2f max %.2f ms"
               % (len(results), K, 2 * BURST, BURST + 1, t_flood, len(lat),
                  percentile(lat, 0.5), percentile(lat, 0.99), max(lat)))
        await self.assertAlive(admin)

        # The refill is 5 a second: after the burst and 1.2 s of quiet, 4
        # more pass; a renewed flood is cut within a few messages.
        c = await self.client(srv)
        for i in range(BURST):
            self.assertOk(await c.call("rrext_public_probe"))
        await asyncio.sleep(1.2)
        for i in range(4):
            self.assertOk(await c.call("rrext_public_probe"))
        try:
            for i in range(20):
                await c.send_raw(message(3 * i))
        except Exception:
            pass
        replies = await self.replies_until_closed(c, 20)
        self.assertTrue(c.is_closed(), "not cut off after 20 more messages")
        self.assertLess(len(replies), 20, replies)
        self.assertErr(replies[-1], "unauthorized",
                       "Too many requests before authentication")
        for r in replies[:-1]:
            self.assertOk(r)

        # Authenticating inside the burst lifts the limit.
        c = await self.client(srv)
        for i in range(BURST - 1):
            self.assertOk(await c.call("rrext_public_probe"))
        await c.auth(srv.admin_key)
        for i in range(3 * BURST):
            self.assertOk(await c.call("rrext_public_probe"))
        await self.assertAlive(c)
        srv.stop()

    # ---------------------------------------------------------- 5

    @async_test(timeout=60)
    async def test_silent_unauthenticated_sockets_time_out(self):
        """200 WebSocket sessions that complete the handshake and then say
        nothing are all closed by the server within a few seconds of
        --auth-timeout 1, while an authenticated client pings throughout (and
        outlives the timeout itself)."""
        N, TIMEOUT, GRACE = 200, 1, 4.0
        raise_nofile()
        srv = self.new_server(extra_args=["--auth-timeout", str(TIMEOUT)] +
                              UNAUTH_CAP_RAISED)
        admin = await self.client(srv, key=srv.admin_key)
        stop = asyncio.Event()
        lat = []

        async def pinger():
            while not stop.is_set():
                s = time.perf_counter()
                self.assertEqual(self.assertOk(await admin.call("rrext_ping")),
                                 {"pong": True})
                lat.append((time.perf_counter() - s) * 1000)
                await asyncio.sleep(0.01)

        gate = asyncio.Semaphore(50)

        async def silent(i):
            async with gate:
                c = await RawWS(srv.port).connect()
                await c.handshake()
            t = time.monotonic()
            closed = await c.read_until_eof(TIMEOUT + GRACE + 5)
            took = time.monotonic() - t
            c.drop()
            return closed, took

        ping_task = asyncio.ensure_future(pinger())
        t0 = time.monotonic()
        silent_tasks = asyncio.ensure_future(
            asyncio.gather(*(silent(i) for i in range(N))))
        # the silent sockets are there (admin + at least one of them)
        deadline = time.monotonic() + 10
        while int((await metrics(srv))["rrdeploy_connections"]) < 2:
            self.assertLess(time.monotonic(), deadline, "no silent socket seen")
            await asyncio.sleep(0.01)
        # a client arriving mid-flood authenticates and works
        late = await self.client(srv, key=srv.admin_key)
        await self.assertAlive(late)
        results = await silent_tasks
        t_all = time.monotonic() - t0
        stop.set()
        await ping_task
        took = [t for _, t in results]
        report("silent sockets: %d closed, after %.2f..%.2f s (p50 %.2f), all "
               "in %.2f s; pings meanwhile %d, p99 %.2f max %.2f ms"
               % (sum(1 for ok, _ in results if ok), min(took), max(took),
                  percentile(took, 0.5), t_all, len(lat),
                  percentile(lat, 0.99), max(lat)))
        self.assertEqual([i for i, (ok, _) in enumerate(results) if not ok],
                         [], "sockets the server never closed")
        self.assertGreaterEqual(min(took), TIMEOUT - 0.2,
                                "closed before the auth timeout")
        self.assertLess(max(took), TIMEOUT + GRACE)
        self.assertGreater(len(lat), 20)
        # the authenticated clients were not timed out
        await asyncio.sleep(TIMEOUT + 1)
        await self.assertAlive(admin)
        await self.assertAlive(late)
        self.assertEqual(await self.wait_connections(srv, 2, 5), 2)
        srv.stop()


    # ---------------------------------------------------------- 6

    @async_test(timeout=60)
    async def test_failed_commit_answers_nothing_and_keeps_serving(self):
        """A service pass whose transaction cannot commit (a test hook makes
        the commit fail, as a full disk would) acknowledges nothing: its
        connections get no reply and are closed with 1011, none of its writes
        is in the database or in the scheduler, watchers hear nothing of it,
        and the server goes on."""
        srv = self.new_server(extra_args=["--test-clock"])
        c = await self.admin(srv)
        self.assertOk(await c.call("rrext_deploy_add",
                                   pipeline=pipeline("kept"), schedule="manual"))
        watcher = await self.admin(srv)
        self.assertOk(await watcher.call("rrext_deploy_watch"))

        a = await RawWS(srv.port).connect()
        await a.handshake()
        await a.auth(srv.admin_key)
        # an add, a pause and the hook in one write: one service pass
        _, add = a.request_text("rrext_deploy_add", {
            "pipeline": pipeline("lost"), "schedule": "* * * * *"})
        _, pause = a.request_text("rrext_deploy_update", {
            "projectId": "kept", "state": "paused"})
        _, hook = a.request_text("rrtest_fail_commit")
        a.writer.write(a.frame(add) + a.frame(pause) + a.frame(hook))
        got = []
        while True:
            try:
                m = await a.read_message(15)
            except asyncio.IncompleteReadError:
                break
            got.append(m)
            if isinstance(m, tuple):
                break
        a.drop()
        self.assertEqual(got, [("close", 1011)])
        self.assertIn("could not commit the requests of this pass",
                      srv.stderr())

        # the server goes on, and nothing of that pass was kept
        self.assertErr(await c.call("rrext_deploy_status", projectId="lost"),
                       "not_found")
        st = self.assertOk(await c.call("rrext_deploy_status", projectId="kept"))
        self.assertEqual(st["state"], "active")
        names = [d["pipeline"]["project_id"] for d in
                 self.assertOk(await c.call("rrext_deploy_list"))["deployments"]]
        self.assertEqual(names, ["kept"])
        # the scheduler forgot "lost" too: the next minutes fire nothing
        r = self.assertOk(await c.call("rrtest_clock", advance=120))
        self.assertEqual(r["fired"], 0)
        # and the hook is off again: a later pass commits, and the watcher's
        # first event is that one
        self.assertOk(await c.call("rrext_deploy_update", projectId="kept",
                                   state="paused"))
        ev = await watcher.wait_event(lambda b: b["action"] == "state_changed", 10)
        self.assertEqual(ev["body"]["state"], "paused")
        self.assertEqual([e["body"]["action"] for e in watcher.events],
                         ["state_changed"])

if __name__ == "__main__":
    unittest.main()
