"""standin.py -- a stand-in RocketRide engine server for tests and benchmarks.

rrdeploy runs pipelines on a RocketRide server: it authenticates over a
WebSocket, sends `execute`, follows the task through `rrext_monitor` events
and `rrext_get_task_status`, and stops it with `terminate`. A real server
needs the engine, its Python nodes and minutes of start-up; this module plays
the server's part instead, without any engine, so that tests can drive every
path of a client: success, failure, slow or stuck start-up, lost
connections, a restarted server, rejected credentials.

What is simulated
  - The transport: a WebSocket at /task/service on 127.0.0.1, one compact
    single-line JSON object per text frame, one server `seq` counter per
    connection shared by responses and events, every request handled in its
    own asyncio task (replies may come out of order), pings answered.
  - Authentication: a table of API keys, each mapped to a user, a team and
    the team's permissions, changeable while running (add, revoke, expire,
    remove); the real server's failure texts, the five-attempt limit per
    connection, the `Bearer ` prefix, task-scoped `tk_`/`pk_` credentials,
    the gate that answers `Not authenticated` and closes, `deauth`,
    `rrext_ping`, `rrext_public_probe`, `Invalid command: <cmd>`.
  - Tasks: `execute` validates the request in the real server's order with
    its error texts, derives the same deterministic tokens, and runs a
    simulated task through the real state numbers (1 starting, 2
    initialising, 3 running, 4 stopping, 5 completed, 6 cancelled) with
    status updates, `apaevt_task` begin/end events, DETAIL error events and
    console output. What the task does is chosen by the source component's
    provider (see SCENARIOS) or by an `x-double` object in its config.
    `execute` answers only once the task is running, after the events that
    the start-up broadcast.
  - Observation: `rrext_monitor` subscriptions keyed by project and source
    (they may precede the task), replace semantics, catch-up events before
    the reply; `rrext_get_task_status`, `rrext_get_token`, `rrext_get_tasks`.
  - Stopping: `terminate` (answered once the task is cancelled), the idle
    TTL sweep, and the retention sweep that forgets finished tasks and the
    subscriptions that point at them.
  - Data: `rrext_process` open/write/close on running tasks (no processing;
    it only resets the idle counter and counts bytes).

How a successful batch run ends is switchable (`exit_mode`): "intended"
ends it as state 5 "Completed" with exit code 0; "head" ends it as state 6
"Stopped" with exit code 1 and an empty exit message, which is what the
current real server reports after the engine prints its exit record.

Tests use it in-process (StandinServer on the test's asyncio loop) and
steer it through `server.faults`, the key methods and `server.restart()`;
they inspect `server.tasks`, `server.history` and `server.requests`.
Benchmarks and manual runs start it as a program:

    python3 standin.py --port 5565 --key MYKEY=alice --exit-mode head

Only the standard library and `websockets` (10.x asyncio API) are used.
"""

import argparse
import asyncio
import collections
import copy
import hashlib
import http
import itertools
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

import websockets
import websockets.exceptions

WS_PATH = "/task/service"
VERSION = "1.0.0-standin"

# Task states, as numbered on the wire.
(NONE, STARTING, INITIALIZING, RUNNING, STOPPING, COMPLETED,
 CANCELLED) = range(7)
ACTIVE_STATES = (STARTING, INITIALIZING, RUNNING, STOPPING)
TERMINAL_STATES = (COMPLETED, CANCELLED)

# Subscription bits of rrext_monitor.
DEBUGGER, DETAIL, SUMMARY, OUTPUT, FLOW, TASK, SSE, DASHBOARD = (
    1, 2, 4, 8, 16, 32, 64, 128)
EVENT_BITS = {"NONE": 0, "DEBUGGER": DEBUGGER, "DETAIL": DETAIL,
              "SUMMARY": SUMMARY, "OUTPUT": OUTPUT, "FLOW": FLOW, "TASK": TASK,
              "SSE": SSE, "DASHBOARD": DASHBOARD, "ALL": 255}

DEFAULT_TTL = 900           # seconds, when `execute` gives none
MAX_AUTH_ATTEMPTS = 5       # per connection, successes included

# Permission sets. An org admin gets FULL_TEAM_PERMISSIONS on every team of
# its organisation; everyone else gets the team's own list.
FULL_TEAM_PERMISSIONS = ["team.admin", "task.control", "task.data",
                         "task.monitor", "task.debug", "task.store"]
OSS_TEAM_PERMISSIONS = ["team.admin", "read", "write", "execute",
                        "task.control", "task.data", "task.monitor",
                        "task.debug", "task.store"]
DEFAULT_KEY_PERMISSIONS = ["task.control", "task.data", "task.monitor"]
TK_PERMISSIONS = ["task.control", "task.data", "task.monitor", "task.debug",
                  "task.store"]
PK_PERMISSIONS = ["task.data"]

# Texts the real server sends, which clients may match exactly.
NOT_RUNNING = "Your pipeline is not running"
TOKEN_REQUIRED = "Task token is required"
ACCESS_DENIED = "Access denied: no permissions for this task"
ALREADY_RUNNING = "Pipeline is already running."
ALREADY_COMPLETED = "Task has already completed"
HANG_TEXT = ("No subprocess events received for 300 seconds. Task stuck in "
             "state {state} (NONE=0, STARTING=1, INITIALIZING=2, RUNNING=3, "
             "STOPPING=4, COMPLETED=5, CANCELLED=6)")
RESIDENT_STATUS = "Webhook ready - system is ready to accept requests"


# ---------------------------------------------------------------- identity

def _hash32(content):
    # The server hashes Python's default json.dumps of the content with
    # sorted keys (", " and ": " separators, \uXXXX escapes), so a client can
    # compute the same token before executing or after losing the reply.
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def task_token(user_id, project_id, source):
    """The token `execute` gives a task when the request names none."""
    return "tk_" + _hash32({"userId": user_id, "project_id": project_id,
                            "source": source})


def public_token(project_id, source):
    """The task's public (data-only) token."""
    return "pk_" + _hash32({"project_id": project_id, "source": source})


def task_id(token, source):
    """Display id: 8 characters of the token without its tk_/pk_ prefix,
    a dot, the source. A custom token is used as it is."""
    for prefix in ("tk_", "pk_"):
        if token.startswith(prefix):
            token = token[len(prefix):]
            break
    return "%s.%s" % (token[:8], source)


def blank_status(project_id, source, status=""):
    """A TASK_STATUS with every field at its default, in wire order."""
    return {
        "name": "", "project_id": project_id, "source": source,
        "completed": False, "state": NONE, "startTime": 0.0, "endTime": 0.0,
        "debuggerAttached": False, "status": status, "warnings": [],
        "errors": [], "currentObject": "", "currentSize": 0, "notes": [],
        "totalSize": 0, "totalCount": 0, "completedSize": 0,
        "completedCount": 0, "failedSize": 0, "failedCount": 0,
        "wordsSize": 0, "wordsCount": 0, "rateSize": 0, "rateCount": 0,
        "serviceUp": False, "exitCode": 0, "exitMessage": "",
        "pipeflow": {"totalPipes": 0, "byPipe": {}},
        "metrics": {"cpu_percent": 0.0, "cpu_memory_mb": 0.0,
                    "gpu_memory_mb": 0.0, "peak_cpu_percent": 0.0,
                    "peak_cpu_memory_mb": 0.0, "peak_gpu_memory_mb": 0.0,
                    "avg_cpu_percent": 0.0, "avg_cpu_memory_mb": 0.0,
                    "avg_gpu_memory_mb": 0.0},
        "tokens": {"cpu_utilization": 0.0, "cpu_memory": 0.0,
                   "gpu_memory": 0.0, "gpu_inference": 0.0, "custom": {},
                   "total": 0.0},
    }


