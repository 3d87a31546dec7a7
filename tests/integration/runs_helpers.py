"""runs_helpers.py -- shared pieces of the scheduled-runs integration tests
(docs/protocol.md §5 for the run commands, docs/runs.md for runs and shutdown).

The server runs pipelines with `--exec 'exec sh <dir>/run.sh'` (so the
script's $$ is the run's process-group leader). The script records
what each run saw in <dir>/runs/<RR_RUN_ID>.{stdin,env,pid}, and its
behaviour comes from the pipeline itself (stored compact, so a grep for
`"mode":"…"` is exact):
  (default)      print `hello <run id>` and exit 0
  "mode":"fail"  print `failing`, exit 3
  "mode":"big"   print the numbers 1..40000, one a line (228,894 bytes)
  "mode":"block" start a background `sleep` in the run's process group
                 (pid in <id>.child), then block reading the FIFO
                 <dir>/gate.<RR_PROJECT_ID> until the test writes a line to
                 it (release()); then exit 0. No fixed sleeps anywhere.
  "mode":"stubborn"  like block, but SIGTERM is ignored (by the script and,
                 inherited, by its child): only SIGKILL ends it

Timing never relies on sleeps: the test clock (`--test-clock`, rrtest_clock)
moves scheduler time, and the tests wait for events, files or process
states with deadlines."""

import asyncio
import errno
import json
import os
import sqlite3
import stat
import time

from harness import Server, ServerTest, pipeline

BASE = 1767225600          # 2026-01-01T00:00:00Z, a minute boundary
MINUTE = 60

