"""The client subcommands (docs/operations.md §5): `rrdeploy add|list|status|update|
remove|run|cancel|runs|watch|preview` against the real server, in table and
--json form, with their error exits (1 server, 2 usage/input, 3 connection).

Every CLI run is checked for sanitizer reports (the client is the same binary
as the server, so leaks at exit show up here)."""

import json
import math
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import asyncio
import pty

import websockets

from harness import (ServerTest, async_test, binary_path, compact_json,
                     raw_member, sanitizer_env, sanitizer_report)

JAN1_2026 = 1767225600  # 2026-01-01T00:00:00Z

# numbers and key order a tree library would change: must travel verbatim
TRICKY = ('{ "project_id": "%s",\n  "zeta": 1e400, "big": 12345678901234567890,'
          ' "tenth": 0.10, "alpha": [ ], "nested": {"b": 1, "a": -0.0} }\n')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def column_starts(header):
    """Start offsets of the columns of a table header (columns are separated
    by at least two spaces; names may hold one, like NEXT RUN)."""
    return [0] + [i for i in range(2, len(header))
                  if header[i] != " " and header[i - 2:i] == "  "]


class CallLog(list):
    """What a fake server saw; `closed` is set when the connection ends."""

    def __init__(self):
        super().__init__()
        self.closed = asyncio.Event()


class CliBase(ServerTest):
    SERVER_ARGS = ("--exec", "cat >/dev/null")

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="rrdeploy-cli-")

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def url(self, server=None):
        return "http://127.0.0.1:%d" % (server or self.server).port

    def rr(self, *args, key=None, server=None, url=True, stdin=None, env=None,
           timeout=60):
        """Run the CLI; returns (exit code, stdout, stderr)."""
        srv = server or self.server
        cmd = [srv.bin] + list(args)
        if url:
            cmd += ["--url", self.url(srv)]
        if key is not False:
            cmd += ["--key", key or srv.admin_key]
        e = sanitizer_env()
        e.pop("ROCKETRIDE_URI", None)
        e.pop("NO_COLOR", None)
        e.update(env or {})
        r = subprocess.run(cmd, input=stdin, capture_output=True, env=e,
                           timeout=timeout, cwd=self.tmp)
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        pat = sanitizer_report(err)
        if pat:
            self.fail("CLI %r: sanitizer report (%s):\n%s" % (args, pat, err))
        return r.returncode, out, err

    def ok(self, *args, **kw):
        rc, out, err = self.rr(*args, **kw)
        self.assertEqual(rc, 0, "CLI %r: exit %d\n%s%s" % (args, rc, out, err))
        return out

    def err(self, code, *args, **kw):
        rc, out, err = self.rr(*args, **kw)
        self.assertEqual(rc, code, "CLI %r: exit %d, wanted %d\n%s%s"
                         % (args, rc, code, out, err))
        self.assertTrue(err.startswith("rrdeploy: "), err)
        return err

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def table(self, out):
        """Rows of an aligned table as lists of cells; asserts alignment."""
        lines = out.rstrip("\n").split("\n")
        starts = column_starts(lines[0])
        rows = []
        for line in lines:
            for s in starts[1:]:
                self.assertEqual(line[s - 2:s], "  ", "misaligned:\n" + out)
                self.assertNotEqual(line[s:s + 1], " ", "misaligned:\n" + out)
            bounds = starts + [len(line) + 2]
            rows.append([line[bounds[i]:bounds[i + 1] - 2].strip()
                         for i in range(len(starts))])
        return rows

    def add(self, pid, schedule=None, server=None):
        path = self.write(pid + ".json", TRICKY % pid)
        args = ["add", path]
        if schedule:
            args += ["--schedule", schedule]
        return self.ok(*args, server=server)


