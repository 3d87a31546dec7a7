"""Hostile and odd input over a real WebSocket (docs/protocol.md §1-2, §9-10):
malformed and non-object JSON, wrong envelope and argument types, nesting and
size limits, unknown commands, binary and fragmented frames, WebSocket pings,
paths other than the WebSocket path. After every recoverable error the
connection must stay usable (a ping still gets a pong)."""

import asyncio
import http.client
import os
import socket
import unittest

import websockets
import websockets.exceptions

from harness import ServerTest, async_test, pipeline

MAX_MESSAGE = 16 * 1024 * 1024
UNAUTH_MESSAGE = 64 * 1024
MAX_DEPTH = 64


class BadInputTest(ServerTest):

    async def expect_unmatched(self, c, text):
        """Send text whose seq the server cannot know; the reply comes with
        request_seq 0."""
        await c.send_raw(text)
        r = await c.recv_raw(30)
        self.assertIsNotNone(r, "connection closed instead of answering")
        return r

    # ------------------------------------------------------------- JSON

    @async_test()
    async def test_malformed_json(self):
        for authed in (False, True):
            c = await (self.admin() if authed else self.client())
            for i, text in enumerate(("{not json", "{", "", " ", "}", '{"type":"request",',
                         '{"type":"request","seq":1,"command":"rrext_ping"',
                         "{'type':'request'}", '{"a":1}x', "[1,2", "nul",
                         '{"seq":1,"command":"rrext_ping",}',
                         '{"type":"request","seq":01,"command":"rrext_ping"}',
                         '{"type":"request","seq":NaN,"command":"rrext_ping"}',
                         '{"s":"\x01"}', '{"s":"\\x"}', '{"s":"\\u12"}')):
                if not authed and i % 8 == 7:
                    # unauthenticated connections get a small burst of
                    # messages (see test_unauthenticated_flood_is_cut_off)
                    c = await self.client()
                r = await self.expect_unmatched(c, text)
                self.assertErr(r, "bad_request", prefix="Malformed request: ")
                # 0 when unknown; a seq salvaged from a broken message is
                # fine too (it answers the caller's pending request)
                allowed = {0, 1} if '"seq":' in text else {0}
                self.assertIn(r["request_seq"], allowed, (text, r))
                if authed:
                    await self.assertAlive(c)
                else:  # still open and still unauthenticated
                    self.assertOk(await c.call("rrext_public_probe"))

    @async_test()
    async def test_unauthenticated_flood_is_cut_off(self):
        c = await self.client()
        for i in range(20):
            r = await self.expect_unmatched(c, "{not json")
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
        r = await self.expect_unmatched(c, "{not json")
        self.assertErr(r, "unauthorized",
                       message="Too many requests before authentication")
        await self.assertClosedAfter(c)
        # authenticated connections are not limited this way
        a = await self.admin()
        for i in range(100):
            r = await self.expect_unmatched(a, "{not json")
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
        await self.assertAlive(a)

    @async_test()
    async def test_non_object_json(self):
        c = await self.admin()
        for text in ("[1,2]", "[]", "42", '"str"', "null", "true", "-0.5e3",
                     '[{"type":"request","seq":5,"command":"rrext_ping"}]'):
            r = await self.expect_unmatched(c, text)
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
            self.assertEqual(r["request_seq"], 0)
            await self.assertAlive(c)

    @async_test()
    async def test_bad_envelope_fields(self):
        c = await self.admin()
        for text in ('{"type":"request","command":"rrext_ping"}',
                     '{"type":"request","seq":"1","command":"rrext_ping"}',
                     '{"type":"request","seq":1.5,"command":"rrext_ping"}',
                     '{"type":"request","seq":null,"command":"rrext_ping"}',
                     '{"type":"request","seq":[1],"command":"rrext_ping"}'):
            r = await self.expect_unmatched(c, text)
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
            self.assertIn("seq", r["message"])
            self.assertEqual(r["request_seq"], 0)
            await self.assertAlive(c)
        # command not a string: answered with the seq
        seq = c.next_seq()
        r = await c.send_expect('{"type":"request","seq":%d,"command":5}' % seq,
                                seq)
        self.assertErr(r, "bad_request", prefix="Malformed request: ")
        # arguments not an object
        for args in ("[]", "[1]", '"x"', "3", "true"):
            seq = c.next_seq()
            r = await c.send_expect(
                '{"type":"request","seq":%d,"command":"rrext_deploy_list",'
                '"arguments":%s}' % (seq, args), seq)
            self.assertErr(r, "bad_request", "arguments must be an object")
            self.assertEqual(r["command"], "rrext_deploy_list")
        # missing / empty command
        for cmd in ('', ',"command":""'):
            seq = c.next_seq()
            r = await c.send_expect('{"type":"request","seq":%d%s}' % (seq, cmd),
                                    seq)
            self.assertErr(r, "bad_request", "Invalid command: ")
        await self.assertAlive(c)

    @async_test()
    async def test_seq_echoed_as_integer(self):
        c = await self.admin()
        for seq in (0, 1, 2 ** 31, 2 ** 53, -7):
            r = await c.send_expect(
                '{"type":"request","seq":%d,"command":"rrext_ping"}' % seq, seq)
            self.assertOk(r)
            self.assertEqual(r["request_seq"], seq)
            self.assertIn('"request_seq":%d,' % seq, r["_raw"])
        # 5.0 is the integer 5 for a JSON parser; it must come back as 5
        r = await c.send_expect(
            '{"type":"request","seq":5.0,"command":"rrext_ping"}', 5)
        self.assertEqual(r["request_seq"], 5)

    @async_test()
    async def test_non_request_types_get_no_reply(self):
        c = await self.admin()
        for text in ('{"type":"response","seq":1,"request_seq":1,"success":true}',
                     '{"type":"event","seq":2,"event":"x","body":{}}',
                     '{"type":5,"seq":3,"command":"rrext_ping"}'):
            await c.send_raw(text)
        # if any had been answered, the pong would not be the next frame
        n = len(c.frames)
        await self.assertAlive(c)
        self.assertEqual(len(c.frames), n + 1, c.frames[n:])
        self.assertTrue(c.unmatched.empty())

    @async_test()
    async def test_unknown_command(self):
        c = await self.admin()
        for cmd in ("rrext_bogus", "initialize_x", "launch", "RREXT_PING",
                    "rrext_deploy_run2", "rrext_ping ", "\u00e9\U0001F600",
                    "x" * 5000):
            r = await c.call(cmd)
            self.assertErr(r, "bad_request", "Invalid command: " + cmd)
            self.assertEqual(r["command"], cmd)
        # a NUL inside the command name
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type":"request","seq":%d,"command":"rrext_ping\\u0000x"}' % seq,
            seq)
        self.assertErr(r, "bad_request", prefix="Invalid command: ")
        self.assertEqual(r["command"], "rrext_ping\x00x")
        await self.assertAlive(c)

    @async_test()
    async def test_wrong_argument_types(self):
        c = await self.admin()
        cases = [
            ("rrext_deploy_add", {"pipeline": "p"}, "pipeline must be an object"),
            ("rrext_deploy_add", {"pipeline": ["p"]},
             "pipeline must be an object"),
            ("rrext_deploy_add", {"pipeline": 1}, "pipeline must be an object"),
            ("rrext_deploy_add", {"pipeline": 1.5},
             "pipeline must be an object"),
            ("rrext_deploy_add", {"pipeline": pipeline("wt"), "schedule": 1},
             "schedule must be a string"),
            ("rrext_deploy_add", {"pipeline": pipeline("wt"), "schedule": None},
             "schedule must be a string"),
            ("rrext_deploy_add", {"pipeline": pipeline("wt"), "schedule": []},
             "schedule must be a string"),
            ("rrext_deploy_add", {"pipeline": {"project_id": 5}},
             "pipeline.project_id must be a string"),
            ("rrext_deploy_add", {"pipeline": {"project_id": {"a": 1}}},
             "pipeline.project_id must be a string"),
            ("rrext_deploy_status", {"projectId": 5},
             "projectId must be a string"),
            ("rrext_deploy_remove", {"projectId": True},
             "projectId must be a string"),
            ("rrext_deploy_update", {"projectId": 5.5},
             "projectId must be a string"),
        ]
        for cmd, args, msg in cases:
            for style in ("python", "ts"):
                r = await c.request(cmd, args, style=style)
                self.assertErr(r, "bad_request", msg)
        await self.assertAlive(c)
        self.assertErr(await c.call("rrext_deploy_status", projectId="wt"),
                       "not_found")

    @async_test()
    async def test_nul_in_ids_is_bad_request(self):
        """A NUL inside an id is refused with a message naming the argument:
        a C string stops at the NUL, so "dupA\\0zzz" must not reach dupA."""
        c = await self.admin()
        self.assertOk(await c.call("rrext_deploy_add",
                                   pipeline=pipeline("dupA")))
        nul = "dupA\u0000zzz"
        cases = (("rrext_deploy_status", {"projectId": nul}, "projectId"),
                 ("rrext_deploy_update", {"projectId": nul, "state": "paused"},
                  "projectId"),
                 ("rrext_deploy_remove", {"projectId": nul}, "projectId"),
                 ("rrext_deploy_run", {"projectId": nul}, "projectId"),
                 ("rrext_deploy_cancel", {"projectId": nul}, "projectId"),
                 ("rrext_deploy_runs", {"projectId": nul}, "projectId"),
                 ("rrext_deploy_watch", {"projectId": nul}, "projectId"),
                 ("rrext_deploy_add", {"pipeline": pipeline(nul)},
                  "pipeline.project_id"))
        for cmd, args, name in cases:
            for style in ("python", "ts"):
                r = await c.request(cmd, args, style=style)
                self.assertIn("\\u0000", c.sent[-1])
                msg = self.assertErr(r, "bad_request")
                self.assertTrue(msg.startswith(name + " must not contain"),
                                (cmd, msg))
        # dupA itself was neither paused, removed nor run
        st = self.assertOk(await c.call("rrext_deploy_status", projectId="dupA"))
        self.assertEqual(st["state"], "active")
        self.assertIsNone(st["last_run"])
        runs = self.assertOk(await c.call("rrext_deploy_runs", projectId="dupA"))
        self.assertEqual(runs["runs"], [])
        self.assertErr(await c.call("rrext_deploy_status", projectId=nul),
                       "bad_request",
                       "projectId must not contain a NUL character")

    @async_test()
    async def test_invalid_utf8_and_surrogates(self):
        c = await self.admin()
        # invalid UTF-8 can only travel in a binary frame
        for raw in (b'{"type":"request","seq":%d,"command":"rrext_ping",'
                    b'"arguments":{"x":"\xff"}}',
                    b'{"type":"request","seq":%d,"command":"rrext_ping",'
                    b'"arguments":{"x":"\xc3"}}',
                    b'{"type":"request","seq":%d,"command":"rrext_ping",'
                    b'"arguments":{"x":"\xed\xa0\x80"}}'):
            seq = c.next_seq()
            await c.send_raw(raw % seq)
            r = await c.recv_raw()
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
            await self.assertAlive(c)
        # lone surrogate escapes in a pipeline are valid JSON text: kept
        for esc in ("\\ud800", "\\udc00x", "\\ud83d\\u0041"):
            seq = c.next_seq()
            text = ('{"type":"request","seq":%d,"command":"rrext_deploy_add",'
                    '"arguments":{"pipeline":{"project_id":"sur%d","s":"%s"}}}'
                    % (seq, seq, esc))
            await c.send_raw(text)
            r = None
            while r is None or r["request_seq"] not in (0, seq):
                r = await c.recv_raw()
            self.assertOk(r)
            st = await c.call("rrext_deploy_status", projectId="sur%d" % seq)
            self.assertIn('"s":"%s"' % esc, st["_raw"])
            await self.assertAlive(c)

    # ------------------------------------------------------------- nesting

    def nested_ping(self, seq, extra_depth):
        """A ping whose total nesting depth (envelope object = 1, arguments
        = 2) is 2 + extra_depth."""
        inner = "[" * extra_depth + "]" * extra_depth
        return ('{"type":"request","seq":%d,"command":"rrext_ping",'
                '"arguments":{"x":%s}}' % (seq, inner))

    @async_test()
    async def test_nesting_limit(self):
        c = await self.admin()
        seq = c.next_seq()
        r = await c.send_expect(self.nested_ping(seq, MAX_DEPTH - 2), seq)
        self.assertOk(r)
        seq = c.next_seq()
        r = await c.send_expect(self.nested_ping(seq, MAX_DEPTH - 1), seq)
        self.assertErr(r, "bad_request",
                       "Malformed request: nesting deeper than 64 levels")
        await self.assertAlive(c)
        # very deep (a stack-overflow attempt) and unbalanced
        for depth in (1000, 100000):
            seq = c.next_seq()
            r = await c.send_expect(self.nested_ping(seq, depth), seq)
            self.assertErr(r, "bad_request",
                           "Malformed request: nesting deeper than 64 levels")
        for text in ("[" * 200000, "{\"a\":" * 100000):
            r = await self.expect_unmatched(c, text)
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
        await self.assertAlive(c)
        # a deep pipeline in add
        p = '{"project_id":"deep","x":%s}' % ("[" * 70 + "]" * 70)
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type":"request","seq":%d,"command":"rrext_deploy_add",'
            '"arguments":{"pipeline":%s}}' % (seq, p), seq)
        self.assertErr(r, "bad_request",
                       "Malformed request: nesting deeper than 64 levels")
        self.assertErr(await c.call("rrext_deploy_status", projectId="deep"),
                       "not_found")
        # the deepest pipeline that fits round-trips (envelope, arguments,
        # pipeline = 3 levels)
        inner = "[" * (MAX_DEPTH - 4) + "]" * (MAX_DEPTH - 4)
        p = '{"project_id":"deep_ok","x":%s}' % inner
        seq = c.next_seq()
        r = await c.send_expect(
            '{"type":"request","seq":%d,"command":"rrext_deploy_add",'
            '"arguments":{"pipeline":%s}}' % (seq, p), seq)
        self.assertOk(r)
        self.assertIn('"pipeline":' + p, r["_raw"])

    # ------------------------------------------------------------- sizes

    @async_test(timeout=120)
    async def test_oversized_message_closes_1009(self):
        c = await self.admin()
        other = await self.admin()
        big = ('{"type":"request","seq":1,"command":"rrext_ping",'
               '"arguments":{"pad":"%s"}}')
        text = big % ("x" * (MAX_MESSAGE + 1 - len(big % "")))
        self.assertEqual(len(text), MAX_MESSAGE + 1)
        try:
            await c.send_raw(text)
        except websockets.exceptions.ConnectionClosed:
            pass
        code = await c.wait_closed(60)
        self.assertEqual(code, 1009)
        await self.assertAlive(other)

    @async_test(timeout=120)
    async def test_oversized_fragmented_message_closes_1009(self):
        c = await self.admin()
        chunk = " " * (1024 * 1024)
        parts = ['{"type":"request","seq":1,"command":"rrext_ping"']
        parts += [chunk] * 16 + [" }"]
        try:
            await c.send_raw(iter(parts))
        except websockets.exceptions.ConnectionClosed:
            pass
        self.assertEqual(await c.wait_closed(60), 1009)

    @async_test(timeout=120)
    async def test_message_exactly_at_limit_accepted(self):
        c = await self.admin()
        head = '{"type":"request","seq":%d,"command":"rrext_ping"' % 2
        text = head + " " * (MAX_MESSAGE - len(head) - 1) + "}"
        self.assertEqual(len(text), MAX_MESSAGE)
        c.seq = 1
        r = await c.send_expect(text, 2, timeout=90)
        self.assertEqual(self.assertOk(r), {"pong": True})
        await self.assertAlive(c)

    @async_test()
    async def test_message_limit_before_auth(self):
        """Before authentication a message may be at most 64 KiB: one over
        closes the connection with 1009 (the frame header says how big it
        will be, so nothing is buffered), one at the limit is answered."""
        head = '{"type":"request","seq":1,"command":"rrext_public_probe"'
        for size, ok in ((UNAUTH_MESSAGE, True), (UNAUTH_MESSAGE + 1, False)):
            c = await self.client()
            text = head + " " * (size - len(head) - 1) + "}"
            self.assertEqual(len(text), size)
            if ok:
                self.assertOk(await c.send_expect(text, 1))
                await c.auth(self.server.admin_key)
                await self.assertAlive(c)
            else:
                try:
                    await c.send_raw(text)
                except websockets.exceptions.ConnectionClosed:
                    pass
                self.assertEqual(await c.wait_closed(10), 1009)
        # fragmented: the fragments add up
        c = await self.client()
        parts = [head] + [" " * 16384] * 4 + ["}"]
        try:
            await c.send_raw(iter(parts))
        except websockets.exceptions.ConnectionClosed:
            pass
        self.assertEqual(await c.wait_closed(10), 1009)

    @async_test()
    async def test_big_request_right_behind_auth(self):
        """An SDK may send auth and, without waiting, a big request: the
        request is judged once the auth is, so it gets the normal limit. If
        the auth fails, the auth's refusal is still delivered and the big
        request is dropped."""
        key = self.server.admin_key
        p = pipeline("behind_auth", pad="b" * (900 * 1024))
        c = await self.client()
        fa, sa = c.start("auth", {"auth": key})
        fb, sb = c.start("rrext_deploy_add", {"pipeline": p})
        await asyncio.gather(sa, sb)
        self.assertOk(await asyncio.wait_for(fa, 30))
        self.assertEqual(self.assertOk(await asyncio.wait_for(fb, 30))
                         ["pipeline"], p)
        c = await self.client()
        fa, sa = c.start("auth", {"auth": "rrk_" + "0" * 64})
        p2 = pipeline("behind_bad_auth", pad="b" * (900 * 1024))
        fb, sb = c.start("rrext_deploy_add", {"pipeline": p2})
        await asyncio.gather(sa, sb, return_exceptions=True)
        self.assertErr(await asyncio.wait_for(fa, 30), "unauthorized",
                       "Invalid API key")
        self.assertEqual(await c.wait_closed(10), 1008)
        self.assertIsInstance(fb.exception(), ConnectionError)
        a = await self.admin()
        self.assertErr(await a.call("rrext_deploy_status",
                                    projectId="behind_bad_auth"), "not_found")

    # ------------------------------------------------------------- frames

    @async_test()
    async def test_ts_binary_frame(self):
        c = await self.admin()
        # JSON header + "\n" + raw bytes (arguments.data)
        seq = c.next_seq()
        payload = bytes(range(256)) + b"\n\n{not json" + os.urandom(4096)
        r = await c.send_expect(
            b'{"type":"request","seq":%d,"command":"rrext_ping",'
            b'"arguments":{}}\n' % seq + payload, seq)
        self.assertEqual(self.assertOk(r), {"pong": True})
        # binary frame without "\n": plain JSON
        seq = c.next_seq()
        r = await c.send_expect(
            ('{"type":"request","seq":%d,"command":"rrext_deploy_add",'
             '"arguments":{"pipeline":{"project_id":"bin\u00e9"}}}' % seq)
            .encode("utf-8"), seq)
        self.assertEqual(r["body"]["pipeline"]["project_id"], "bin\u00e9")
        # binary frame with a header then an empty data part
        seq = c.next_seq()
        r = await c.send_expect(
            b'{"type":"request","seq":%d,"command":"rrext_ping"}\n' % seq, seq)
        self.assertOk(r)
        # a binary frame whose header is bad
        await c.send_raw(b"{oops\n" + os.urandom(100))
        r = await c.recv_raw()
        self.assertErr(r, "bad_request", prefix="Malformed request: ")
        await self.assertAlive(c)

    @async_test()
    async def test_fragmented_messages(self):
        c = await self.client()
        key = self.server.admin_key
        text = ('{"type":"request","seq":1,"command":"auth",'
                '"arguments":{"auth":"%s"}}' % key)
        # split into many continuation frames, including empty fragments
        parts = [text[i:i + 7] for i in range(0, len(text), 7)]
        parts.insert(3, "")
        r = await c.send_expect(iter(parts), 1)
        self.assertOk(r)
        c.seq = 1
        # a multi-byte character split across fragments (text frames are
        # UTF-8 only as a whole message)
        seq = c.next_seq()
        msg = ('{"type":"request","seq":%d,"command":"rrext_deploy_add",'
               '"arguments":{"pipeline":{"project_id":"frag\U0001F600"}}}'
               % seq).encode("utf-8")
        cut = msg.index(b"\xf0") + 2
        r = await c.send_expect(iter([msg[:cut], msg[cut:]]), seq)
        self.assertEqual(r["body"]["pipeline"]["project_id"], "frag\U0001F600")
        # a large fragmented message (well under the limit)
        seq = c.next_seq()
        p = '{"project_id":"fragbig","pad":"%s"}' % ("y" * 300000)
        whole = ('{"type":"request","seq":%d,"command":"rrext_deploy_add",'
                 '"arguments":{"pipeline":%s}}' % (seq, p))
        parts = [whole[i:i + 65536] for i in range(0, len(whole), 65536)]
        r = await c.send_expect(iter(parts), seq)
        self.assertOk(r)
        self.assertIn('"pipeline":' + p, r["_raw"])
        await self.assertAlive(c)

    @async_test()
    async def test_control_frames_between_fragments(self):
        """RFC 6455 §5.4: control frames may be injected in the middle of a
        fragmented message."""
        from websockets.frames import OP_CONT, OP_PING, OP_TEXT, OP_BINARY
        c = await self.admin()
        seq = c.next_seq()
        text = ('{"type":"request","seq":%d,"command":"rrext_deploy_add",'
                '"arguments":{"pipeline":{"project_id":"ctl","x":"%s"}}}'
                % (seq, "q" * 1000)).encode()
        fut = asyncio.get_running_loop().create_future()
        c.pending[seq] = fut
        await c.ws.write_frame(False, OP_TEXT, text[:100])
        await c.ws.write_frame(True, OP_PING, b"mid")
        await c.ws.write_frame(False, OP_CONT, text[100:600])
        await c.ws.write_frame(True, OP_PING, b"mid2")
        await c.ws.write_frame(True, OP_CONT, text[600:])
        r = await asyncio.wait_for(fut, 10)
        self.assertEqual(r["body"]["pipeline"]["x"], "q" * 1000)
        # a fragmented binary (TS) frame whose "\n" is in a later fragment
        seq = c.next_seq()
        fut = asyncio.get_running_loop().create_future()
        c.pending[seq] = fut
        head = b'{"type":"request","seq":%d,"command":"rrext_ping"}' % seq
        await c.ws.write_frame(False, OP_BINARY, head[:10])
        await c.ws.write_frame(False, OP_CONT, head[10:])
        await c.ws.write_frame(True, OP_CONT, b"\n" + os.urandom(5000))
        self.assertOk(await asyncio.wait_for(fut, 10))
        await self.assertAlive(c)

    @async_test()
    async def test_invalid_utf8_in_text_frame(self):
        """Refused either as a malformed request (connection kept) or by
        failing the connection with 1007 (RFC 6455 §8.1); never accepted."""
        from websockets.frames import OP_TEXT
        c = await self.admin()
        seq = c.next_seq()
        await c.ws.write_frame(
            True, OP_TEXT,
            b'{"type":"request","seq":%d,"command":"rrext_deploy_add",'
            b'"arguments":{"pipeline":{"project_id":"u\xff"}}}' % seq)
        r = await c.recv_raw(10)
        if r is None:
            self.assertEqual(await c.wait_closed(10), 1007)
        else:
            self.assertErr(r, "bad_request", prefix="Malformed request: ")
            await self.assertAlive(c)
        a = await self.admin()
        lst = self.assertOk(await a.call("rrext_deploy_list"))["deployments"]
        self.assertNotIn("u\ufffd", [d["pipeline"]["project_id"] for d in lst])

    @async_test()
    async def test_ws_ping_pong_echoes_payload(self):
        c = await self.client()
        for payload in (b"", b"abc", os.urandom(125)):
            waiter = await c.ws.ping(payload)
            await asyncio.wait_for(waiter, 10)
        await c.auth(self.server.admin_key)
        waiter = await c.ws.ping(b"after-auth")
        await asyncio.wait_for(waiter, 10)

    @async_test()
    async def test_no_raw_newline_in_any_frame(self):
        """Values full of newlines come back escaped; checked centrally too."""
        c = await self.admin()
        pid = "nl\nid"
        r = await c.call("rrext_deploy_add",
                         pipeline={"project_id": "nl", "d": "a\nb\r\n\u2028"})
        self.assertOk(r)
        r = await c.call("rrext_deploy_status", projectId=pid)
        self.assertErr(r, "not_found", "Deployment not found: " + pid)
        r = await c.call("rrext_deploy_add", pipeline=pipeline("x"),
                         schedule="0 0 * * *\n0 1 * * *")
        self.assertErr(r, "bad_request")
        r = await c.call("rrext\nbogus")
        self.assertErr(r, "bad_request", "Invalid command: rrext\nbogus")
        for f in c.frames:
            self.assertNotIn("\n", f)
            self.assertNotIn("\r", f)

    @async_test()
    async def test_connection_survives_error_storm(self):
        """Many different errors interleaved with successes, pipelined."""
        c = await self.admin()
        futs, sends = [], []
        for i in range(50):
            for cmd, args in (("rrext_deploy_status", {"projectId": "none"}),
                              ("rrext_nope", {}),
                              ("rrext_deploy_add", {"pipeline": "x"}),
                              ("rrext_ping", {})):
                f, s = c.start(cmd, args)
                futs.append(f)
                sends.append(s)
        for s in sends:
            await s
        rs = await asyncio.wait_for(asyncio.gather(*futs), 60)
        self.assertEqual(sum(1 for r in rs if r["success"]), 50)
        await self.assertAlive(c)

    # ------------------------------------------------------------- paths

    @async_test()
    async def test_other_paths_are_not_websockets(self):
        for path in ("/healthz", "/", "/task/service/", "/task", "/models",
                     "/task/servicex", "/TASK/SERVICE"):
            with self.assertRaises((websockets.exceptions.InvalidStatusCode,
                                    websockets.exceptions.InvalidHandshake,
                                    ConnectionError, OSError), msg=path):
                ws = await websockets.connect(
                    self.server.url(path), compression=None, open_timeout=10,
                    close_timeout=2)
                await ws.close()
        # plain HTTP to a non-WebSocket path gets an HTTP answer, not a 101
        def get(path):
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port,
                                              timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status
        for path in ("/healthz", "/task/service", "/nope"):
            status = await asyncio.get_running_loop().run_in_executor(
                None, get, path)
            self.assertNotEqual(status, 101)
            self.assertGreaterEqual(status, 200)
        # and the server still serves WebSockets
        c = await self.admin()
        await self.assertAlive(c)

    @async_test()
    async def test_garbage_tcp_does_not_hurt(self):
        def garbage():
            for data in (b"\x00" * 100, b"GET / HTTP/1.1\r\n\r\n",
                         b"\x16\x03\x01\x02\x00" + os.urandom(300),
                         b"GET /task/service HTTP/1.1\r\nHost: x\r\n"
                         b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n"):
                s = socket.create_connection(("127.0.0.1", self.server.port),
                                             timeout=5)
                try:
                    s.sendall(data)
                    try:
                        s.recv(4096)
                    except (socket.timeout, ConnectionError):
                        pass
                finally:
                    s.close()
        await asyncio.get_running_loop().run_in_executor(None, garbage)
        c = await self.admin()
        await self.assertAlive(c)

    @async_test()
    async def test_handshake_like_the_sdks(self):
        """No subprotocol is returned; the TS client's permessage-deflate
        offer works whether declined or accepted."""
        c = await self.admin()
        self.assertIsNone(c.ws.subprotocol)
        t = await self.client(style="ts", compression="deflate",
                              key=self.server.admin_key)
        self.assertIsNone(t.ws.subprotocol)
        p = pipeline("deflate", pad="z" * 50000)
        rec = self.assertOk(await t.call("rrext_deploy_add", pipeline=p))
        self.assertEqual(rec["pipeline"], p)
        await self.assertAlive(t)


if __name__ == "__main__":
    unittest.main()