RUN_SH = r"""#!/bin/sh
# rrdeploy integration test executor (see runs_helpers.py)
D='%(dir)s'
id="$RR_RUN_ID"
R="$D/runs"
cat > "$R/$id.stdin.tmp" && mv "$R/$id.stdin.tmp" "$R/$id.stdin"
env | grep '^RR_' | sort > "$R/$id.env.tmp" && mv "$R/$id.env.tmp" "$R/$id.env"
echo $$ > "$R/$id.pid.tmp" && mv "$R/$id.pid.tmp" "$R/$id.pid"
if grep -q '"mode":"fail"' "$R/$id.stdin"; then
    echo failing
    exit 3
fi
if grep -q '"mode":"big"' "$R/$id.stdin"; then
    seq 1 40000
    exit 0
fi
if grep -q '"mode":"stubborn"' "$R/$id.stdin"; then
    trap '' TERM
fi
if grep -q '"mode":"block"\|"mode":"stubborn"' "$R/$id.stdin"; then
    sleep 1000 &
    child=$!
    echo $child > "$R/$id.child.tmp" && mv "$R/$id.child.tmp" "$R/$id.child"
    read line < "$D/gate.$RR_PROJECT_ID"
    kill $child 2>/dev/null
    echo "released $id"
    exit 0
fi
echo "hello $id"
exit 0
"""


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def proc_state(pid):
    """The state letter of /proc/<pid>/stat, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            txt = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return txt[txt.rindex(")") + 2]


def proc_dead(pid):
    """Gone, or a zombie nobody has reaped yet (an orphan reparented to a
    PID 1 that does not reap): either way it runs no more."""
    return proc_state(pid) in (None, "Z", "X")


class ExecServer:
    """A Server whose --exec runs RUN_SH, plus helpers to look at runs."""

    def __init__(self, args=(), exec_script=True, test_clock=BASE + 10):
        self.server = Server(extra_args=())
        self.dir = self.server.dir
        self.runs_dir = os.path.join(self.dir, "runs")
        os.makedirs(self.runs_dir, exist_ok=True)
        self.base_args = list(args)
        if not any(a.startswith("--shutdown-grace") for a in self.base_args):
            self.base_args += ["--shutdown-grace", "3s"]
        self.exec_script = exec_script
        self.script = os.path.join(self.dir, "run.sh")
        if exec_script:
            with open(self.script, "w") as f:
                f.write(RUN_SH % {"dir": self.dir})
        self.set_clock_arg(test_clock)

    def set_clock_arg(self, test_clock):
        args = list(self.base_args)
        if self.exec_script:
            args += ["--exec", "exec sh " + self.script]
        if test_clock is True:
            args.append("--test-clock")
        elif test_clock is not None:
            args.append("--test-clock=%d" % test_clock)
        self.server.extra_args = args

    # -- gates
    def gate(self, project_id):
        p = os.path.join(self.dir, "gate." + project_id)
        if not os.path.exists(p):
            os.mkfifo(p)
        return p

    async def release(self, project_id, timeout=20.0):
        """Let the blocked run of project_id finish: open its FIFO for
        writing once the run has opened it for reading, write one line."""
        p = self.gate(project_id)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                if time.monotonic() > deadline:
                    raise AssertionError("no run of %s is waiting on its gate"
                                         % project_id)
                await asyncio.sleep(0.01)
                continue
            try:
                os.write(fd, b"go\n")
            finally:
                os.close(fd)
            return

    # -- what runs saw
    def path(self, run_id, what):
        return os.path.join(self.runs_dir, "%s.%s" % (run_id, what))

    async def wait_file(self, run_id, what, timeout=20.0):
        p = self.path(run_id, what)
        deadline = time.monotonic() + timeout
        while not os.path.exists(p):
            if time.monotonic() > deadline:
                raise AssertionError("run %s never wrote %s" % (run_id, p))
            await asyncio.sleep(0.01)
        with open(p, "rb") as f:
            return f.read()

    async def pid(self, run_id, what="pid"):
        return int(await self.wait_file(run_id, what))

    def pid_now(self, run_id, what="pid"):
        with open(self.path(run_id, what)) as f:
            return int(f.read())

    def env(self, run_id):
        with open(self.path(run_id, "env")) as f:
            return dict(line.rstrip("\n").split("=", 1) for line in f
                        if "=" in line)

    def started_run_ids(self):
        return sorted(int(n.split(".")[0]) for n in os.listdir(self.runs_dir)
                      if n.endswith(".pid"))

    def kill_leftovers(self):
        """Kill whatever a test left running (after a kill -9 of the server
        its runs are orphans): the process groups of every recorded run."""
        import signal
        for n in os.listdir(self.runs_dir):
            if not (n.endswith(".pid") or n.endswith(".child")):
                continue
            try:
                with open(os.path.join(self.runs_dir, n)) as f:
                    pid = int(f.read())
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except (ValueError, OSError):
                continue
            if proc_dead(pid) or not (self.script.encode() in cmd
                                      or cmd == b"sleep\x001000\x00"):
                continue  # gone, or the pid was reused by someone else
            for f in (lambda: os.killpg(pid, signal.SIGKILL),
                      lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    f()
                except OSError:
                    pass

    def db_runs(self, project_id=None):
        """The runs table read straight from the database file (read-only),
        for a server that has exited."""
        con = sqlite3.connect("file:%s?mode=ro" % self.server.db, uri=True)
        try:
            con.row_factory = sqlite3.Row
            q = "SELECT * FROM runs"
            args = ()
            if project_id is not None:
                q += " WHERE project_id = ?"
                args = (project_id,)
            return [dict(r) for r in con.execute(q + " ORDER BY id", args)]
        finally:
            con.close()


class RunsTest(ServerTest):
    """One server per test (the test clock is per server)."""

    SHARED_SERVER = False

    def setUp(self):
        super().setUp()
        self.exec_servers = []

    def tearDown(self):
        # Runs a test left blocked would hold the server's stop for its
        # shutdown grace: end them first.
        for es in self.exec_servers:
            es.kill_leftovers()
        super().tearDown()

    def exec_server(self, args=(), exec_script=True, test_clock=BASE + 10,
                    start=True):
        es = ExecServer(args, exec_script=exec_script, test_clock=test_clock)
        self.exec_servers.append(es)
        self.servers.append(es.server)
        if start:
            es.server.start()
        return es

    # -- requests
    async def clock(self, c, set=None, advance=None, lead=None):
        args = {}
        if set is not None:
            args["set"] = set
        if advance is not None:
            args["advance"] = advance
        if lead is not None:
            args["lead"] = lead
        return self.assertOk(await c.request("rrtest_clock", args))

    async def add(self, c, project_id, schedule=None, **extra):
        args = {"pipeline": pipeline(project_id, **extra)}
        if schedule is not None:
            args["schedule"] = schedule
        return self.assertOk(await c.request("rrext_deploy_add", args))

    async def runs(self, c, project_id, limit=None):
        args = {"projectId": project_id}
        if limit is not None:
            args["limit"] = limit
        return self.assertOk(await c.request("rrext_deploy_runs", args))["runs"]

    async def status(self, c, project_id):
        return self.assertOk(await c.call("rrext_deploy_status",
                                          projectId=project_id))

    async def run_now(self, c, project_id, key=None):
        args = {"projectId": project_id}
        if key is not None:
            args["idempotencyKey"] = key
        return self.assertOk(await c.request("rrext_deploy_run", args))

    async def watch(self, c, project_id=None, enable=None):
        args = {}
        if project_id is not None:
            args["projectId"] = project_id
        if enable is not None:
            args["enable"] = enable
        return self.assertOk(await c.request("rrext_deploy_watch", args))

    @staticmethod
    def is_event(action, project_id=None, run_id=None, **fields):
        def pred(body):
            if body.get("action") != action:
                return False
            if project_id is not None and body.get("projectId") != project_id:
                return False
            run = body.get("run") or {}
            if run_id is not None and run.get("id") != run_id:
                return False
            for k, v in fields.items():
                if body.get(k, run.get(k)) != v:
                    return False
            return True
        return pred

    async def finished(self, c, run_id, timeout=30.0):
        """The run_finished event of run_id (c must be watching)."""
        ev = await c.wait_event(self.is_event("run_finished", run_id=run_id),
                                timeout)
        return ev["body"]["run"]

    async def started(self, c, run_id=None, project_id=None, timeout=30.0):
        ev = await c.wait_event(self.is_event("run_started", project_id,
                                              run_id), timeout)
        return ev["body"]["run"]

    async def wait_dead(self, pid, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not proc_dead(pid):
            if time.monotonic() > deadline:
                raise AssertionError("process %d still alive (state %s)"
                                     % (pid, proc_state(pid)))
            await asyncio.sleep(0.01)

    def assertRunShape(self, run):
        want = {"id", "projectId", "userId", "trigger", "outcome", "reason",
                "scheduled_for", "created_at", "started_at", "finished_at",
                "exit_code", "signal", "output_tail", "idempotency_key"}
        if run["outcome"] == "missed":
            want |= {"missed_count", "window_start", "window_end"}
        self.assertEqual(set(run), want, run)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def is_fifo(p):
    return stat.S_ISFIFO(os.stat(p).st_mode)