class CliTest(CliBase):

    def test_help(self):
        out = self.ok("help", url=False, key=False)
        for cmd in ("add FILE", "list", "status ID", "update ID", "remove ID",
                    "run ID", "cancel ID", "runs ID", "watch [ID]",
                    "preview SCHEDULE", "--url URL", "--key KEY", "--json",
                    "--timeout"):
            self.assertIn(cmd, out)
        for cmd in ("add", "list", "status", "update", "remove", "run",
                    "cancel", "runs", "watch", "preview"):
            out = self.ok(cmd, "--help", url=False, key=False)
            self.assertTrue(out.startswith("usage: rrdeploy %s" % cmd), out)
            self.assertIn("--url URL", out)
            self.assertEqual(self.ok("help", cmd, url=False, key=False), out)
        self.assertIn("--schedule S", self.ok("add", "--help", url=False,
                                              key=False))
        self.assertIn("--idempotency-key K", self.ok("run", "-h", url=False,
                                                     key=False))

    def test_add_list_status(self):
        out = self.add("cli_a", "*/15 * * * *")
        self.assertIn("added cli_a", out)
        # a .pipe file, and standard input
        self.ok("add", self.write("b.pipe", '{"pipeline": %s}' % (TRICKY % "cli_b")))
        self.ok("add", "-", "--schedule", "@daily",
                stdin=(TRICKY % "cli_c").encode())

        rows = self.table(self.ok("list"))
        self.assertEqual(rows[0], ["PROJECT", "STATE", "SCHEDULE", "NEXT RUN",
                                   "LAST RUN"])
        by_id = {r[0]: r for r in rows[1:]}
        self.assertEqual(by_id["cli_a"][1:3], ["active", "*/15 * * * *"])
        self.assertRegex(by_id["cli_a"][3], r"^in \d+[smh]$")
        self.assertEqual(by_id["cli_a"][4], "-")
        self.assertEqual(by_id["cli_b"][2:4], ["manual", "-"])
        self.assertRegex(by_id["cli_c"][3], r"^in \d+[smh]$")
        self.assertNotIn("\033[", self.ok("list"))  # not a TTY: no colour

        # --json: the body, one line, pipelines byte for byte
        out = self.ok("list", "--json")
        self.assertEqual(out.count("\n"), 1)
        body = json.loads(out)
        self.assertEqual({d["pipeline"]["project_id"] for d in
                          body["deployments"]} >= {"cli_a", "cli_b", "cli_c"},
                         True)
        for pid in ("cli_a", "cli_b", "cli_c"):
            out = self.ok("status", pid, "--json")
            self.assertEqual(raw_member(out.strip(), "pipeline"),
                             compact_json(TRICKY % pid))
            rec = json.loads(out)
            self.assertEqual(rec["state"], "active")

        out = self.ok("status", "cli_a")
        for key in ("project", "user", "state", "schedule", "next run",
                    "last run", "error", "created by", "created at",
                    "updated at", "owner key", "pipeline"):
            self.assertRegex(out, r"(?m)^%s\s" % re.escape(key))
        self.assertRegex(out, r"(?m)^project\s+cli_a$")
        self.assertRegex(out, r"(?m)^next run\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                              r"[+-]\d{4} \(in \d+[smh]\)$")
        self.assertIn('"big": 12345678901234567890', out)  # pretty, verbatim
        self.assertIn('"zeta": 1e400', out)

    def test_times_use_local_zone(self):
        self.add("cli_tz", "0 0 * * *")
        out = self.ok("status", "cli_tz", env={"TZ": "Asia/Tokyo"})
        self.assertRegex(out, r"(?m)^next run\s+\S+ 09:00:00 \+0900 ")
        out = self.ok("status", "cli_tz", env={"TZ": "UTC"})
        self.assertRegex(out, r"(?m)^next run\s+\S+ 00:00:00 \+0000 ")

    def test_update_pause_resume_remove(self):
        self.add("cli_u", "0 * * * *")
        self.assertEqual(self.ok("update", "cli_u", "--pause"), "paused cli_u\n")
        rows = self.table(self.ok("list"))
        row = [r for r in rows if r[0] == "cli_u"][0]
        self.assertEqual(row[1:4], ["paused", "0 * * * *", "-"])
        self.assertEqual(json.loads(self.ok("status", "cli_u", "--json"))
                         ["state"], "paused")
        self.assertEqual(self.ok("update", "cli_u", "--resume"),
                         "resumed cli_u\n")
        self.ok("update", "cli_u", "--schedule", "@hourly")
        new = '{"project_id": "cli_u", "v": 2.50, "n": 1E+2}'
        self.assertEqual(self.ok("update", "cli_u", "--pipeline",
                                 self.write("new.json", new)),
                         "updated cli_u\n")
        out = self.ok("status", "cli_u", "--json")
        self.assertEqual(raw_member(out.strip(), "pipeline"), compact_json(new))
        rec = json.loads(out)
        self.assertEqual((rec["schedule"], rec["state"]), ("@hourly", "active"))
        self.assertEqual(self.ok("remove", "cli_u"), "removed cli_u\n")
        err = self.err(1, "status", "cli_u")
        self.assertEqual(err, "rrdeploy: Deployment not found: cli_u\n")
        self.assertNotIn("cli_u", self.ok("list"))

    def test_server_errors(self):
        self.assertEqual(self.err(1, "list", key="rrk_" + "0" * 64),
                         "rrdeploy: Invalid API key\n")
        self.assertEqual(self.err(1, "status", "x"),
                         "rrdeploy: Deployment not found: x\n")
        self.assertEqual(self.err(1, "remove", "x"),
                         "rrdeploy: Deployment not found: x\n")
        err = self.err(1, "add", self.write("s.json", '{"project_id":"cli_s"}'),
                       "--schedule", "not-a-cron")
        self.assertTrue(err.startswith("rrdeploy: Invalid schedule 'not-a-cron': "),
                        err)
        self.assertEqual(err.count("\n"), 1)
        err = self.err(1, "preview", "61 * * * *")
        self.assertTrue(err.startswith("rrdeploy: Invalid schedule '61 * * * *': "),
                        err)
        self.add("cli_dup")
        self.assertEqual(self.err(1, "add", os.path.join(self.tmp, "cli_dup.json")),
                         "rrdeploy: Deployment already exists: cli_dup\n")
        err = self.err(1, "cancel", "cli_dup")   # nothing runs
        self.assertEqual(err.count("\n"), 1)
        # a key without task.control
        key = self.server.create_key("cli_ro", perms="task.monitor")
        self.assertIn("task.control", self.err(1, "add", os.path.join(
            self.tmp, "cli_dup.json"), key=key))
        self.assertEqual(self.ok("list", key=key), "no deployments\n")

    def test_usage_errors(self):
        # exit 2, no connection needed (the URL points nowhere)
        nowhere = ["--url", "127.0.0.1:%d" % free_port()]
        self.assertIn("cannot open", self.err(2, "add", "/nonexistent.json",
                                              *nowhere, url=False))
        bad = self.write("bad.json", '{"project_id": "x", }')
        self.assertIn("invalid JSON", self.err(2, "add", bad, *nowhere, url=False))
        arr = self.write("arr.json", '[1, 2]')
        self.assertIn("expected a JSON object", self.err(2, "add", arr, *nowhere,
                                                         url=False))
        self.err(2, "add", *nowhere, url=False)                   # no FILE
        self.err(2, "status", "a", "b", *nowhere, url=False)      # too many
        self.assertEqual(self.err(2, "list", "--bogus", *nowhere, url=False),
                         "rrdeploy: list: unknown option '--bogus' "
                         "(try 'rrdeploy list --help')\n")
        self.assertIn("missing the value of '--limit'",
                      self.err(2, "runs", "x", "--limit", url=False, key=False))
        self.assertIn("not an option", self.err(2, "list", "--limit", "3",
                                                *nowhere, url=False))
        self.err(2, "update", "x", "--pause", "--resume", *nowhere, url=False)
        self.assertIn("nothing to change", self.err(2, "update", "x", *nowhere,
                                                    url=False))
        self.err(2, "runs", "x", "--limit", "many", *nowhere, url=False)
        self.assertIn("--from", self.err(2, "preview", "@daily", "--from",
                                         "yesterday", *nowhere, url=False))
        self.err(2, "list", "--timeout", "0", *nowhere, url=False)
        self.assertIn("no API key", self.err(2, "list", *nowhere, url=False,
                                             key=False))
        self.assertIn("invalid URL", self.err(2, "list", "--url", "ws://h:99999",
                                              url=False))

    def test_server_down(self):
        port = free_port()
        t0 = time.monotonic()
        err = self.err(3, "list", "--url", "http://127.0.0.1:%d" % port,
                       url=False)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(err, "rrdeploy: cannot connect to ws://127.0.0.1:%d/"
                              "task/service: connection refused\n" % port)
        # something accepts TCP but never speaks: bounded by --timeout
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        try:
            t0 = time.monotonic()
            err = self.err(3, "status", "x", "--timeout", "1", "--url",
                           "127.0.0.1:%d" % s.getsockname()[1], url=False)
            took = time.monotonic() - t0
        finally:
            s.close()
        self.assertLess(took, 8)
        self.assertGreaterEqual(took, 0.9)
        self.assertIn("timed out", err)
        self.assertEqual(err.count("\n"), 1)

    def test_url_forms_and_environment(self):
        port = self.server.port
        key = self.server.admin_key
        for url in ("127.0.0.1:%d" % port, "ws://127.0.0.1:%d" % port,
                    "http://127.0.0.1:%d/some/path?x=1#f" % port,
                    "ws://user@127.0.0.1:%d/" % port):
            self.ok("list", "--url", url, url=False)
            self.ok("list", url=False, env={"ROCKETRIDE_URI": url})
        self.ok("list", key=False, env={"ROCKETRIDE_APIKEY": key})
        # --url and --key win over the environment
        self.ok("list", env={"ROCKETRIDE_URI": "127.0.0.1:1",
                             "ROCKETRIDE_APIKEY": "nope"})
        # no URL anywhere: the default port 5565 (nothing there in tests, or
        # not our server): a connection-level answer either way, never a hang
        rc, _, err = self.rr("list", url=False, timeout=60)
        self.assertIn(rc, (0, 1, 3), err)
        if rc == 3:
            self.assertIn("ws://127.0.0.1:5565/task/service", err)

    def test_preview(self):
        out = self.ok("preview", "*/15 * * * *", "--from",
                      "2026-01-01T00:00:00Z", "--count", "3",
                      env={"TZ": "Asia/Tokyo"})
        lines = out.splitlines()
        self.assertEqual(lines[0], "schedule */15 * * * * (zone UTC)")
        rows = self.table("\n".join(lines[1:]))
        self.assertEqual(rows, [
            ["UTC", "LOCAL"],
            ["2026-01-01T00:15:00Z", "2026-01-01 09:15:00 +0900"],
            ["2026-01-01T00:30:00Z", "2026-01-01 09:30:00 +0900"],
            ["2026-01-01T00:45:00Z", "2026-01-01 09:45:00 +0900"]])
        # the same instant as Unix seconds, and as a local time with offset
        for frm in (str(JAN1_2026), "2026-01-01T09:00+09:00",
                    "2026-01-01 01:00:00+01:00"):
            body = json.loads(self.ok("preview", "*/15 * * * *", "--from", frm,
                                      "--count", "2", "--json"))
            self.assertEqual([n["at"] for n in body["next"]],
                             [JAN1_2026 + 900, JAN1_2026 + 1800], frm)
        # no zone: the CLI's local time
        body = json.loads(self.ok("preview", "0 * * * *", "--from",
                                  "2026-01-01T09:00:00", "--count", "1",
                                  "--json", env={"TZ": "Asia/Tokyo"}))
        self.assertEqual(body["next"][0]["at"], JAN1_2026 + 3600)
        # H: the resolved schedule and what it was drawn from
        out = self.ok("preview", "H H * * *", "--project-id", "etl",
                      "--from", str(JAN1_2026), "--count", "1")
        line = out.splitlines()[1]
        self.assertRegex(line, r"^resolved \d+ \d+ \* \* \* \(H drawn from "
                               r"user \S+, project id 'etl'\)$")
        again = self.ok("preview", "H H * * *", "--project-id", "etl",
                        "--from", str(JAN1_2026), "--count", "1")
        self.assertEqual(again, out)
        # a schedule zone adds a column; warnings come after the times
        out = self.ok("preview", "CRON_TZ=America/New_York */7 9 * * *",
                      "--from", str(JAN1_2026), "--count", "2",
                      env={"TZ": "UTC"})
        lines = out.splitlines()
        self.assertEqual(lines[1].split(), ["UTC", "LOCAL", "America/New_York"])
        self.assertIn("2026-01-01T09:00:00-05:00", lines[2])
        self.assertEqual(lines[4], "warnings:")
        self.assertTrue(lines[5].startswith("  - "), out)
        body = json.loads(self.ok("preview", "*/7 * * * *", "--json"))
        self.assertTrue(body["warnings"])
        self.assertEqual(self.err(1, "preview", "@daily", "--count", "0"),
                         "rrdeploy: count must be an integer from 1 to 1000\n")

    def test_run_runs_and_wait(self):
        self.add("cli_r")
        out = self.ok("run", "cli_r", "--wait")
        self.assertRegex(out, r"^cli_r: run \d+ succeeded \(manual\), [\d.]+\S*, "
                              r"exit 0\n$")
        run = json.loads(self.ok("run", "cli_r", "--wait", "--json"))
        self.assertEqual((run["outcome"], run["exit_code"]), ("succeeded", 0))
        # without --wait: the run's id and current outcome
        out = self.ok("run", "cli_r", "--idempotency-key", "k1")
        m = re.match(r"^cli_r: run (\d+) (queued|running|succeeded) \(manual\)",
                     out)
        self.assertTrue(m, out)
        # the same key: the same run, finished by now (waited for)
        run2 = json.loads(self.ok("run", "cli_r", "--idempotency-key", "k1",
                                  "--wait", "--json"))
        self.assertEqual(run2["id"], int(m.group(1)))
        self.assertEqual(run2["outcome"], "succeeded")
        rows = self.table(self.ok("runs", "cli_r"))
        self.assertEqual(rows[0], ["ID", "TRIGGER", "OUTCOME", "SCHEDULED",
                                   "STARTED", "DURATION", "EXIT/REASON"])
        self.assertEqual(len(rows), 4)
        self.assertEqual([r[0] for r in rows[1:]],
                         [str(run2["id"]), str(run["id"]), str(run["id"] - 1)])
        for r in rows[1:]:
            self.assertEqual(r[1:3], ["manual", "succeeded"])
            self.assertEqual(r[3], "-")
            self.assertRegex(r[4], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
            self.assertEqual(r[6], "exit 0")
        body = json.loads(self.ok("runs", "cli_r", "--limit", "1", "--json"))
        self.assertEqual([r["id"] for r in body["runs"]], [run2["id"]])
        rows = self.table(self.ok("list"))
        row = [r for r in rows if r[0] == "cli_r"][0]
        self.assertRegex(row[4], r"^succeeded (now|\d+s ago)$")
        self.add("cli_norun")
        self.assertEqual(self.ok("runs", "cli_norun"), "no runs\n")
        self.assertEqual(self.err(1, "run", "nope", "--wait"),
                         "rrdeploy: Deployment not found: nope\n")

    def _watch(self, key, *args):
        e = sanitizer_env()
        e.pop("ROCKETRIDE_URI", None)
        p = subprocess.Popen([self.server.bin, "watch"] + list(args) +
                             ["--url", self.url(), "--key", key],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=e, cwd=self.tmp)
        # subscribed once it says so on stderr
        line = self._readline(p.stderr, 20)
        self.assertIn("watching", line)
        return p

    def _readline(self, f, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "no line within %ss: %r" % (timeout, buf))
            r, _, _ = select.select([f], [], [], left)
            if r:
                ch = os.read(f.fileno(), 1)
                self.assertTrue(ch, "EOF after %r" % buf)
                buf += ch
        return buf.decode()

    def _stop_watch(self, p):
        p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.fail("watch did not stop on SIGINT")
        err = p.stderr.read().decode()
        p.stdout.close()
        p.stderr.close()
        self.assertIsNone(sanitizer_report(err), err)
        self.assertEqual(rc, 0, err)

    def test_watch(self):
        # a user of its own: no other test's deployment can fire into it
        key = self.server.create_key("cli_watcher")
        for pid in ("cli_w", "cli_w2"):
            self.ok("add", self.write(pid + ".json", TRICKY % pid), key=key)
        human = self._watch(key)
        js = self._watch(key, "cli_w", "--json")
        try:
            self.ok("run", "cli_w2", "--wait", key=key)  # only `human` sees it
            self.ok("run", "cli_w", "--wait", key=key)
            lines = [self._readline(human.stdout, 20) for _ in range(4)]
            self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  cli_w2  "
                                       r"run_started\s+#\d+ running \(manual\)\n$")
            self.assertRegex(lines[1], r"  cli_w2  run_finished\s+#\d+ succeeded")
            self.assertRegex(lines[3], r"  cli_w  run_finished\s+#\d+ succeeded")
            ev = [json.loads(self._readline(js.stdout, 20)) for _ in range(2)]
            self.assertEqual([(e["action"], e["projectId"]) for e in ev],
                             [("run_started", "cli_w"), ("run_finished", "cli_w")])
            self.assertEqual(ev[1]["run"]["outcome"], "succeeded")
            # a line shows when the event happened (its "at"), not when it
            # arrived
            self.assertEqual(ev[1]["at"], ev[1]["run"]["finished_at"])
            self.assertEqual(lines[3][:19], time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(math.floor(ev[1]["at"]))))
            self.ok("update", "cli_w", "--pause", key=key)
            line = self._readline(human.stdout, 20)
            self.assertRegex(line, r"  cli_w  state_changed\s+paused\n$")
            ev = json.loads(self._readline(js.stdout, 20))
            self.assertEqual((ev["action"], ev["state"]), ("state_changed",
                                                           "paused"))
        finally:
            for p in (human, js):
                if p.poll() is None:
                    self._stop_watch(p)


