"""Authentication and session lifecycle over a real WebSocket (docs/protocol.md §4,
docs/operations.md §4): auth success/failure messages and closes, the pre-auth gate,
deauth, revocation and expiry of live sessions, the attempt cap, the
unauthenticated timeout, ROCKETRIDE_APIKEY, ConnectResult shape."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import (ServerTest, async_test, binary_path, pipeline,
                     sanitizer_env)

PERMS_BOTH = ["task.control", "task.monitor"]


class AuthTest(ServerTest):
    SERVER_ARGS = ("--auth-timeout", "2")

    def check_connect_result(self, body, user, perms):
        self.assertEqual(body["userId"], user)
        self.assertEqual(body["userToken"], "")
        self.assertEqual(body["defaultTeam"], "default")
        self.assertEqual(body["capabilities"], ["rrdeploy"])
        teams = [t for o in body["organizations"] for t in o["teams"]
                 if t["id"] == body["defaultTeam"]]
        self.assertEqual(len(teams), 1, body)
        self.assertEqual(sorted(teams[0]["permissions"]), sorted(perms))

    @async_test()
    async def test_admin_bootstrap_key_authenticates(self):
        self.assertRegex(self.server.admin_key, r"^rrk_[0-9a-f]{64}$")
        c = await self.client()
        r = await c.auth(self.server.admin_key)
        self.check_connect_result(r["body"], "admin", PERMS_BOTH)
        self.assertEqual(r["request_seq"], 1)
        self.assertEqual(r["command"], "auth")
        await self.assertAlive(c)

    @async_test()
    async def test_bootstrap_key_listed_and_not_logged_again(self):
        keys = self.server.list_keys()
        admin = [k for k in keys if k["user"] == "admin"]
        self.assertEqual(len(admin), 1, keys)
        self.assertEqual(admin[0]["id"], self.server.admin_key_id)
        self.assertIsNone(admin[0]["revoked_at"])
        for k in keys:
            self.assertEqual(set(k), {"id", "user", "label", "perms",
                                      "created_at", "expires_at",
                                      "revoked_at"})
        # the key text appears exactly once in stderr (the bootstrap line)
        self.assertEqual(self.server.stderr().count(self.server.admin_key), 1)

    @async_test()
    async def test_ts_style_auth_and_bearer_prefix(self):
        c = await self.client(style="ts")
        r = await c.auth("Bearer " + self.server.admin_key)
        self.check_connect_result(r["body"], "admin", PERMS_BOTH)
        await self.assertAlive(c)

    @async_test()
    async def test_created_key_perms_in_connect_result(self):
        for perms, want in (("task.monitor", ["task.monitor"]),
                            ("task.control", ["task.control"]),
                            ("task.control,task.monitor", PERMS_BOTH)):
            c = await self.user_client(perms=perms)
            r = await c.call("auth", auth=c.key)
            self.check_connect_result(r["body"], c.user, want)

    @async_test()
    async def test_invalid_key_rejected_and_closed(self):
        for bad in ("rrk_" + "0" * 64, "nope", "MYAPIKEY",
                    self.server.admin_key[:-1] + "x",
                    self.server.admin_key + "0"):
            c = await self.client()
            r = await c.auth(bad, check=False)
            self.assertErr(r, "unauthorized", "Invalid API key")
            await c.wait_closed(10)

    @async_test()
    async def test_empty_or_missing_credential(self):
        for args in ({"auth": ""}, {}, {"auth": None}, {"auth": "Bearer "}):
            c = await self.client()
            r = await c.request("auth", args)
            self.assertErr(r, "unauthorized", "No authorization provided")
            await c.wait_closed(10)

    @async_test()
    async def test_non_string_credential(self):
        c = await self.client()
        r = await c.request("auth", {"auth": 12345})
        self.assertErr(r, "unauthorized")
        self.assertIn("auth", r["message"])
        await c.wait_closed(10)

    @async_test()
    async def test_pre_auth_gate(self):
        # public commands work before auth and keep the connection
        c = await self.client()
        r = await c.call("rrext_public_probe")
        body = self.assertOk(r)
        self.assertIsInstance(body["version"], str)
        self.assertIsInstance(body["capabilities"], list)
        # unknown public command: Invalid command, connection kept
        r = await c.call("rrext_public_nope")
        self.assertErr(r, "bad_request", "Invalid command: rrext_public_nope")
        r = await c.call("rrext_public_probe")
        self.assertOk(r)
        # anything else: Not authenticated, then close
        for cmd in ("rrext_deploy_list", "rrext_ping", "deauth",
                    "rrext_deploy_add", "rrext_bogus", "rrext_deploy_preview"):
            c = await self.client()
            args = {"pipeline": pipeline("gate")} if cmd.endswith("add") else {}
            r = await c.request(cmd, args)
            self.assertErr(r, "unauthorized", "Not authenticated")
            self.assertEqual(r["command"], cmd)
            await c.wait_closed(10)
        # the refused add wrote nothing
        a = await self.admin()
        r = await a.call("rrext_deploy_status", projectId="gate")
        self.assertErr(r, "not_found")

    @async_test()
    async def test_nothing_processed_after_a_closing_reply(self):
        """Requests pipelined behind a refused one (gate or failed auth) are
        not processed, even a valid auth followed by an add."""
        key = self.server.admin_key
        for first in ({"cmd": "rrext_deploy_list", "args": {}},
                      {"cmd": "auth", "args": {"auth": "wrong"}},
                      {"cmd": "auth", "args": {"auth": ""}}):
            c = await self.client()
            pid = "after_close_%d" % len(self.clients)
            f1, s1 = c.start(first["cmd"], first["args"])
            f2, s2 = c.start("auth", {"auth": key})
            f3, s3 = c.start("rrext_deploy_add",
                             {"pipeline": pipeline(pid)})
            # sent back to back; later sends may fail once the server closed
            await asyncio.gather(s1, s2, s3, return_exceptions=True)
            await c.wait_closed(10)
            for f in (f1, f2, f3):
                self.assertTrue(f.done())
            if not f1.exception():
                self.assertErr(f1.result(), "unauthorized")
            for f in (f2, f3):
                self.assertIsInstance(f.exception(), ConnectionError)
            a = await self.admin()
            self.assertErr(await a.call("rrext_deploy_status", projectId=pid),
                           "not_found")

    @async_test()
    async def test_refusal_delivered_when_requests_pipelined(self):
        """An SDK app issuing concurrent calls on a session the server is
        about to close (gate, revoked or expired key) must still get the
        refusal text, not a bare transport error. The server closes the TCP
        connection right after its Close frame, without waiting for the
        client's Close; requests still in flight then make the client's
        transport fail and drop the already-received reply (1006).
        Its own server: its 20 failed auths in a row would use up most of
        the failed-auth burst of 127.0.0.1 (30) on the shared one."""
        srv = self.new_server()
        lost = 0
        rounds = 30
        firsts = (("rrext_deploy_list", {}), ("auth", {"auth": "wrong"}),
                  ("auth", {"auth": "rrk_" + "0" * 64}))
        for i in range(rounds):
            c = await self.client(srv)
            futs = []
            sends = []
            for cmd, args in (firsts[i % 3], ("rrext_ping", {}),
                              ("rrext_ping", {})):
                f, s = c.start(cmd, args)
                futs.append(f)
                sends.append(s)
            await asyncio.gather(*sends, return_exceptions=True)
            code = await c.wait_closed(10)
            if futs[0].exception():
                lost += 1
                last = (code, futs[0].exception())
        self.assertEqual(lost, 0, "the refusal reply was lost in "
                         "%d of %d rounds (last: close code %s, %r)"
                         % (lost, rounds, last[0], last[1]) if lost else "")

    @async_test()
    async def test_type_member_optional(self):
        c = await self.client()
        r = await c.send_expect('{"seq":1,"command":"auth","arguments":'
                                '{"auth":"%s"}}' % self.server.admin_key, 1)
        self.assertOk(r)
        r = await c.send_expect('{"seq":2,"command":"rrext_ping"}', 2)
        self.assertEqual(self.assertOk(r), {"pong": True})

    @async_test()
    async def test_pre_auth_gate_ts_style(self):
        c = await self.client(style="ts")
        r = await c.request("rrext_deploy_list")  # no arguments at all
        self.assertEqual(c.sent[-1], '{"type":"request","seq":1,'
                                     '"command":"rrext_deploy_list"}')
        self.assertErr(r, "unauthorized", "Not authenticated")
        await c.wait_closed(10)

    @async_test()
    async def test_deauth(self):
        c = await self.admin()
        r = await c.call("deauth")
        self.assertEqual(self.assertOk(r), {})
        # unauthenticated again, socket open: a public command still works
        self.assertOk(await c.call("rrext_public_probe"))
        # re-auth on the same connection works
        await c.auth(self.server.admin_key)
        self.assertOk(await c.call("rrext_deploy_list"))
        self.assertOk(await c.call("deauth"))
        r = await c.call("rrext_deploy_list")
        self.assertErr(r, "unauthorized", "Not authenticated")
        await c.wait_closed(10)

    @async_test()
    async def test_sdk_disconnect_sequence(self):
        """connect(): open + auth; disconnect(): deauth, await reply, close 1000."""
        for style in ("python", "ts"):
            c = await self.client(style=style)
            await c.auth(self.server.admin_key)
            self.assertEqual(self.assertOk(await c.call("deauth")), {})
            await c.ws.close(1000)
            self.assertEqual(await c.wait_closed(10), 1000)

    @async_test()
    async def test_too_many_auth_attempts(self):
        c = await self.client()
        for _ in range(5):
            await c.auth(self.server.admin_key)
        r = await c.auth(self.server.admin_key, check=False)
        self.assertErr(r, "unauthorized", "Too many authentication attempts")
        await c.wait_closed(10)
        # with deauth in between it is still the same connection's count
        c = await self.client()
        for _ in range(5):
            await c.auth(self.server.admin_key)
            self.assertOk(await c.call("deauth"))
        r = await c.auth(self.server.admin_key, check=False)
        self.assertErr(r, "unauthorized", "Too many authentication attempts")
        await c.wait_closed(10)

    @async_test()
    async def test_revoked_key_live_session(self):
        c = await self.user_client()
        other = await self.user_client()  # another user's session is untouched
        same = await self.user_client(user=c.user)  # same user, other key
        self.assertOk(await c.call("rrext_deploy_add",
                                   pipeline=pipeline("rv1")))
        kid = self.server.key_id(c.user, c.key_label)
        self.server.revoke_key(kid)
        revoked_at = time.monotonic()
        # poll with requests until the server has noticed (it polls 250 ms)
        deadline = revoked_at + 5.0
        while True:
            r = await c.call("rrext_deploy_status", projectId="rv1")
            if not r["success"]:
                break
            self.assertLess(time.monotonic(), deadline,
                            "revocation not honoured within 5 s")
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - revoked_at
        self.assertErr(r, "unauthorized", "Not authenticated")
        await c.wait_closed(10)
        self.assertLess(elapsed, 1.5, "a revocation takes effect within 1 second")
        # a new connection with the revoked key
        c2 = await self.client()
        r = await c2.auth(c.key, check=False)
        self.assertErr(r, "unauthorized", "API key revoked")
        await c2.wait_closed(10)
        await self.assertAlive(other)
        await self.assertAlive(same)
        st = self.assertOk(await same.call("rrext_deploy_status",
                                           projectId="rv1"))
        self.assertEqual(st["owner_key_id"], kid)
        revoked = [k for k in self.server.list_keys() if k["id"] == kid]
        self.assertIsNotNone(revoked[0]["revoked_at"])

    @async_test()
    async def test_revoke_by_key_text(self):
        c = await self.user_client()
        self.server.revoke_key(c.key)
        c2 = await self.client()
        r = await c2.auth(c.key, check=False)
        self.assertErr(r, "unauthorized", "API key revoked")
        await c2.wait_closed(10)

    @async_test()
    async def test_expired_key(self):
        """A key created with --expires 2s works until the server's clock
        passes its expiry (the test clock, started at the real time, moves
        instead of the test sleeping); then auth fails and a live session's
        next request is refused and closed."""
        srv = self.new_server(extra_args=["--test-clock"])
        clock = await self.admin(srv)
        user = self.unique_user()
        key = srv.create_key(user, expires="2s")
        k = [k for k in srv.list_keys() if k["user"] == user][0]
        self.assertIsNotNone(k["expires_at"])
        self.assertAlmostEqual(k["expires_at"] - k["created_at"], 2.0, delta=0.5)
        live = await self.client(srv)
        self.assertOk(await live.auth(key, check=False))
        await self.assertAlive(live)
        self.assertOk(await clock.call("rrtest_clock", set=k["expires_at"] + 0.5))
        c = await self.client(srv)
        r = await c.auth(key, check=False)
        self.assertErr(r, "unauthorized", "API key expired")
        await c.wait_closed(10)
        # the live session's next request fails and the socket closes
        r = await live.call("rrext_ping")
        self.assertErr(r, "unauthorized", "Not authenticated")
        await live.wait_closed(10)

    @async_test()
    async def test_expires_1s(self):
        srv = self.new_server(extra_args=["--test-clock"])
        clock = await self.admin(srv)
        user = self.unique_user()
        key = srv.create_key(user, expires="1s")
        k = [k for k in srv.list_keys() if k["user"] == user][0]
        self.assertAlmostEqual(k["expires_at"] - k["created_at"], 1.0, delta=0.5)
        self.assertOk(await clock.call("rrtest_clock",
                                       set=k["expires_at"] - 0.001))
        c = await self.client(srv)
        self.assertOk(await c.auth(key, check=False))
        await c.close()
        # (the listed expiry is rounded to the microsecond: step just past it)
        self.assertOk(await clock.call("rrtest_clock",
                                       set=k["expires_at"] + 0.001))
        c = await self.client(srv)
        r = await c.auth(key, check=False)
        self.assertErr(r, "unauthorized", "API key expired")
        await c.wait_closed(10)

    @async_test()
    async def test_reauth_without_monitor_ends_the_watch(self):
        """A watch lasts only while the session may monitor that user's
        deployments: a re-auth on the same connection with a key lacking
        task.monitor, or with another user's key, ends it (the auth reply is
        the usual ConnectResult); a re-auth with another key of the same user
        that has task.monitor keeps it."""
        srv = self.server
        user = self.unique_user()
        loop = asyncio.get_running_loop()

        def key(u, perms=None):
            return loop.run_in_executor(
                None, lambda: srv.create_key(u, perms=perms))
        full = await key(user)
        actor = await self.client(key=full)
        self.assertOk(await actor.call("rrext_deploy_add",
                                       pipeline=pipeline("rw1")))
        watchers = {}
        for name, k, perms in (
                ("no_monitor", await key(user, "task.control"),
                 ["task.control"]),
                ("other_user", await key(self.unique_user(), "task.monitor"),
                 ["task.monitor"]),
                ("same_user", await key(user), PERMS_BOTH)):
            w = await self.client(key=full)
            self.assertEqual(self.assertOk(await w.call("rrext_deploy_watch")),
                             {"watching": True, "projectId": None})
            r = await w.auth(k)
            self.assertEqual(r["body"]["userToken"], "")
            teams = r["body"]["organizations"][0]["teams"]
            self.assertEqual(sorted(teams[0]["permissions"]), sorted(perms))
            watchers[name] = w

        self.assertOk(await actor.call("rrext_deploy_update", projectId="rw1",
                                       state="paused"))
        ev = await watchers["same_user"].wait_event(
            lambda b: b["action"] == "state_changed", 10)
        self.assertEqual(ev["body"]["projectId"], "rw1")
        # Events of that update were queued before any later reply on the
        # same connection, so once a ping is answered none can still come.
        for name in ("no_monitor", "other_user"):
            await self.assertAlive(watchers[name])
            self.assertEqual(watchers[name].events, [], name)
        self.assertOk(await actor.call("rrext_deploy_update", projectId="rw1",
                                       state="active"))
        await watchers["same_user"].wait_event(
            lambda b: b.get("state") == "active", 10)
        for name in ("no_monitor", "other_user"):
            await self.assertAlive(watchers[name])
            self.assertEqual(watchers[name].events, [], name)

    @async_test()
    async def test_auth_timeout_closes_unauthenticated(self):
        """--auth-timeout 2: an idle unauthenticated socket is closed, an
        authenticated one opened at the same time is not; deauth re-arms."""
        idle = await self.client()
        authed = await self.admin()
        again = await self.admin()
        self.assertOk(await again.call("deauth"))
        t0 = time.monotonic()
        await idle.wait_closed(15)
        self.assertGreater(time.monotonic() - t0, 1.0)
        await again.wait_closed(15)
        await self.assertAlive(authed)
        self.assertFalse(authed.is_closed())


class AuthTimeoutOneSecondTest(ServerTest):
    SERVER_ARGS = ("--auth-timeout", "1")

    @async_test()
    async def test_no_auth_within_one_second(self):
        c = await self.client()
        t0 = time.monotonic()
        await c.wait_closed(10)
        self.assertLess(time.monotonic() - t0, 5.0)
        # a public request does not count as authentication
        c = await self.client()
        self.assertOk(await c.call("rrext_public_probe"))
        await c.wait_closed(10)


class DevKeyTest(ServerTest):
    DEV_KEY = "MYAPIKEY"

    @async_test()
    async def test_rocketride_apikey_is_local_user(self):
        c = await self.client()
        r = await c.auth("MYAPIKEY")
        body = r["body"]
        self.assertEqual(body["userId"], "local")
        self.assertEqual(body["userToken"], "")
        teams = [t for o in body["organizations"] for t in o["teams"]]
        self.assertEqual(sorted(teams[0]["permissions"]), sorted(PERMS_BOTH))
        rec = self.assertOk(await c.call("rrext_deploy_add",
                                         pipeline=pipeline("dev1")))
        self.assertEqual(rec["created_by"], "local")
        self.assertEqual(rec["userId"], "local")
        # the admin key still works too, as a different user
        a = await self.admin()
        self.assertErr(await a.call("rrext_deploy_status", projectId="dev1"),
                       "not_found", "Deployment not found: dev1")
        # a near miss is refused
        c = await self.client()
        r = await c.auth("MYAPIKEY2", check=False)
        self.assertErr(r, "unauthorized", "Invalid API key")
        await c.wait_closed(10)

    def test_weak_dev_key_warned_about_on_loopback(self):
        err = self.server.stderr()
        self.assertIn("warn  WARNING: ROCKETRIDE_APIKEY is MYAPIKEY, the SDKs' "
                      "well-known default key: anything that can connect to "
                      "127.0.0.1 can guess it", err)
        self.assertIn("openssl rand -hex 32", err)

    def test_weak_dev_key_refused_beyond_loopback(self):
        """A guessable ROCKETRIDE_APIKEY stops the server before it opens its
        database when it would listen beyond loopback; the message says why
        and what to do, and never shows a key of one's own."""
        tmp = tempfile.mkdtemp(prefix="rrdeploy-it-")
        self.addCleanup(shutil.rmtree, tmp, True)
        db = os.path.join(tmp, "weak.db")
        for key, why in (("MYAPIKEY", "MYAPIKEY, the SDKs' well-known default "
                                      "key, and --listen 0.0.0.0 is not a "
                                      "loopback address"),
                         ("hunter2", "only 7 characters long, and --listen "
                                     ":: is not")):
            env = sanitizer_env()
            env["ROCKETRIDE_APIKEY"] = key
            listen = "0.0.0.0:0" if key == "MYAPIKEY" else "[::]:0"
            r = subprocess.run([binary_path(), "serve", "--listen", listen,
                                "--db", db], env=env, capture_output=True,
                               timeout=30, stdin=subprocess.DEVNULL)
            err = r.stderr.decode()
            self.assertEqual(r.returncode, 1, err)
            self.assertIn("rrdeploy: refusing to start: ROCKETRIDE_APIKEY is "
                          + why, err)
            self.assertIn("openssl rand -hex 32", err)
            self.assertIn("rrdeploy keys create", err)
            if key != "MYAPIKEY":
                self.assertNotIn(key, err)
            self.assertFalse(os.path.exists(db), "the database was created")

    @async_test()
    async def test_strong_dev_key_beyond_loopback(self):
        key = "x7Rq2-" + "k" * 26
        s = self.new_server(["--listen", "0.0.0.0:0"], dev_key=key)
        self.assertNotIn("WARNING", s.stderr())
        c = await self.client(s)
        r = await c.auth(key)
        self.assertEqual(r["body"]["userId"], "local")

    @async_test()
    async def test_without_env_the_dev_key_is_invalid(self):
        s = self.new_server()
        c = await self.client(s)
        r = await c.auth("MYAPIKEY", check=False)
        self.assertErr(r, "unauthorized", "Invalid API key")
        await c.wait_closed(10)


if __name__ == "__main__":
    unittest.main()
