"""Operations: /healthz, /metrics scraped after a scripted workload and parsed
with a real Prometheus text parser, TLS (wss:// and https://) with a
certificate made here, and the packaging (man page, systemd unit)."""
import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
import unittest

import websockets
from prometheus_client.parser import text_string_to_metric_families

from harness import ServerTest, Server, async_test, pipeline, sanitizer_report

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def http_get(url, context=None, timeout=10):
    """(status, body) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


class HealthAndMetrics(ServerTest):
    SHARED_SERVER = False

    def test_healthz_ok_then_unusable_database(self):
        srv = self.new_server()
        status, body, headers = http_get("http://127.0.0.1:%d/healthz" % srv.port)
        self.assertEqual(status, 200)
        self.assertIn("application/json", headers["content-type"])
        h = json.loads(body)
        self.assertEqual(h["status"], "ok")
        self.assertEqual(h["database"], "ok")
        self.assertIn("version", h)
        self.assertGreaterEqual(h["uptime_seconds"], 0)
        # The database file disappears under the running server.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(srv.db + suffix):
                os.unlink(srv.db + suffix)
        status, body, _ = http_get("http://127.0.0.1:%d/healthz" % srv.port)
        self.assertEqual(status, 503)
        h = json.loads(body)
        self.assertEqual(h["status"], "unavailable")
        self.assertTrue(h["database"].startswith("error: "), h)
        self.assertEqual(http_get("http://127.0.0.1:%d/nope" % srv.port)[0], 404)

    @async_test(timeout=60)
    async def test_metrics_match_the_workload(self):
        srv = self.new_server(["--exec", "cat >/dev/null"])
        c = await self.admin(srv)                       # auth ok: 1
        for i in range(3):                              # add ok: 3
            self.assertOk(await c.call("rrext_deploy_add",
                                       pipeline=pipeline("m%d" % i),
                                       schedule="@daily" if i else "manual"))
        self.assertErr(await c.call("rrext_deploy_add", pipeline=pipeline("m0")),
                       "conflict")                      # add conflict: 1
        self.assertErr(await c.call("rrext_deploy_status", projectId="nope"),
                       "not_found")                     # status not_found: 1
        for _ in range(2):                              # list ok: 2
            self.assertOk(await c.call("rrext_deploy_list"))
        self.assertOk(await c.call("rrext_deploy_update", projectId="m1",
                                   state="paused"))     # update ok: 1
        self.assertOk(await c.call("rrext_deploy_watch", projectId="m0"))  # 1
        self.assertOk(await c.call("rrext_deploy_run", projectId="m0"))
        await c.wait_event(lambda b: b.get("action") == "run_finished",
                           timeout=30)
        self.assertErr(await c.call("rrext_bogus"), "bad_request")  # other: 1
        c2 = await self.client(srv)                     # second connection
        r = await c2.call("auth", auth="rrk_wrong")     # auth unauthorized: 1
        self.assertErr(r, "unauthorized")
        await c2.wait_closed()

        status, text, headers = http_get("http://127.0.0.1:%d/metrics" % srv.port)
        self.assertEqual(status, 200)
        self.assertIn("text/plain", headers["content-type"])
        m = samples(text)
        req = "rrdeploy_requests_total"
        self.assertEqual(value(m, req, command="auth", outcome="ok"), 1)
        self.assertEqual(value(m, req, command="auth", outcome="unauthorized"), 1)
        self.assertEqual(value(m, req, command="rrext_deploy_add", outcome="ok"), 3)
        self.assertEqual(value(m, req, command="rrext_deploy_add", outcome="conflict"), 1)
        self.assertEqual(value(m, req, command="rrext_deploy_status",
                               outcome="not_found"), 1)
        self.assertEqual(value(m, req, command="rrext_deploy_list", outcome="ok"), 2)
        self.assertEqual(value(m, req, command="rrext_deploy_update", outcome="ok"), 1)
        self.assertEqual(value(m, req, command="rrext_deploy_run", outcome="ok"), 1)
        self.assertEqual(value(m, req, command="other", outcome="bad_request"), 1)
        self.assertEqual(value(m, req, command="rrext_deploy_watch", outcome="ok"), 1)
        total = sum(v for (n, _), v in m.items() if n == req)
        self.assertEqual(total, 13)
        self.assertEqual(value(m, "rrdeploy_request_duration_seconds_count"), 13)
        self.assertEqual(value(m, "rrdeploy_request_duration_seconds_bucket",
                               le="+Inf"), 13)
        # the status and the two lists looked for a kept reply
        lookups = "rrdeploy_reply_cache_lookups_total"
        self.assertEqual(value(m, lookups, result="hit") + value(m, lookups, result="miss"), 3)
        self.assertEqual(value(m, "rrdeploy_connections_total"), 2)
        self.assertEqual(value(m, "rrdeploy_connections"), 1)
        self.assertEqual(value(m, "rrdeploy_deployments", state="active"), 2)
        self.assertEqual(value(m, "rrdeploy_deployments", state="paused"), 1)
        self.assertEqual(value(m, "rrdeploy_deployments", state="errored"), 0)
        self.assertEqual(value(m, "rrdeploy_runs_total", executor="exec", outcome="succeeded"), 1)
        self.assertEqual(value(m, "rrdeploy_runs_total", executor="exec", outcome="failed"), 0)
        self.assertEqual(value(m, "rrdeploy_runs_started_total"), 1)
        self.assertEqual(value(m, "rrdeploy_runs_in_progress"), 0)
        self.assertEqual(value(m, "rrdeploy_skipped_ticks_total", reason="overlap"), 0)
        self.assertEqual(value(m, "rrdeploy_fire_lateness_seconds_count"), 0)
        self.assertEqual(value(m, "rrdeploy_build_info", version="0.1.0"), 1)

    @async_test(timeout=60)
    async def test_reply_cache_off(self):
        # --reply-cache 0: every status and list is rendered from the store,
        # and answers the same
        on = self.new_server([])
        off = self.new_server(["--reply-cache", "0"])
        bodies = []
        for srv in (on, off):
            c = await self.admin(srv)
            self.assertOk(await c.call("rrext_deploy_add", pipeline=pipeline("k1"),
                                       schedule="manual"))
            for _ in range(3):
                r = await c.call("rrext_deploy_status", projectId="k1")
                self.assertOk(r)
                bodies.append({k: v for k, v in r["body"].items()
                               if k not in ("created_at", "updated_at",
                                            "createdAt", "updatedAt", "owner_key_id")})
            m = samples(http_get("http://127.0.0.1:%d/metrics" % srv.port)[1])
            lookups = "rrdeploy_reply_cache_lookups_total"
            hits = value(m, lookups, result="hit")
            misses = value(m, lookups, result="miss")
            if srv is on:
                self.assertEqual((hits, misses), (2, 1))
            else:
                self.assertEqual((hits, misses), (0, 0))
        self.assertTrue(all(b == bodies[0] for b in bodies), bodies)

    @async_test(timeout=60)
    async def test_logs_hold_no_secrets(self):
        secret = "s3cr3t-pipeline-value-7f1c"
        srv = self.new_server(["--log-level", "debug", "--exec", "cat >/dev/null"])
        user_key = srv.create_key("logger")
        c = await self.client(srv, key=user_key)
        self.assertOk(await c.call("rrext_deploy_add",
                                   pipeline=pipeline("sec", token=secret),
                                   schedule="@daily"))
        self.assertOk(await c.call("rrext_deploy_watch", projectId="sec"))
        self.assertOk(await c.call("rrext_deploy_run", projectId="sec"))
        await c.wait_event(lambda b: b.get("action") == "run_finished", timeout=30)
        wrong = user_key[:-1] + ("1" if user_key.endswith("0") else "0")
        bad = await self.client(srv)
        self.assertErr(await bad.call("auth", auth=wrong), "unauthorized")
        srv.revoke_key(user_key)
        srv.stop()
        log = srv.stderr(all_generations=True)
        # the bootstrap key is printed once, on purpose, outside the log lines
        log = log.replace(srv.admin_key, "")
        self.assertIn("auth ok", log)
        for needle in (user_key, wrong, user_key[4:20], secret):
            self.assertNotIn(needle, log)


class Tls(ServerTest):
    SHARED_SERVER = False

    @async_test(timeout=60)
    async def test_wss_and_https(self):
        tmp = tempfile.mkdtemp(prefix="rrdeploy-tls-")
        self.addCleanup(shutil.rmtree, tmp, True)
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        srv = self.new_server(["--tls-cert", cert, "--tls-key", key])
        self.assertIn("listening on wss://", srv.stderr())
        ctx = ssl.create_default_context(cafile=cert)
        url = "wss://127.0.0.1:%d/task/service" % srv.port
        async with websockets.connect(url, ssl=ctx) as ws:
            await ws.send(json.dumps({"type": "request", "seq": 1, "command": "auth",
                                      "arguments": {"auth": srv.admin_key}}))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            self.assertTrue(r["success"], r)
            await ws.send(json.dumps({"type": "request", "seq": 2,
                                      "command": "rrext_deploy_list"}))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            self.assertEqual(r["body"], {"deployments": []})
        status, body, _ = http_get("https://127.0.0.1:%d/healthz" % srv.port,
                                   context=ctx)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        # plain ws:// to a TLS port does not get through
        with self.assertRaises(Exception):
            async with websockets.connect("ws://127.0.0.1:%d/task/service" % srv.port,
                                          open_timeout=5) as ws:
                await ws.recv()

    def test_tls_options_checked(self):
        bin_ = Server().bin
        r = subprocess.run([bin_, "serve", "--tls-cert", "/nonexistent.pem"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--tls-cert and --tls-key go together", r.stderr)
        r = subprocess.run([bin_, "serve", "--tls-cert", "/nonexistent.pem",
                            "--tls-key", "/nonexistent.pem"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot read /nonexistent.pem", r.stderr)
        self.assertIsNone(sanitizer_report(r.stderr))


class Packaging(unittest.TestCase):
    def test_man_page_renders(self):
        page = os.path.join(ROOT, "packaging", "rrdeploy.1")
        r = subprocess.run(["man", "--warnings", "-l", page], capture_output=True,
                           text=True, env=dict(os.environ, MANWIDTH="80",
                                               MAN_KEEP_FORMATTING="0"),
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "")
        text = re.sub(".\b", "", r.stdout)  # drop overstrike bold/underline
        for section in ("NAME", "SYNOPSIS", "SERVER", "KEYS", "CLIENT COMMANDS",
                        "SCHEDULES", "ENVIRONMENT", "EXIT STATUS"):
            self.assertIn(section, text)

    def test_systemd_unit_verifies(self):
        tmp = tempfile.mkdtemp(prefix="rrdeploy-unit-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(os.path.join(ROOT, "packaging", "rrdeploy.service.in")) as f:
            unit = f.read().replace("@RRDEPLOY_BIN@", Server().bin)
        path = os.path.join(tmp, "rrdeploy.service")
        with open(path, "w") as f:
            f.write(unit)
        mandir = os.path.join(tmp, "man", "man1")   # for Documentation=man:
        os.makedirs(mandir)
        shutil.copy(os.path.join(ROOT, "packaging", "rrdeploy.1"), mandir)
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True,
                           text=True, env=dict(os.environ,
                                               MANPATH=os.path.join(tmp, "man")),
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("rrdeploy.service:", r.stderr)
        for option in ("NoNewPrivileges=yes", "ProtectSystem=strict",
                       "StateDirectory=rrdeploy"):
            self.assertIn(option, unit)


if __name__ == "__main__":
    unittest.main()