class CliColorTest(CliBase):

    def _on_tty(self, *args, env=None):
        master, slave = pty.openpty()
        e = sanitizer_env()
        e.pop("NO_COLOR", None)
        e.update(env or {})
        p = subprocess.Popen([self.server.bin] + list(args) +
                             ["--url", self.url(), "--key",
                              self.server.admin_key],
                             stdout=slave, stderr=subprocess.PIPE, env=e,
                             cwd=self.tmp)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:   # EIO: the other side is gone
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        _, err = p.communicate(timeout=30)
        self.assertIsNone(sanitizer_report(err.decode()), err)
        self.assertEqual(p.returncode, 0, err)
        return out.decode().replace("\r\n", "\n")

    def test_state_colours_only_on_a_tty(self):
        self.add("cli_col1", "@hourly")
        self.add("cli_col2", "@hourly")
        self.ok("update", "cli_col2", "--pause")
        out = self._on_tty("list")
        self.assertIn("\033[32mactive\033[0m", out)
        self.assertIn("\033[33mpaused\033[0m", out)
        # colour codes do not shift the columns
        plain = re.sub("\033\\[[0-9;]*m", "", out)
        self.table(plain)
        self.assertIn("\033[32mactive", self._on_tty("status", "cli_col1"))
        self.assertNotIn("\033[", self._on_tty("list", env={"NO_COLOR": "1"}))
        self.assertNotIn("\033[", self._on_tty("list", "--json"))