def _copy_json(value):
    """A deep copy of JSON-shaped data (dicts, lists, scalars): what
    copy.deepcopy gives for it, several times faster, which matters when a
    thousand tasks start at once."""
    if type(value) is dict:
        return {k: _copy_json(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_json(v) for v in value]
    return value


def _snapshot(status):
    # Status dicts are mutated as the task moves on; anything sent or handed
    # to a test is a copy of the moment.
    return _copy_json(status)


# ---------------------------------------------------------------- settings

@dataclass
class Timings:
    """How long the simulated engine takes, in milliseconds. The defaults
    are quick, for tests; `engine_like()` gives the slower values that
    resemble a real server (one status a second, minute sweeps, five
    minutes of retention)."""
    init_ms: float = 20          # STARTING -> INITIALIZING
    ready_ms: float = 100        # INITIALIZING -> RUNNING
    tick_ms: float = 100         # periodic status update in states 1-4
                                 # (0: none)
    run_ms: float = 300          # RUNNING -> natural end of a batch
    stop_ms: float = 50          # terminate/TTL -> STOPPING -> CANCELLED
    slow_stop_ms: float = 2000   # the same, for the slow_stop scenario
    hang_ms: Optional[float] = None   # hang_start: fail `execute` after
                                      # this long (None: never answer)
    output_ms: Optional[float] = 100  # one console line per interval while
                                      # RUNNING (None or 0: no output)
    ttl_sweep_ms: float = 1000   # idle-TTL sweep period
    keep_ms: float = 60000       # finished tasks kept this long...
    cleanup_sweep_ms: float = 1000   # ...checked this often

    @classmethod
    def engine_like(cls):
        return cls(init_ms=20, ready_ms=300, tick_ms=1000, run_ms=1000,
                   stop_ms=100, slow_stop_ms=10000, hang_ms=None,
                   output_ms=1000, ttl_sweep_ms=60000, keep_ms=300000,
                   cleanup_sweep_ms=60000)


# Default behaviour by source provider; anything else runs
# StandinServer.default_scenario.
SCENARIOS = {
    "webhook": "resident", "chat": "resident", "dropper": "resident",
    "telegram": "resident",
    "filesys": "batch_ok",
    "test_fail_start": "fail_start",
    "test_fail_run": "fail_run",
    "test_fast_end": "fast_end",
    "test_hang_start": "hang_start",
    "test_slow_stop": "slow_stop",
    "test_stop_hang": "stop_hang",
}
SCENARIO_NAMES = ("resident", "batch_ok", "fail_start", "fail_run",
                  "fast_end", "hang_start", "slow_stop", "stop_hang")
FAIL_RUN_MESSAGE = "Simulated pipeline failure"


@dataclass
class Scenario:
    """What one simulated task does, resolved when it is created.

    kind        resident   RUNNING until stopped (terminate or TTL)
                batch_ok   RUNNING for run_ms, then ends by itself, cleanly
                fail_run   like batch_ok, but reports `errors` halfway and
                           ends as a failure with `exit_message`
                fail_start stops during start-up (state 2 -> 4 -> 6): the
                           `execute` fails with `exit_message`
                fast_end   reaches RUNNING and ends at once, before the
                           `execute` waiter sees RUNNING
                hang_start never reaches RUNNING
    stop_ms     delay between a stop request and STOPPING; None: the stop
                never completes (terminate never answers)
    """
    kind: str
    ready_ms: float
    run_ms: float
    stop_ms: Optional[float]
    hang_ms: Optional[float]
    status_text: str
    errors: List[str]
    exit_message: str
    output: Any = None       # None: "line k" forever; int n: n such lines;
                             # list: exactly these lines

    @classmethod
    def resolve(cls, provider, config, timings, default_scenario,
                source=""):
        name = SCENARIOS.get(provider, default_scenario)
        double = config.get("x-double") if isinstance(config, dict) else None
        if not isinstance(double, dict):
            double = {}
        name = double.get("scenario", name)
        if name not in SCENARIO_NAMES:
            raise ValueError('x-double: unknown scenario "%s"' % (name,))
        for k in ("readyMs", "runMs", "hangMs", "stopMs"):
            v = double.get(k)
            if v is not None and (isinstance(v, bool) or
                                  not isinstance(v, (int, float))):
                raise ValueError("x-double: %s must be a number" % k)
        errs = double.get("errors", [])
        if not (isinstance(errs, list) and all(isinstance(x, str)
                                               for x in errs)):
            raise ValueError("x-double: errors must be a list of strings")
        for k in ("exitMessage", "status"):
            if not isinstance(double.get(k, ""), str):
                raise ValueError("x-double: %s must be a string" % k)
        out = double.get("output")
        if out is not None and not (
                isinstance(out, list) and all(isinstance(x, str)
                                              for x in out)
                or isinstance(out, int) and not isinstance(out, bool)):
            raise ValueError("x-double: output must be a list of strings "
                             "or a count")
        kind = {"slow_stop": "resident", "stop_hang": "resident"}.get(name,
                                                                      name)
        stop_ms = {"slow_stop": timings.slow_stop_ms,
                   "stop_hang": None}.get(name, timings.stop_ms)
        if "stopMs" in double:
            v = double["stopMs"]
            stop_ms = None if v is None or v < 0 else v
        errors = []
        exit_message = ""
        if kind == "fail_run":
            exit_message = FAIL_RUN_MESSAGE
            errors = ["Failed*%s*%s" % (FAIL_RUN_MESSAGE, source)]
        errors = list(double.get("errors", errors))
        exit_message = double.get("exitMessage", exit_message)
        text = RESIDENT_STATUS if kind == "resident" else "Processing"
        return cls(kind=kind,
                   ready_ms=double.get("readyMs", timings.ready_ms),
                   run_ms=double.get("runMs", timings.run_ms),
                   stop_ms=stop_ms,
                   hang_ms=double.get("hangMs", timings.hang_ms),
                   status_text=double.get("status", text),
                   errors=errors, exit_message=exit_message,
                   output=double.get("output"))


@dataclass
class Faults:
    """Misbehaviour on demand. Tests set the fields; `reset()` clears them.

    drop_execute          the next N `execute` requests lose their
                          connection before the reply (the task goes on)
    drop_execute_when     "accepted": right after the task is registered;
                          "running": at the moment the reply would be sent
    reject_auth_text      every `auth` fails with this text, then the
                          connection closes ...
    reject_auth_count     ... for this many attempts (None: until cleared)
    silence_end_event     finished tasks send no `apaevt_task` end
    silence_final_status  finished tasks send no final status update
    duplicate_final_status  the final status update is sent again after the
                          end event
    """
    drop_execute: int = 0
    drop_execute_when: str = "accepted"
    reject_auth_text: Optional[str] = None
    reject_auth_count: Optional[int] = None
    silence_end_event: bool = False
    silence_final_status: bool = False
    duplicate_final_status: bool = False

    def reset(self):
        for f, v in Faults().__dict__.items():
            setattr(self, f, v)


# ---------------------------------------------------------------- accounts

@dataclass
class ApiKey:
    """One entry of the key table: who a credential is, and what it may do.
    The key's user belongs to one team (default: named after the user) of
    one organisation; `permissions` are that team's permissions, unless
    `org_admin` grants the full set."""
    key: str
    user_id: str
    permissions: List[str] = field(
        default_factory=lambda: list(DEFAULT_KEY_PERMISSIONS))
    team_id: Optional[str] = None
    org_id: Optional[str] = None
    org_admin: bool = False
    display_name: Optional[str] = None
    username: Optional[str] = None
    team_name: Optional[str] = None
    org_name: Optional[str] = None
    expires_at: Optional[float] = None   # Unix time; None: never
    revoked: bool = False
    revoked_text: str = "Authentication failed"
    expired_text: str = "Authentication failed"

    def account(self, credential):
        team = self.team_id or self.user_id
        org = self.org_id or team
        return Account(
            credential=credential, user_id=self.user_id, default_team=team,
            organizations=[{
                "id": org, "name": self.org_name or org,
                "permissions": ["org.admin"] if self.org_admin else [],
                "teams": [{"id": team, "name": self.team_name or team,
                           "permissions": list(self.permissions)}]}],
            display_name=self.display_name or self.user_id,
            preferred_username=self.username or self.user_id)


def oss_key(key="MYAPIKEY"):
    """The single developer key of an open-source server: user `local`,
    team `local`, organisation admin."""
    return ApiKey(key=key, user_id="local", permissions=OSS_TEAM_PERMISSIONS,
                  team_id="local", org_id="local", org_admin=True,
                  display_name="RocketRide Developer", username="developer",
                  team_name="Development", org_name="Local")


@dataclass
class Account:
    """An authenticated identity as a connection holds it."""
    credential: str
    user_id: str
    default_team: str
    organizations: List[Dict[str, Any]]
    display_name: str = ""
    preferred_username: str = ""
    scope: Optional[str] = None    # "tk"/"pk": locked to one task

    def team_permissions(self, team_id):
        """Permissions on a team; [] when not a member (no access)."""
        for org in self.organizations:
            for team in org["teams"]:
                if team["id"] == team_id:
                    if "org.admin" in org["permissions"]:
                        return list(FULL_TEAM_PERMISSIONS)
                    return list(team["permissions"])
        return []

    def has_permission(self, perm):
        return perm in self.team_permissions(self.default_team)

    def org_of(self, team_id):
        for org in self.organizations:
            if any(t["id"] == team_id for t in org["teams"]):
                return org["id"]
        return ""

    def connect_result(self):
        """The `auth` reply body, shaped as the real server's."""
        return {
            "userToken": self.credential, "userId": self.user_id,
            "displayName": self.display_name, "givenName": "",
            "familyName": "", "preferredUsername": self.preferred_username,
            "email": "", "emailVerified": False, "phoneNumber": "",
            "phoneNumberVerified": False, "locale": "",
            "defaultTeam": self.default_team,
            "organizations": copy.deepcopy(self.organizations),
            "apps": [], "capabilities": ["oss"]}


class AuthRejected(Exception):
    """An `auth` failure: the text is sent, then the connection closes."""


# ---------------------------------------------------------------- records

@dataclass
class RequestRecord:
    """One request as received, for tests to inspect."""
    conn_id: int
    command: str
    arguments: Any
    credential: Optional[str]      # the connection's credential, if any
    user_id: Optional[str]
    at: float                      # Unix time of receipt


# ---------------------------------------------------------------- tasks

class Task:
    """One simulated pipeline run: the record `execute` registers under its
    token, its status, and the coroutine that moves it through the states.

    Public attributes a test may read: token, public_token, id, project_id,
    source, provider, name, user_id, team_id, credential (the credential
    the starting connection authenticated with), conn_id, ttl, idle (the
    idle counter, seconds), arguments (the `execute` arguments), env (its
    ROCKETRIDE_* entries), scenario, status (live dict), stop_requested,
    pipes ({pipe_id: bytes written})."""

    def __init__(self, server, *, token, source, project_id, provider,
                 pipeline, arguments, account, conn_id, team_id, org_id,
                 scenario, env, label):
        self.server = server
        self.token = token
        self.public_token = public_token(project_id, source)
        self.id = task_id(token, source)
        self.project_id = project_id
        self.source = source
        self.provider = provider
        self.pipeline = pipeline
        self.arguments = arguments
        self.user_id = account.user_id
        self.credential = account.credential
        self.conn_id = conn_id
        self.team_id = team_id
        self.org_id = org_id
        self.scenario = scenario
        self.env = env
        self.ttl = arguments.get("ttl", DEFAULT_TTL)
        self.idle = 0
        self.pipes = {}
        self.created_at = time.time()
        self.stop_requested = False
        self.status = blank_status(project_id, source)
        self.status["name"] = label
        self.name = label
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._helpers = []
        self._main = None

    # -- reading
    @property
    def state(self):
        return self.status["state"]

    @property
    def done(self):
        return self.state in TERMINAL_STATES

    def snapshot(self):
        return _snapshot(self.status)

    def info(self):
        """A plain summary, for reports."""
        return {"id": self.id, "token": self.token,
                "projectId": self.project_id, "source": self.source,
                "provider": self.provider, "userId": self.user_id,
                "credential": self.credential, "state": self.state,
                "status": self.status["status"],
                "scenario": self.scenario.kind}

    # -- control
    def start(self):
        self._main = asyncio.ensure_future(self._lifecycle())
        self._main.add_done_callback(self._crashed)

    def _crashed(self, fut):
        # A bug in the simulation would otherwise leave the task silently
        # stuck; say so where the person running the tests will see it.
        if not fut.cancelled() and fut.exception() is not None:
            print("standin: task %s crashed: %r" % (self.id, fut.exception()),
                  file=sys.stderr, flush=True)

    def request_stop(self):
        """Ask the task to stop (terminate, TTL); it ends as CANCELLED
        after its scenario's stop delay."""
        if not self.done:
            self.stop_requested = True
            self._stop.set()

    async def stop(self):
        """Request a stop and wait until the task is terminal."""
        self.request_stop()
        await self.wait_terminal()

    async def wait_terminal(self):
        while not self.done:
            await self._changed.wait()

    def abandon(self):
        """Stop simulating without sending anything more (the record is
        gone: a failed start, a server restart)."""
        for t in [self._main] + self._helpers:
            if t is not None and not t.done():
                t.cancel()

    async def wait_until_running(self):
        """What `execute` waits for: RUNNING, or the reason it never came."""
        hang = self.scenario.hang_ms if self.scenario.kind == "hang_start" \
            else None
        deadline = None if hang is None else time.monotonic() + hang / 1000
        while True:
            state = self.state
            if state == RUNNING:
                return
            if state == COMPLETED:
                raise RuntimeError(ALREADY_COMPLETED)
            if state == CANCELLED:
                raise RuntimeError(self.status["exitMessage"])
            changed = self._changed
            left = None if deadline is None else deadline - time.monotonic()
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                raise TimeoutError(HANG_TEXT.format(state=self.state))

    # -- simulation
    def _notify(self):
        # Wake everything waiting for this task to change; a fresh event
        # each time, so a waiter that looked at the state and then waits
        # never misses the change after its look.
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()
        self.server._notify()

    def _send_status(self):
        self.server._broadcast(self, SUMMARY, "apaevt_status_update",
                               self.snapshot())

    def _set(self, **changes):
        self.status.update(changes)
        self._send_status()
        self._notify()

    def _task_event(self, action):
        self.server._broadcast(self, TASK, "apaevt_task", {
            "action": action, "name": self.name,
            "projectId": self.project_id, "source": self.source})

    async def _pause(self, ms):
        """Wait ms (None: forever) unless a stop is requested first.
        True when the wait ended because of a stop."""
        if self._stop.is_set():
            return True
        try:
            await asyncio.wait_for(self._stop.wait(),
                                   None if ms is None else max(ms, 0) / 1000)
            return True
        except asyncio.TimeoutError:
            return False

    async def _lifecycle(self):
        sc = self.scenario
        self.status["startTime"] = time.time()
        self._set(state=STARTING, status="")
        self._helpers.append(asyncio.ensure_future(self._ticker()))
        if await self._pause(self.server.timings.init_ms):
            return await self._stopped()
        # INITIALIZING: the engine process exists; `begin` goes out first.
        self.status["state"] = INITIALIZING
        self._task_event("begin")
        self._set(status="Loading pipeline")
        if sc.kind == "hang_start":
            await self._pause(None)
            return await self._stopped()
        if await self._pause(sc.ready_ms):
            return await self._stopped()
        if sc.kind == "fail_start":
            self._report_errors()
            return self._end(failed=True)
        self._set(state=RUNNING, serviceUp=True, status=sc.status_text)
        if sc.kind == "fast_end":
            # Ends without yielding to the loop: the `execute` waiter never
            # observes RUNNING, as when a real run beats the server's poll.
            return self._end(failed=bool(sc.errors or sc.exit_message))
        self._helpers.append(asyncio.ensure_future(self._output()))
        if sc.kind == "resident":
            if sc.errors:
                self._report_errors()
            await self._pause(None)
            return await self._stopped()
        half = sc.run_ms / 2
        if await self._pause(half):
            return await self._stopped()
        if sc.errors:
            self._report_errors()
        if await self._pause(sc.run_ms - half):
            return await self._stopped()
        self._end(failed=sc.kind == "fail_run")

    def _report_errors(self):
        # As the engine's error lines arrive: each is kept in errors[] and
        # passed on live as a DETAIL event.
        for entry in self.scenario.errors:
            self.status["errors"] = (self.status["errors"] + [entry])[-50:]
            self.server._broadcast(self, DETAIL, "apaevt_status_error",
                                   {"message": entry})
        self._notify()

    def _end(self, failed):
        """The engine exits by itself: service down, STOPPING, final."""
        if self.status["serviceUp"]:
            self._set(serviceUp=False)
        self._set(state=STOPPING, status="Stopping")
        if failed:
            final = dict(state=CANCELLED, status="Stopped", exitCode=1,
                         exitMessage=self.scenario.exit_message)
        elif self.server.exit_mode == "head":
            final = dict(state=CANCELLED, status="Stopped", exitCode=1,
                         exitMessage="")
        else:
            final = dict(state=COMPLETED, status="Completed", exitCode=0,
                         exitMessage="")
        self._finish(final)

    async def _stopped(self):
        """A stop was requested: after the scenario's stop delay (forever
        for a stop that hangs), STOPPING then CANCELLED."""
        delay = self.scenario.stop_ms
        if delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(delay / 1000)
        self._set(state=STOPPING, status="Stopping", serviceUp=False)
        self._finish(dict(state=CANCELLED, status="Stopped", exitCode=0,
                          exitMessage=""))

    def _finish(self, final):
        faults = self.server.faults
        self.status.update(final)
        self.status.update(completed=True, endTime=time.time())
        if not faults.silence_final_status:
            self._send_status()
        if not faults.silence_end_event:
            self._task_event("end")
        if faults.duplicate_final_status:
            self._send_status()
        for t in self._helpers:
            t.cancel()
        self._notify()

    async def _ticker(self):
        tick = self.server.timings.tick_ms / 1000
        if tick <= 0:
            return
        while True:
            await asyncio.sleep(tick)
            if self.state not in ACTIVE_STATES:
                return
            self._send_status()

    async def _output(self):
        interval = self.server.timings.output_ms or 0
        wanted = self.scenario.output
        if wanted is None:
            if interval <= 0:
                return          # endless output needs an interval
            lines = ("line %d" % k for k in itertools.count(1))
        elif isinstance(wanted, list):
            lines = iter(wanted)
        else:
            lines = ("line %d" % k for k in range(1, wanted + 1))
        for line in lines:
            await asyncio.sleep(max(interval, 0) / 1000)
            if self.state != RUNNING:
                return
            self.server._broadcast(self, OUTPUT, "output", {
                "category": "console", "output": "%s\n" % line})


# ---------------------------------------------------------------- connections

class Session:
    """One client connection: its authentication, its subscriptions, its
    outgoing queue. Every frame sent goes through `send`, which numbers it
    and queues it, so anything queued while handling a request (events it
    caused, catch-up events) leaves before that request's reply."""

    def __init__(self, server, ws, conn_id):
        self.server = server
        self.ws = ws
        self.conn_id = conn_id
        self.account = None
        self.auth_attempts = 0
        self.monitors = {}        # subscription key -> event bit mask
        self.seq = 0
        self.closing = False
        self.opened_at = time.time()
        self._out = asyncio.Queue()
        self._inflight = set()

    # -- inspection helpers
    @property
    def user_id(self):
        return self.account.user_id if self.account else None

    @property
    def credential(self):
        return self.account.credential if self.account else None

    # -- sending
    def send(self, msg):
        if self.closing:
            return
        self.seq += 1
        frame = {"type": msg.pop("type"), "seq": self.seq}
        frame.update(msg)
        self._out.put_nowait(json.dumps(frame, separators=(",", ":"),
                                        ensure_ascii=False))

    def send_event(self, event, body):
        self.send({"type": "event", "event": event, "body": body})

    def respond(self, request, body=None):
        msg = {"type": "response", "request_seq": request.get("seq"),
               "command": request.get("command"), "success": True}
        if body is not None:
            msg["body"] = body
        self.send(msg)

    def fail(self, request, message):
        self.send({"type": "response", "request_seq": request.get("seq"),
                   "command": request.get("command"), "success": False,
                   "message": message})

    def close_after_queued(self):
        """Close once everything already queued has been sent."""
        if not self.closing:
            self._out.put_nowait(None)
            self.closing = True

    def abort(self):
        """Drop the connection at once, without a close handshake."""
        self.closing = True
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    async def _writer(self):
        while True:
            frame = await self._out.get()
            if frame is None:
                await self.ws.close()
                return
            await self.ws.send(frame)

    # -- receiving
    async def serve(self):
        writer = asyncio.ensure_future(self._writer())
        try:
            async for frame in self.ws:
                request = _parse_frame(frame)
                if request is None or request.get("type") != "request":
                    continue     # not a request: nothing to answer
                t = asyncio.ensure_future(self._handle(request))
                self._inflight.add(t)
                t.add_done_callback(self._inflight.discard)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.closing = True
            for t in list(self._inflight):
                t.cancel()
            writer.cancel()
            await asyncio.gather(writer, *self._inflight,
                                 return_exceptions=True)

    async def _handle(self, request):
        command = request.get("command", "")
        args = request.get("arguments")
        if args is None:
            args = {}
        self.server._record(self, command, args)
        # Before authentication only `auth` and public commands get through.
        if not (command == "auth" or (isinstance(command, str) and
                                      command.startswith("rrext_public_"))):
            if self.account is None:
                self.fail(request, "Not authenticated")
                self.close_after_queued()
                return
        handler = self.HANDLERS.get(command)
        if handler is None:
            self.fail(request, "Invalid command: %s" % (command,))
            return
        try:
            body = await handler(self, request, args)
        except AuthRejected as e:
            self.fail(request, str(e))
            self.close_after_queued()
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # The real server answers with the exception's text, whatever
            # it is; clients match only the documented texts.
            self.fail(request, str(e))
            return
        if body is not _NO_REPLY:
            self.respond(request, body)

    # -- commands: connection
    async def cmd_auth(self, request, args):
        self.auth_attempts += 1
        if self.auth_attempts > MAX_AUTH_ATTEMPTS:
            raise AuthRejected("Too many authentication attempts")
        self.account = self.server._authenticate(args.get("auth") or "")
        return self.account.connect_result()

    async def cmd_deauth(self, request, args):
        self.account = None
        return {}

    async def cmd_ping(self, request, args):
        return {"pong": True}

    async def cmd_probe(self, request, args):
        return {"version": VERSION, "capabilities": ["oss"],
                "platform": sys.platform, "apps": []}

    # -- task lookup with the real server's checks
    def _task_token(self, request, args):
        acct = self.account
        if acct.scope == "pk":
            return self.server._task_by_public(acct.credential).token
        if acct.scope == "tk":
            return acct.credential
        return args.get("token") or request.get("token")

    def _get_task(self, request, args, perm):
        token = self._task_token(request, args)
        if not token:
            raise ValueError(TOKEN_REQUIRED)
        task = self.server._tasks.get(token)
        if task is None:
            raise RuntimeError(NOT_RUNNING)
        if self.account.scope is None:
            perms = self.account.team_permissions(task.team_id)
            if not perms:
                raise PermissionError(ACCESS_DENIED)
            if perm and perm not in perms:
                raise PermissionError(
                    "Permission %r denied for this task" % perm)
        return task

    def _task_by_project(self, project_id, source):
        """First registered task of project+source, whoever owns it."""
        task = self.server._task_by_project(project_id, source)
        perms = self.account.team_permissions(task.team_id)
        if not perms:
            raise PermissionError(ACCESS_DENIED)
        if "task.monitor" not in perms:
            raise PermissionError(
                "Permission 'task.monitor' denied for this task")
        return task

    def _verify(self, perm):
        if not self.account.has_permission(perm):
            raise PermissionError("Permission %r denied" % perm)

    # -- commands: tasks
    async def cmd_execute(self, request, args):
        acct = self.account
        self._verify("task.control")
        pipeline = args.get("pipeline")
        if pipeline is not None:
            _plan_check(pipeline)
        team_id = args.get("teamId") or acct.default_team
        org_id = acct.org_of(team_id)
        # Only ROCKETRIDE_* keys of `env` are kept; it must be an object.
        env = {k: v for k, v in args.get("env", {}).items()
               if k.startswith("ROCKETRIDE_")}
        source, component, project_id, provider = _resolve_source(
            args, pipeline)
        token = args.get("token", None)
        if token is None:
            token = task_token(acct.user_id, project_id, source)
        if not pipeline:
            raise RuntimeError(
                "Missing pipeline configuration in launch request")

        server = self.server
        existing = server._tasks.get(token)
        if existing is not None:
            if not existing.done:
                if args.get("useExisting", False):
                    await existing.wait_until_running()
                    return server._execute_body(existing)
                raise ValueError(ALREADY_RUNNING)
            # A finished run with the same token is replaced, silently.
            server._tasks.pop(token, None)

        config = component["config"]
        scenario = Scenario.resolve(provider, config, server.timings,
                                    server.default_scenario, source)
        label_component = (component.get("name") or
                           (config.get("name") if isinstance(config, dict)
                            else None) or source)
        task = Task(server, token=token, source=source,
                    project_id=project_id, provider=provider,
                    pipeline=pipeline, arguments=args, account=acct,
                    conn_id=self.conn_id, team_id=team_id, org_id=org_id,
                    scenario=scenario, env=env,
                    label="%s.%s" % (args.get("name") or task_id(token,
                                                                 source),
                                     label_component))
        server._register(task)
        task.start()

        faults = server.faults
        drop = faults.drop_execute > 0
        if drop:
            faults.drop_execute -= 1
            if faults.drop_execute_when == "accepted":
                self.abort()
                return _NO_REPLY
        try:
            await task.wait_until_running()
        except Exception:
            # A start that failed leaves no record (its events went out).
            if server._tasks.get(token) is task:
                server._tasks.pop(token)
                server._notify()
            task.abandon()
            raise
        if drop:
            self.abort()
            return _NO_REPLY
        return server._execute_body(task)

    async def cmd_get_task_status(self, request, args):
        return self._get_task(request, args, "task.monitor").snapshot()

    async def cmd_get_token(self, request, args):
        self._verify("task.monitor")
        task = self._task_by_project(args.get("projectId"),
                                     args.get("source"))
        return {"token": task.token}

    async def cmd_get_tasks(self, request, args):
        self._verify("task.monitor")
        tasks = []
        for task in list(self.server._tasks.values()):
            if not self.account.team_permissions(task.team_id):
                continue
            if task.state != RUNNING:
                continue
            p = task.pipeline if isinstance(task.pipeline, dict) else {}
            desc = p.get("description")
            tasks.append({"name": p.get("name") or task.source,
                          "description": desc if isinstance(desc, str)
                          and desc else "RocketRide DTC MCP Tool",
                          "source": task.source, "token": task.token,
                          "status": task.status["status"],
                          "pipeline": task.pipeline})
        return {"tasks": tasks}

    async def cmd_terminate(self, request, args):
        task = self._get_task(request, args, "task.control")
        await task.stop()
        return None

    async def cmd_process(self, request, args):
        task = self._get_task(request, args, "task.data")
        await task.wait_until_running()
        task.idle = 0    # data is the only thing that keeps a task alive
        sub = args.get("subcommand")
        if sub == "open":
            pipe_id = len(task.pipes) + 1
            task.pipes[pipe_id] = 0
            return {"pipe_id": pipe_id}
        if sub == "write":
            data = args.get("data") or b""
            pid = args.get("pipe_id")
            task.pipes[pid] = task.pipes.get(pid, 0) + len(data)
            return None
        if sub == "close":
            return {}
        raise ValueError("Invalid subcommand: %s" % (sub,))

    async def cmd_monitor(self, request, args):
        token = self._task_token(request, args)
        project_id = args.get("projectId")
        source = args.get("source")
        pipe_id = args.get("pipeId")
        mask = _event_mask(args)
        task = None
        if token == "*":
            if project_id or source:
                raise ValueError("You must specifiy either token or "
                                 "project_id/source, not both")
            key = "*"
        elif token:
            if project_id or source:
                raise ValueError("You must specifiy either token or "
                                 "project_id/source, not both")
            task = self.server._tasks.get(token)
            if task is None:
                raise RuntimeError(NOT_RUNNING)
            if not self.account.team_permissions(task.team_id):
                raise PermissionError(ACCESS_DENIED)
            # By token or by project, the subscription is the project's:
            # it also follows later runs of the same project and source.
            key = "p.%s.%s" % (task.project_id, task.source)
        elif project_id and source:
            key = "p.%s.%s" % (project_id, source)
            try:
                task = self._task_by_project(project_id, source)
            except PermissionError:
                raise
            except Exception:
                task = None     # fine: the task may come later
        else:
            raise ValueError("You must specifiy either token or "
                             "project_id/source")
        if pipe_id is not None and key != "*":
            key = "%s.%s" % (key, pipe_id)
        if mask == 0:
            self.monitors.pop(key, None)
            self.server._unwatch(self, key)
            return None
        before = self.monitors.get(key, 0)
        self.monitors[key] = mask       # replaces, never merges
        self.server._watch(self, key)
        self._catch_up(mask & ~before, task, project_id, source)
        return None

    def _catch_up(self, new_bits, task, project_id, source):
        """Current state for newly subscribed bits, sent before the reply."""
        if new_bits & SUMMARY:
            if task is not None:
                body = task.snapshot()
                body["__id"] = task.id
                self.send_event("apaevt_status_update", body)
            elif project_id is not None and source is not None:
                body = blank_status(project_id, source, "Not running")
                body["__id"] = "%s.%s" % (project_id, source)
                self.send_event("apaevt_status_update", body)
        if new_bits & TASK:
            running = [{"id": t.id, "name": t.status["name"],
                        "projectId": t.project_id, "source": t.source}
                       for t in list(self.server._tasks.values())
                       if t.state in ACTIVE_STATES
                       and self.account.team_permissions(t.team_id)]
            self.send_event("apaevt_task", {"action": "running",
                                            "tasks": running})

    # -- event delivery
    def deliver(self, task, bit, event, body):
        """Send a task event if this connection subscribed to it and may
        see it. Delivery failures are silent, as on the real server."""
        acct = self.account
        if acct is None or self.closing:
            return
        if not acct.has_permission("task.data" if bit == SSE
                                   else "task.monitor"):
            return
        if not acct.team_permissions(task.team_id):
            return
        key = "p.%s.%s" % (task.project_id, task.source)
        mask = self.monitors.get(key, 0)
        pipe = body.get("pipe_id")
        if pipe is not None:
            mask |= self.monitors.get("%s.%s" % (key, pipe), 0)
        wildcard = "p.%s.*" % (task.project_id,)
        if wildcard != key:
            mask |= self.monitors.get(wildcard, 0)
        mask |= self.monitors.get("*", 0)
        if mask & bit:
            self.send_event(event, body)

    HANDLERS = {
        "auth": cmd_auth,
        "deauth": cmd_deauth,
        "rrext_ping": cmd_ping,
        "rrext_public_probe": cmd_probe,
        "execute": cmd_execute,
        "rrext_get_task_status": cmd_get_task_status,
        "rrext_get_token": cmd_get_token,
        "rrext_get_tasks": cmd_get_tasks,
        "rrext_monitor": cmd_monitor,
        "terminate": cmd_terminate,
        "rrext_process": cmd_process,
    }


_NO_REPLY = object()


def _parse_frame(frame):
    """A request from a text frame, or from a binary frame carrying a JSON
    header, a newline and raw data (which becomes arguments.data)."""
    try:
        if isinstance(frame, bytes):
            head, nl, data = frame.partition(b"\n")
            msg = json.loads(head)
            if nl and isinstance(msg, dict):
                if not isinstance(msg.get("arguments"), dict):
                    msg["arguments"] = {}
                msg["arguments"]["data"] = data
        else:
            msg = json.loads(frame)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def _event_mask(args):
    types = args.get("types")
    if isinstance(types, list):
        mask = 0
        for name in types:
            # Names are case-insensitive; unknown ones are ignored.
            mask |= EVENT_BITS.get(name.upper(), 0)
        return mask
    if isinstance(types, int):
        return types
    if isinstance(types, str) and types.isdigit():
        return int(types)
    legacy = args.get("listenType", 0)
    return int(legacy) if isinstance(legacy, (int, float)) else 0


def _plan_check(pipeline):
    """The account-plan check the real server runs before anything else
    about the pipeline. No provider requires a plan, so it never refuses;
    but it walks the components from the source, so malformed components
    fail here with Python's own error texts (e.g. "'id'" for a component
    without an id), and those texts are what the real server answers."""
    source = pipeline.get("source")
    if not source:
        return
    components = pipeline.get("components", [])
    if not components:
        return
    by_id = {component["id"]: component for component in components}
    downstream = {}
    for component in components:
        for lane in component.get("input", []):
            downstream.setdefault(lane["from"], []).append(component["id"])
    # Walking by_id/downstream from the source would collect the plans the
    # providers require; none requires any, so there is nothing to refuse.
    return by_id, downstream


def _resolve_source(args, pipeline):
    """Source, its component, project id and provider, checked in the real
    server's order with its texts. Adds `config: {}` to a source component
    that has none and writes the chosen source into the pipeline."""
    source = args.get("source")
    if not source:
        source = pipeline.get("source")
    if not source:
        found = False
        for component in pipeline.get("components", []):
            config = component.get("config", {})
            if config.get("mode", "") == "Source":
                if found:
                    raise ValueError("Pipeline has multiple source "
                                     "components, please specify one "
                                     "explicitly")
                found = True
                source = component.get("id", None)
        if source is None:
            raise ValueError("Pipeline does not have a source component "
                             "defined")
    source_component = None
    for component in pipeline.get("components", []):
        if component.get("id") == source:
            source_component = component
            break
    pipeline["source"] = source
    if source_component is None:
        raise ValueError('Pipeline source component "%s" not found in '
                         'components list' % (source,))
    if "config" not in source_component:
        source_component["config"] = {}
    # Without a project id the run gets a random one (never written back),
    # so its token cannot be predicted.
    project_id = pipeline.get("project_id") or str(uuid.uuid4())
    components = pipeline.get("components", [])
    if type(components) is not list:
        raise ValueError("Invalid components in pipeline")
    provider = None
    for component in components:
        if component.get("id", "") == source:
            provider = component.get("provider", None)
            break
    if not provider:
        raise ValueError('Source "%s" not found in pipeline' % (source,))
    return source, source_component, project_id, provider


# ---------------------------------------------------------------- the server

class StandinServer:
    """The stand-in server. Use on a running asyncio loop:

        server = StandinServer(exit_mode="head",
                               keys=[ApiKey("k1", "alice")])
        await server.start()          # server.url, server.port
        ...
        await server.stop()

    keys            ApiKey list (None: the open-source developer key
                    MYAPIKEY -> user "local"); change with add_key,
                    revoke_key, expire_key, remove_key
    accept_any_key  accept any non-empty unknown credential as user "local"
                    (an open-source server without a configured key)
    exit_mode       "intended" or "head" (see the module docstring)
    timings         Timings (test-friendly by default)
    default_scenario  scenario of providers not in SCENARIOS
    """

    def __init__(self, *, host="127.0.0.1", port=0, keys=None,
                 accept_any_key=False, exit_mode="intended", timings=None,
                 default_scenario="batch_ok", ping_interval=15,
                 ping_timeout=60, log=None, history_limit=100000):
        if exit_mode not in ("intended", "head"):
            raise ValueError("exit_mode must be 'intended' or 'head'")
        if default_scenario not in SCENARIO_NAMES:
            raise ValueError("unknown scenario %r" % default_scenario)
        self.host = host
        self.port = port
        self.exit_mode = exit_mode
        self.timings = timings or Timings()
        self.default_scenario = default_scenario
        self.accept_any_key = accept_any_key
        self.faults = Faults()
        self.keys = {}
        for k in ([oss_key()] if keys is None else keys):
            self.keys[k.key] = k
        self.requests = collections.deque(maxlen=history_limit)
        self.history = collections.deque(maxlen=history_limit)
        self.command_counts = collections.Counter()
        self.executes_by_user = collections.Counter()
        # Unix time of receipt of every `execute`, oldest first (kept apart
        # from `requests`, whose other commands could push them out).
        self.execute_times = collections.deque(maxlen=history_limit)
        self.sessions = []
        self._tasks = {}             # token -> Task, in registration order
        self._ping = (ping_interval, ping_timeout)
        self._log = log
        self._next_conn = 0
        self._ws_server = None
        self._sweepers = []
        self._changed = None
        # Subscription key -> the sessions that hold it (a dict used as an
        # ordered set), so that an event visits only the sessions that may
        # want it, not every connection.
        self._watchers = {}

    # -- lifecycle
    async def start(self):
        self._changed = asyncio.Event()
        # backlog: asyncio's default of 100 drops the SYNs of a burst of
        # connections (each then waits a second for its retry); 2048 is
        # what uvicorn listens with.
        self._ws_server = await websockets.serve(
            self._accept, self.host, self.port, backlog=2048,
            process_request=self._check_path, compression=None,
            max_size=250 * 1024 * 1024, ping_interval=self._ping[0],
            ping_timeout=self._ping[1])
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self._sweepers = [asyncio.ensure_future(self._ttl_sweep()),
                          asyncio.ensure_future(self._cleanup_sweep())]
        return self

    async def stop(self):
        for t in self._sweepers:
            t.cancel()
        for task in list(self._tasks.values()):
            task.abandon()
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        await asyncio.gather(*self._sweepers, return_exceptions=True)

    async def restart(self):
        """Simulate a server restart: every task is forgotten (nothing more
        is sent about them) and every connection is dropped. Keys, faults,
        the request log, the counts and the history stay: they are the
        test's view, not the server's memory."""
        for task in list(self._tasks.values()):
            task.abandon()
        self._tasks.clear()
        for s in list(self.sessions):
            s.abort()
        self._notify()
        await self.wait_for(lambda: not self.sessions, 10)

    @property
    def url(self):
        return "ws://%s:%d%s" % (self.host, self.port, WS_PATH)

    # -- keys
    def add_key(self, key, user_id="local", **kw):
        """Add or replace a key; see ApiKey for the keyword arguments."""
        k = ApiKey(key=key, user_id=user_id, **kw)
        self.keys[key] = k
        return k

    def revoke_key(self, key, text=None, close_sessions=False):
        """Later `auth` with the key fails (text: "Authentication failed").
        Connections already authenticated with it keep working, as on the
        real server, unless close_sessions drops them."""
        k = self.keys[key]
        k.revoked = True
        if text is not None:
            k.revoked_text = text
        if close_sessions:
            for s in list(self.sessions):
                if s.credential == key:
                    s.abort()

    def expire_key(self, key, at=None, text=None):
        """The key expires at Unix time `at` (default: now)."""
        k = self.keys[key]
        k.expires_at = time.time() if at is None else at
        if text is not None:
            k.expired_text = text

    def remove_key(self, key):
        """Forget the key: `auth` with it gets "Invalid API key"."""
        self.keys.pop(key, None)

    def _authenticate(self, credential):
        faults = self.faults
        if faults.reject_auth_text is not None:
            text = faults.reject_auth_text
            if faults.reject_auth_count is not None:
                faults.reject_auth_count -= 1
                if faults.reject_auth_count <= 0:
                    faults.reject_auth_text = None
                    faults.reject_auth_count = None
            raise AuthRejected(text)
        if not credential:
            raise AuthRejected("No authorization provided")
        credential = credential.removeprefix("Bearer ").strip()
        if not credential:
            raise AuthRejected("No authorization provided")
        if credential.startswith(("tk_", "pk_")):
            return self._task_account(credential)
        k = self.keys.get(credential)
        if k is None:
            if self.accept_any_key:
                return oss_key(credential).account(credential)
            raise AuthRejected("Invalid API key")
        if k.revoked:
            raise AuthRejected(k.revoked_text)
        if k.expires_at is not None and k.expires_at <= time.time():
            raise AuthRejected(k.expired_text)
        return k.account(credential)

    def _task_account(self, credential):
        # A task's own token gives control of that task only; its public
        # token gives data rights only. Unknown ones fail as "Bad request".
        if credential.startswith("pk_"):
            task = next((t for t in self._tasks.values()
                         if t.public_token == credential), None)
            perms, scope = PK_PERMISSIONS, "pk"
        else:
            task = self._tasks.get(credential)
            perms, scope = TK_PERMISSIONS, "tk"
        if task is None:
            raise AuthRejected("Bad request")
        return Account(credential=credential, user_id=task.user_id,
                       default_team=task.team_id,
                       organizations=[{"id": task.org_id, "name": "",
                                       "permissions": [],
                                       "teams": [{"id": task.team_id,
                                                  "name": "",
                                                  "permissions": perms}]}],
                       scope=scope)

    # -- inspection
    @property
    def tasks(self):
        """Registered tasks (running, or finished and still retained)."""
        return list(self._tasks.values())

    def task(self, token):
        return self._tasks.get(token)

    def find_task(self, project_id, source, user_id=None):
        for t in self._tasks.values():
            if t.project_id == project_id and t.source == source and (
                    user_id is None or t.user_id == user_id):
                return t
        return None

    @property
    def execute_count(self):
        return self.command_counts["execute"]

    def requests_for(self, command):
        return [r for r in self.requests if r.command == command]

    def report(self):
        """Counts and tasks as plain data (for --report and benchmarks).
        executeTimes: when each `execute` was received (Unix seconds, by
        this host's clock), oldest first."""
        return {"commands": dict(self.command_counts),
                "executes": self.execute_count,
                "executeTimes": list(self.execute_times),
                "executesByUser": dict(self.executes_by_user),
                "tasksByUser": dict(collections.Counter(
                    t.user_id for t in self.history)),
                "tasks": [t.info() for t in self.history]}

    async def wait_for(self, predicate, timeout=10.0):
        """Wait until predicate() is true, checking it after every change
        (task state, request, connection); return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("stand-in: condition not met within "
                                     "%ss" % timeout)
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def stop_task(self, token):
        """Stop a task as if someone else terminated it; wait until it is
        terminal."""
        await self._tasks[token].stop()

    # -- internals
    def _notify(self):
        if self._changed is not None:
            ev, self._changed = self._changed, asyncio.Event()
            ev.set()

    def _record(self, session, command, args):
        self.command_counts[command] += 1
        at = time.time()
        if command == "execute":
            self.execute_times.append(at)
            if session.account is not None:
                self.executes_by_user[session.account.user_id] += 1
        try:
            saved = copy.deepcopy(args)
        except Exception:
            saved = args
        self.requests.append(RequestRecord(
            conn_id=session.conn_id, command=command, arguments=saved,
            credential=session.credential, user_id=session.user_id,
            at=at))
        if self._log:
            self._log("conn %d %s %s" % (session.conn_id, command,
                                         session.user_id or "-"))
        self._notify()

    def _register(self, task):
        self._tasks[task.token] = task
        self.history.append(task)
        self._notify()

    def _task_by_project(self, project_id, source):
        for t in self._tasks.values():
            if t.project_id == project_id and t.source == source:
                return t
        raise RuntimeError(NOT_RUNNING)

    def _task_by_public(self, public):
        for t in self._tasks.values():
            if t.public_token == public:
                return t
        raise RuntimeError(NOT_RUNNING)

    @staticmethod
    def _execute_body(task):
        return {"id": task.id, "token": task.token,
                "publicToken": task.public_token,
                "projectId": task.project_id, "source": task.source,
                "provider": task.provider}

    def _broadcast(self, task, bit, event, body):
        # A task that is no longer registered (failed start, restart,
        # retention) is silent.
        if self._tasks.get(task.token) is not task:
            return
        body["__id"] = task.id
        # The subscription keys Session.deliver looks at; it still decides.
        key = "p.%s.%s" % (task.project_id, task.source)
        keys = [key, "p.%s.*" % (task.project_id,), "*"]
        if body.get("pipe_id") is not None:
            keys.append("%s.%s" % (key, body["pipe_id"]))
        targets = {}
        for k in keys:
            targets.update(self._watchers.get(k, {}))
        for s in sorted(targets, key=lambda s: s.conn_id):
            s.deliver(task, bit, event, body)

    def _watch(self, session, key):
        self._watchers.setdefault(key, {})[session] = None

    def _unwatch(self, session, key):
        held = self._watchers.get(key)
        if held is not None:
            held.pop(session, None)
            if not held:
                del self._watchers[key]

    async def _check_path(self, path, headers):
        if path.split("?", 1)[0] != WS_PATH:
            return http.HTTPStatus.NOT_FOUND, [], b"not found\n"
        return None

    async def _accept(self, ws, path=None):
        self._next_conn += 1
        session = Session(self, ws, self._next_conn)
        self.sessions.append(session)
        self._notify()
        try:
            await session.serve()
        finally:
            self.sessions.remove(session)
            for k in list(session.monitors):
                self._unwatch(session, k)
            self._notify()

    async def _ttl_sweep(self):
        period = self.timings.ttl_sweep_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                for task in list(self._tasks.values()):
                    if task.done or task.ttl == 0:
                        continue
                    # Only data requests reset the counter: status polls
                    # and subscriptions do not keep a task alive. A ttl
                    # that is not a number breaks the whole sweep, as it
                    # does on the real server.
                    task.idle += period
                    if task.idle >= task.ttl:
                        task.request_stop()
            except Exception as e:
                if self._log:
                    self._log("TTL sweep aborted: %s" % e)
            self._notify()      # idle counters moved

    async def _cleanup_sweep(self):
        period = self.timings.cleanup_sweep_ms / 1000
        while True:
            await asyncio.sleep(period)
            now = time.time()
            for task in list(self._tasks.values()):
                if task.done and task.status["endTime"] + \
                        self.timings.keep_ms / 1000 < now:
                    self._forget(task)

    def _forget(self, task):
        """Drop a finished task's record, and every subscription pointing
        at its project and source, on every connection."""
        if self._tasks.get(task.token) is task:
            del self._tasks[task.token]
        key = "p.%s.%s" % (task.project_id, task.source)
        for s in self.sessions:
            for k in list(s.monitors):
                if k == key or k.startswith(key + ".") or k == task.token \
                        or k.startswith(task.token + "."):
                    del s.monitors[k]
                    self._unwatch(s, k)
        self._notify()


# ---------------------------------------------------------------- program

def _parse_key(text):
    """KEY=USER or KEY=USER:perm,perm"""
    key, eq, rest = text.partition("=")
    if not eq or not key or not rest:
        raise argparse.ArgumentTypeError("expected KEY=USER[:perm,...]")
    user, colon, perms = rest.partition(":")
    if colon:
        return ApiKey(key=key, user_id=user,
                      permissions=[p for p in perms.split(",") if p])
    return ApiKey(key=key, user_id=user)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="A stand-in RocketRide engine server (no engine): "
                    "simulated pipeline runs over the RocketRide WebSocket "
                    "protocol, for tests and benchmarks.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0,
                    help="0 (default): a port the kernel picks")
    ap.add_argument("--port-file",
                    help="write the port and a newline here once listening")
    ap.add_argument("--key", action="append", type=_parse_key, default=[],
                    metavar="KEY=USER[:PERMS]",
                    help="an API key (repeatable); PERMS is a comma list, "
                         "default task.control,task.data,task.monitor; "
                         "without --key: MYAPIKEY for user local")
    ap.add_argument("--any-key", action="store_true",
                    help="accept any non-empty unknown key as user local")
    ap.add_argument("--exit-mode", choices=("intended", "head"),
                    default="intended")
    ap.add_argument("--timings", choices=("test", "engine"), default="test",
                    help="preset: quick (default) or engine-like")
    for name, help_ in (("init", "STARTING to INITIALIZING"),
                        ("ready", "INITIALIZING to RUNNING"),
                        ("tick", "periodic status interval"),
                        ("run", "batch run length"),
                        ("stop", "stop delay"),
                        ("slow-stop", "stop delay of test_slow_stop"),
                        ("hang", "test_hang_start fails execute after this"),
                        ("output", "console line interval"),
                        ("ttl-sweep", "idle TTL sweep period"),
                        ("keep", "retention of finished tasks"),
                        ("cleanup-sweep", "retention sweep period")):
        ap.add_argument("--%s-ms" % name, type=float, help=help_)
    ap.add_argument("--default-scenario", choices=SCENARIO_NAMES,
                    default="batch_ok",
                    help="scenario for providers without a default")
    ap.add_argument("--report", metavar="FILE",
                    help="on stop, write request counts and tasks as JSON")
    ap.add_argument("--verbose", action="store_true",
                    help="log every request to stderr")
    opts = ap.parse_args(argv)

    timings = Timings.engine_like() if opts.timings == "engine" \
        else Timings()
    for f in ("init", "ready", "tick", "run", "stop", "slow_stop", "hang",
              "output", "ttl_sweep", "keep", "cleanup_sweep"):
        v = getattr(opts, f + "_ms")
        if v is not None:
            timings = replace(timings, **{f + "_ms": v})

    def log(msg):
        print("standin: %s" % msg, file=sys.stderr, flush=True)

    async def run():
        server = StandinServer(host=opts.host, port=opts.port,
                               keys=opts.key or None,
                               accept_any_key=opts.any_key,
                               exit_mode=opts.exit_mode, timings=timings,
                               default_scenario=opts.default_scenario,
                               log=log if opts.verbose else None)
        await server.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if opts.port_file:
            tmp = opts.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % server.port)
            os.replace(tmp, opts.port_file)
        log("listening on %s (exit mode %s)" % (server.url, opts.exit_mode))
        await stopping.wait()
        await server.stop()
        if opts.report:
            with open(opts.report, "w") as f:
                json.dump(server.report(), f, indent=1)
                f.write("\n")
        log("stopped after %d execute requests" % server.execute_count)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
