"""What a run's process is given (docs/runs.md §2): a clean environment --
PATH, LANG, LC_*, TZ from the server's, HOME from the password database,
what --run-env and --pass-env name, the run's RR_* variables and its mark --
and nothing else of the server's environment, least of all its API key;
names the server sets or keeps secret refused at start; --output-max bounds
the output tail."""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import Server, async_test, sanitizer_env, sanitizer_report
from runs_helpers import RunsTest

DEV_KEY = "dev-s3cret-4b1d7a"
SECRET = "t0ken-9f2e51"

RUN_NAMES = {"RR_PROJECT_ID", "RR_USER_ID", "RR_RUN_ID", "RR_TRIGGER",
             "RR_SCHEDULED_AT", "RRDEPLOY_RUN"}


def shell_exports():
    """Names /bin/sh exports by itself (dash: PWD): `env` in a run shows
    them although the server did not pass them."""
    r = subprocess.run(["/bin/sh", "-c", "env"], env={}, capture_output=True,
                       text=True, check=True, timeout=30)
    return {line.split("=", 1)[0] for line in r.stdout.splitlines()
            if "=" in line}


def home_of_euid():
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir or None
    except KeyError:
        return None


class RunEnvironmentTest(RunsTest):

    async def one_run(self, es, project_id, **extra):
        """Add project_id, run it once by hand, return the finished run."""
        c = await self.admin(es.server)
        await self.watch(c)
        await self.add(c, project_id, **extra)
        run = await self.run_now(c, project_id)
        done = await self.finished(c, run["id"])
        self.assertEqual(done["outcome"], "succeeded", done)
        return c, done

    @async_test(timeout=60)
    async def test_runs_get_only_what_the_operator_allows(self):
        es = self.exec_server(
            args=("--exec", "cat >/dev/null; env",
                  "--run-env", "GREETING=hello world", "--run-env", "LANG=C",
                  "--pass-env", "PASSED_VAR", "--pass-env", "NOT_SET_VAR"),
            exec_script=False, start=False)
        server_env = es.server.env
        server_env.update({
            "ROCKETRIDE_APIKEY": DEV_KEY, "SECRET_TOKEN": SECRET,
            "PASSED_VAR": "passed", "LANG": "C.UTF-8", "LC_TIME": "C",
            "TZ": "UTC", "HOME": "/not/from/the/environment",
            "RR_RUN_ID": "bogus", "RRDEPLOY_RUN": "bogus"})
        server_env.pop("NOT_SET_VAR", None)
        es.server.start()
        _, done = await self.one_run(es, "envy")

        got = dict(line.split("=", 1)
                   for line in done["output_tail"].splitlines())
        want = ({"PATH", "LANG", "TZ", "GREETING", "PASSED_VAR"} | RUN_NAMES
                | {n for n in server_env if n.startswith("LC_")}
                | shell_exports())
        home = home_of_euid()
        if home:
            want.add("HOME")
        self.assertEqual(set(got), want, done["output_tail"])
        self.assertEqual(got["PATH"], server_env["PATH"])
        self.assertEqual(got["LANG"], "C")          # --run-env wins
        self.assertEqual(got["LC_TIME"], "C")
        self.assertEqual(got["TZ"], "UTC")
        self.assertEqual(got["GREETING"], "hello world")
        self.assertEqual(got["PASSED_VAR"], "passed")
        if home:
            self.assertEqual(got["HOME"], home)
        self.assertEqual(got["RR_RUN_ID"], str(done["id"]))
        self.assertEqual(got["RR_PROJECT_ID"], "envy")
        self.assertEqual(got["RR_TRIGGER"], "manual")
        self.assertRegex(got["RRDEPLOY_RUN"], r"\A[0-9a-f]{16}:%d\Z"
                         % done["id"])
        for secret in (DEV_KEY, SECRET, "bogus"):
            self.assertNotIn(secret, done["output_tail"])
        # the log names what runs get, never a value
        err = es.server.stderr()
        self.assertIn("NOT_SET_VAR, to be passed to runs, is not set", err)
        self.assertIn("GREETING", err)
        self.assertNotIn("hello world", err)
        self.assertNotIn(DEV_KEY, err)

    @async_test(timeout=60)
    async def test_path_defaults_when_the_server_has_none(self):
        es = self.exec_server(
            args=("--exec", "cat >/dev/null; echo \"PATH=$PATH\""),
            exec_script=False, start=False)
        es.server.env.pop("PATH", None)
        es.server.start()
        _, done = await self.one_run(es, "nopath")
        self.assertEqual(done["output_tail"],
                         "PATH=/usr/local/bin:/usr/bin:/bin\n")

    @async_test(timeout=60)
    async def test_output_max_keeps_the_last_bytes(self):
        es = self.exec_server(args=("--output-max", "1K"))
        c, done = await self.one_run(es, "big", mode="big")
        full = "".join("%d\n" % i for i in range(1, 40001))
        self.assertEqual(done["output_tail"], full[-1024:])
        self.assertEqual((await self.runs(c, "big"))[0]["output_tail"],
                         full[-1024:])

    @async_test(timeout=60)
    async def test_output_max_zero_keeps_nothing(self):
        es = self.exec_server(args=("--output-max", "0"))
        _, done = await self.one_run(es, "quiet", mode="big")
        self.assertIn(done["output_tail"], (None, ""))