class CliProtocolTest(ServerTest):
    """The CLI against a scripted WebSocket server: what it sends, in what
    order, how it closes, and fragmented or interleaved answers."""

    SHARED_SERVER = False

    async def _serve(self, answer):
        """A fake server answering with answer(ws, req); returns it, its port
        and a log of what happened, whose last entry is ("close", code) once
        the connection is over (await log.closed to know when)."""
        log = CallLog()

        async def handler(ws, path):
            log.append(("path", path))
            try:
                async for m in ws:
                    req = json.loads(m)
                    log.append(("request", req))
                    await answer(ws, req)
            finally:
                log.append(("close", ws.close_code))
                log.closed.set()

        srv = await websockets.serve(handler, "127.0.0.1", 0)
        return srv, srv.sockets[0].getsockname()[1], log

    async def _cli(self, port, *args):
        e = sanitizer_env()
        p = await asyncio.create_subprocess_exec(
            binary_path(), *args, "--url", "http://127.0.0.1:%d/x?q=1" % port,
            "--key", "K1", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=e)
        out, err = await asyncio.wait_for(p.communicate(), 30)
        self.assertIsNone(sanitizer_report(err.decode()), err)
        return p.returncode, out.decode(), err.decode()

    @staticmethod
    def _resp(req, body=None, fragments=1, **extra):
        msg = {"type": "response", "seq": 1, "request_seq": req["seq"],
               "command": req["command"], "success": True}
        if body is not None:
            msg["body"] = body
        msg.update(extra)
        text = json.dumps(msg, separators=(",", ":"))
        if fragments == 1:
            return text
        k = len(text) // fragments + 1
        return [text[i:i + k] for i in range(0, len(text), k)]

    @async_test()
    async def test_sequence_close_and_fragments(self):
        async def answer(ws, req):
            body = {"deployments": []} if req["command"] == "rrext_deploy_list" \
                else {}
            await ws.send(self._resp(req, body, fragments=3))
        srv, port, log = await self._serve(answer)
        try:
            rc, out, err = await self._cli(port, "list")
            await asyncio.wait_for(log.closed.wait(), 10)
        finally:
            srv.close()
            await srv.wait_closed()
        self.assertEqual((rc, out), (0, "no deployments\n"), err)
        self.assertEqual(log[0], ("path", "/task/service"))
        reqs = [x[1] for x in log if x[0] == "request"]
        self.assertEqual([(r["seq"], r["command"]) for r in reqs],
                         [(1, "auth"), (2, "rrext_deploy_list"), (3, "deauth")])
        self.assertEqual(reqs[0]["arguments"]["auth"], "K1")
        self.assertEqual(log[-1], ("close", 1000))

    @async_test()
    async def test_wait_sees_an_event_that_beats_the_response(self):
        run = {"id": 7, "projectId": "p", "trigger": "manual",
               "outcome": "running", "started_at": 1.0}

        async def answer(ws, req):
            if req["command"] == "rrext_deploy_run":
                done = dict(run, outcome="succeeded", finished_at=2.5,
                            exit_code=0)
                for body in ({"action": "run_started", "projectId": "p",
                              "run": run},
                             {"action": "run_finished", "projectId": "p",
                              "run": dict(done, id=6)},
                             {"action": "run_finished", "projectId": "p",
                              "run": done}):
                    await ws.send(json.dumps({"type": "event", "seq": 1,
                                              "event": "apaevt_deploy",
                                              "body": body}))
                await ws.send(self._resp(req, run))
            else:
                await ws.send(self._resp(req, {}))
        srv, port, log = await self._serve(answer)
        try:
            rc, out, err = await self._cli(port, "run", "p", "--wait")
            await asyncio.wait_for(log.closed.wait(), 10)
        finally:
            srv.close()
            await srv.wait_closed()
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out, "p: run 7 succeeded (manual), 1.5s, exit 0\n")
        cmds = [x[1]["command"] for x in log if x[0] == "request"]
        self.assertEqual(cmds, ["auth", "rrext_deploy_watch", "rrext_deploy_run",
                                "deauth"])
        self.assertEqual([x[1]["arguments"] for x in log if x[0] == "request"]
                         [1], {"projectId": "p"})

    @async_test()
    async def test_unanswered_request_times_out(self):
        async def answer(ws, req):
            if req["command"] == "auth":
                await ws.send(self._resp(req, {}))
        srv, port, log = await self._serve(answer)
        try:
            t0 = time.monotonic()
            rc, out, err = await self._cli(port, "list", "--timeout", "1")
            took = time.monotonic() - t0
        finally:
            srv.close()
            await srv.wait_closed()
        self.assertEqual(rc, 3, err)
        self.assertLess(took, 8)
        self.assertEqual(err, "rrdeploy: no answer from ws://127.0.0.1:%d/task/"
                              "service: timed out\n" % port)


class CliFailingRunTest(CliBase):
    SERVER_ARGS = ("--exec", "cat >/dev/null; echo oops from the pipeline; exit 3")

    def test_run_wait_failure(self):
        self.add("cli_f")
        rc, out, err = self.rr("run", "cli_f", "--wait")
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(out, r"^cli_f: run \d+ failed \(manual\), \S+, exit 3")
        self.assertIn("oops from the pipeline", out)
        rc, out, _ = self.rr("run", "cli_f", "--wait", "--json")
        self.assertEqual(rc, 1)
        run = json.loads(out)
        self.assertEqual((run["outcome"], run["exit_code"]), ("failed", 3))
        rows = self.table(self.ok("runs", "cli_f"))
        self.assertTrue(rows[1][6].startswith("exit 3"), rows)


class CliCancelTest(CliBase):
    SERVER_ARGS = ("--exec", "cat >/dev/null; sleep 60", "--shutdown-grace", "1s")

    def test_cancel_while_waiting(self):
        self.add("cli_k")
        e = sanitizer_env()
        waiter = subprocess.Popen(
            [self.server.bin, "run", "cli_k", "--wait", "--url", self.url(),
             "--key", self.server.admin_key],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=self.tmp)
        try:
            deadline = time.monotonic() + 20
            while True:   # cancel once the run is running
                rc, out, err = self.rr("cancel", "cli_k")
                if rc == 0:
                    break
                self.assertLess(time.monotonic(), deadline, err)
                time.sleep(0.1)
            self.assertEqual(out, "cancel requested for cli_k\n")
            out, err = waiter.communicate(timeout=30)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.communicate()
        out, err = out.decode(), err.decode()
        self.assertIsNone(sanitizer_report(err), err)
        self.assertEqual(waiter.returncode, 1, out + err)
        self.assertRegex(out, r"^cli_k: run \d+ cancelled")


if __name__ == "__main__":
    unittest.main()