class RefusedAtStartTest(unittest.TestCase):
    """Options that would give runs a secret or a name the server sets stop
    the server before it does anything: no database, no admin key."""

    def start_refused(self, *args):
        tmp = tempfile.mkdtemp(prefix="rrdeploy-env-")
        self.addCleanup(shutil.rmtree, tmp, True)
        db = os.path.join(tmp, "rrdeploy.db")
        env = sanitizer_env()
        env["ROCKETRIDE_APIKEY"] = DEV_KEY
        r = subprocess.run([Server().bin, "serve", "--listen", "127.0.0.1:0",
                            "--db", db, "--exec", "env"] + list(args),
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, env=env, cwd=tmp, timeout=30)
        self.assertIsNone(sanitizer_report(r.stderr), r.stderr)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertFalse(os.path.exists(db))
        self.assertNotIn("rrk_", r.stderr)
        self.assertNotIn(DEV_KEY, r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        return r.stderr

    def test_secret_names_refused(self):
        self.assertEqual(
            self.start_refused("--pass-env", "ROCKETRIDE_APIKEY"),
            "rrdeploy: --pass-env: ROCKETRIDE_APIKEY is the server's API "
            "key: a secret, never given to a run\n")
        self.assertEqual(
            self.start_refused("--run-env", "ROCKETRIDE_APIKEY=" + DEV_KEY),
            "rrdeploy: --run-env: ROCKETRIDE_APIKEY is the server's API "
            "key: a secret, never given to a run\n")

    def test_reserved_names_refused(self):
        self.assertEqual(
            self.start_refused("--run-env", "RR_RUN_ID=x"),
            "rrdeploy: --run-env: RR_RUN_ID is set by the server in every "
            "run\n")
        for name in sorted(RUN_NAMES):
            self.assertIn("%s is set by the server" % name,
                          self.start_refused("--pass-env", name))

    def test_bad_entries_refused(self):
        self.assertIn("'BAD-NAME' is not a variable name",
                      self.start_refused("--run-env", "BAD-NAME=1"))
        self.assertIn("'9LIVES' is not a variable name",
                      self.start_refused("--pass-env", "9LIVES"))
        self.assertIn("--run-env: expected NAME=VALUE",
                      self.start_refused("--run-env", "NAME"))
        self.assertIn("--pass-env: expected a NAME",
                      self.start_refused("--pass-env", "NAME=value"))
        for size in ("17M", "16777217", "1G", "-1", "1.5K", "K", ""):
            self.assertIn("--output-max: expected bytes from 0 to 16M",
                          self.start_refused("--output-max", size))
        for size in ("-1", "1G", "x", ""):
            self.assertIn("--reply-cache: expected bytes",
                          self.start_refused("--reply-cache", size))


if __name__ == "__main__":
    unittest.main()
