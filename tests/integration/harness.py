"""harness.py -- integration test harness for `rrdeploy serve`.

Starts the real binary (path from env RRDEPLOY_BIN, set by ctest) in its own
temporary directory with its own database and a kernel-picked port, and talks
to it over a real WebSocket the way RocketRide's Python and TypeScript SDKs do.

Pieces:
  Server      start/stop/kill/restart the daemon, read the bootstrap admin key
              from stderr, run `rrdeploy keys ...`; on stop, fail if the server
              exited non-zero, crashed, or printed a sanitizer report.
  Client      asyncio WebSocket client: per-connection seq from 1, responses
              correlated by request_seq through a dict of futures (out-of-order
              replies work), Python-SDK framing (json.dumps defaults, \\uXXXX
              escapes) or TS framing (compact, raw UTF-8, `arguments` omitted
              when empty), raw text/binary/fragmented sends. Every frame the
              server sends is checked centrally: a text frame, single-line JSON
              (no raw 0x0A), a well-formed response envelope.
  ServerTest  unittest base class: an asyncio loop per test, a per-test
              timeout, servers and clients cleaned up (and checked) at the end.

Only the standard library and Debian's python3-websockets (10.x, asyncio API)
are used; run with /usr/bin/python3.
"""

import asyncio
import json
import os
import re
import signal
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import websockets
import websockets.exceptions

HERE = os.path.dirname(os.path.abspath(__file__))

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "ERROR: ThreadSanitizer",
    "WARNING: ThreadSanitizer",
    "ERROR: UndefinedBehaviorSanitizer",
)

ERROR_CODES = {
    "bad_request", "unauthorized", "forbidden", "not_found", "conflict",
    "too_large", "internal",
}

WS_PATH = "/task/service"
DEFAULT_TEST_TIMEOUT = 60.0
# How much slower than a release build the binary under test is (a
# sanitizer build: 4): bounds on the server's own speed are scaled by it.
SLOW_BUILD = float(os.environ.get("RRDEPLOY_SLOW_BUILD", "1"))
BOOT_TIMEOUT = 30.0


def binary_path():
    b = os.environ.get("RRDEPLOY_BIN")
    if not b:
        for cand in ("../../build-it/rrdeploy", "../../build/rrdeploy"):
            p = os.path.normpath(os.path.join(HERE, cand))
            if os.path.exists(p):
                b = p
                break
    if not b or not os.path.exists(b):
        raise unittest.SkipTest("RRDEPLOY_BIN is not set to a built rrdeploy")
    return b


def sanitizer_env(base=None):
    env = dict(os.environ if base is None else base)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.pop("ROCKETRIDE_APIKEY", None)
    return env


def sanitizer_report(text):
    for pat in SANITIZER_PATTERNS:
        if pat in text:
            return pat
    return None


# ---------------------------------------------------------------- JSON helpers

def compact_json(text):
    """Remove insignificant white space from valid JSON text; everything else
    (escapes, numbers, key order) is kept byte for byte."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c in " \t\r\n":
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _skip_ws(s, i):
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _value_end(s, i):
    """Index just past the JSON value starting at s[i] (valid JSON assumed)."""
    c = s[i]
    if c == '"':
        j = i + 1
        while s[j] != '"':
            j += 2 if s[j] == "\\" else 1
        return j + 1
    if c in "{[":
        depth = 0
        j = i
        while True:
            ch = s[j]
            if ch == '"':
                j = _value_end(s, j)
                continue
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
    j = i
    while j < len(s) and s[j] not in ",}] \t\r\n":
        j += 1
    return j


def raw_member(text, *path):
    """Raw text of text[path[0]][path[1]]... for objects, located by scanning
    (the last occurrence of a key wins, as in JSON parsers). None if absent."""
    s = text
    for key in path:
        i = _skip_ws(s, 0)
        if s[i] != "{":
            return None
        i += 1
        found = None
        while True:
            i = _skip_ws(s, i)
            if s[i] == "}":
                break
            kend = _value_end(s, i)
            k = json.loads(s[i:kend])
            i = _skip_ws(s, kend)
            assert s[i] == ":"
            i = _skip_ws(s, i + 1)
            vend = _value_end(s, i)
            if k == key:
                found = s[i:vend]
            i = _skip_ws(s, vend)
            if s[i] == ",":
                i += 1
        if found is None:
            return None
        s = found
    return s


ENVELOPE_KEYS = {"type", "seq", "request_seq", "command", "success", "body",
                 "message", "code", "event"}


def raw_elements(text):
    """Raw texts of the elements of a JSON array."""
    i = _skip_ws(text, 0)
    assert text[i] == "["
    i = _skip_ws(text, i + 1)
    out = []
    while text[i] != "]":
        end = _value_end(text, i)
        out.append(text[i:end])
        i = _skip_ws(text, end)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
    return out


def _no_dup_keys(pairs):
    # Duplicates inside client data (a pipeline sent with duplicate keys comes
    # back verbatim) are legitimate; the envelope's own members are not.
    keys = [k for k, _ in pairs]
    dups = {k for k in keys if keys.count(k) > 1}
    if dups & ENVELOPE_KEYS:
        raise AssertionError("duplicate key in server JSON: %r" % keys)
    return dict(pairs)


def py_frame(msg):
    """The Python SDK's framing: json.dumps defaults (', ' and ': '
    separators, ensure_ascii=True so non-ASCII becomes \\uXXXX escapes,
    astral characters as surrogate pairs)."""
    return json.dumps(msg)


def ts_frame(msg):
    """The TypeScript SDK's framing: JSON.stringify, compact and raw UTF-8."""
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- server

class ServerError(AssertionError):
    pass


class Server:
    """One `rrdeploy serve` process in its own temp directory."""

    def __init__(self, workdir=None, extra_args=(), env=None, dev_key=None):
        self.bin = binary_path()
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="rrdeploy-it-")
        self.db = os.path.join(self.dir, "rrdeploy.db")
        self.extra_args = list(extra_args)
        self.env = sanitizer_env(env)
        if dev_key is not None:
            self.env["ROCKETRIDE_APIKEY"] = dev_key
        self.proc = None
        self.port = None
        self.admin_key = None
        self.admin_key_id = None
        self.generation = 0
        self.stderr_path = None
        self.stderr_paths = []
        self._stderr_file = None

    # -- lifecycle
    def start(self):
        assert self.proc is None, "server already running"
        self.generation += 1
        port_file = os.path.join(self.dir, "port.%d" % self.generation)
        self.stderr_path = os.path.join(self.dir,
                                        "stderr.%d.log" % self.generation)
        self.stderr_paths.append(self.stderr_path)
        self._stderr_file = open(self.stderr_path, "wb")
        cmd = [self.bin, "serve", "--listen", "127.0.0.1:0", "--db", self.db,
               "--port-file", port_file] + self.extra_args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._stderr_file, env=self.env,
                                     cwd=self.dir)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                with open(port_file) as f:
                    txt = f.read()
                if txt.endswith("\n") and txt.strip().isdigit():
                    self.port = int(txt)
                    break
            except FileNotFoundError:
                pass
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise ServerError("server exited with %s before listening:\n%s"
                                  % (rc, self.stderr()))
            if time.monotonic() > deadline:
                self._hard_kill()
                raise ServerError("server did not write its port file within "
                                  "%ss:\n%s" % (BOOT_TIMEOUT, self.stderr()))
            time.sleep(0.01)
        err = self.stderr()
        m = re.search(r"first start: created user 'admin' with key (\S+) .*\n"
                      r"(rrk_[0-9a-f]{64})\n", err)
        if m:
            if self.generation > 1 or self.admin_key is not None:
                raise ServerError("bootstrap key printed again on a database "
                                  "that already had keys:\n" + err)
            self.admin_key_id, self.admin_key = m.group(1), m.group(2)
        return self

    def url(self, path=WS_PATH):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def stderr(self, all_generations=False):
        paths = self.stderr_paths if all_generations else [self.stderr_path]
        out = []
        for p in paths:
            if p and os.path.exists(p):
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def _check_stderr(self, what):
        err = self.stderr()
        pat = sanitizer_report(err)
        if pat:
            raise ServerError("%s: sanitizer report (%s) in server stderr:\n%s"
                              % (what, pat, err))

    def _close_stderr(self):
        if self._stderr_file:
            self._stderr_file.close()
            self._stderr_file = None

    def _hard_kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._close_stderr()

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Stop cleanly; raise if the exit was not clean."""
        if self.proc is None:
            return
        proc = self.proc
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._hard_kill()
            raise ServerError("server did not stop within %ss after %s:\n%s"
                              % (timeout, signal.Signals(sig).name,
                                 self.stderr()))
        self.proc = None
        self._close_stderr()
        self._check_stderr("on stop")
        if rc != 0:
            how = ("killed by %s" % signal.Signals(-rc).name if rc < 0
                   else "exit status %d" % rc)
            raise ServerError("server did not exit cleanly (%s):\n%s"
                              % (how, self.stderr()))

    def kill9(self):
        """SIGKILL, as a crash would; still check what it printed."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self._close_stderr()
        self._check_stderr("before SIGKILL")

    def restart(self):
        self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        try:
            if self.proc is not None:
                self.stop()
        finally:
            self._hard_kill()
            if self.own_dir and not os.environ.get("RRDEPLOY_IT_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- CLI
    def cli(self, *args, check=True):
        r = subprocess.run([self.bin] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, env=sanitizer_env(),
                           timeout=60, cwd=self.dir)
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        pat = sanitizer_report(err)
        if pat:
            raise ServerError("CLI %r: sanitizer report (%s):\n%s"
                              % (args, pat, err))
        if check and r.returncode != 0:
            raise ServerError("CLI %r failed (%d):\n%s%s"
                              % (args, r.returncode, out, err))
        return r.returncode, out, err

    def create_key(self, user, perms=None, label=None, expires=None):
        """`rrdeploy keys create`; returns the key text (printed alone)."""
        args = ["keys", "create", "--db", self.db, "--user", user]
        if perms is not None:
            args += ["--perms", perms]
        if label is not None:
            args += ["--label", label]
        if expires is not None:
            args += ["--expires", expires]
        _, out, _ = self.cli(*args)
        lines = out.splitlines()
        if len(lines) != 1 or not re.fullmatch(r"rrk_[0-9a-f]{64}", lines[0]):
            raise ServerError("keys create printed %r, expected the key alone"
                              % out)
        return lines[0]

    def list_keys(self):
        _, out, _ = self.cli("keys", "list", "--db", self.db, "--json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def key_id(self, user, label=None):
        ids = [k["id"] for k in self.list_keys()
               if k["user"] == user and (label is None or k["label"] == label)]
        if len(ids) != 1:
            raise ServerError("expected one key for %s/%s, found %r"
                              % (user, label, ids))
        return ids[0]

    def revoke_key(self, id_or_key):
        self.cli("keys", "revoke", "--db", self.db, id_or_key)


# ---------------------------------------------------------------- client

class ProtocolViolation(AssertionError):
    pass


class Client:
    """An SDK-like DAP client over one WebSocket connection.

    style: "python" (json.dumps defaults, always sends `arguments`) or
    "ts" (compact raw UTF-8, omits `arguments` when there are none)."""

    def __init__(self, server_or_url, style="python", path=WS_PATH,
                 compression=None, source=None):
        self.url = (server_or_url.url(path) if isinstance(server_or_url, Server)
                    else server_or_url)
        self.style = style
        self.compression = compression
        self.source = source      # local address to connect from (127.0.0.x)
        self.ws = None
        self.seq = 0
        self.pending = {}
        self.unmatched = asyncio.Queue()
        self.frames = []          # every frame received, raw text
        self.sent = []            # every request sent, raw
        self.violations = []
        self.last_server_seq = 0
        self.events = []          # every event frame received, parsed
        self._event_flag = None   # set whenever an event arrives
        self.closed = None        # future: close code
        self._reader = None

    async def connect(self):
        extra = {"local_addr": (self.source, 0)} if self.source else {}
        self.ws = await websockets.connect(
            self.url, compression=self.compression, max_size=None,
            ping_interval=None, open_timeout=15, close_timeout=5,
            max_queue=None, **extra)
        self.closed = asyncio.get_running_loop().create_future()
        self._event_flag = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read_loop())
        return self

    # -- receiving
    def _violation(self, msg):
        self.violations.append(msg)
        err = ProtocolViolation(msg)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(err)
        raise err

    def _check_frame(self, frame):
        if not isinstance(frame, str):
            self._violation("server sent a binary frame: %r" % frame[:200])
        if "\n" in frame:
            self._violation("server frame contains a raw newline: %r"
                            % frame[:300])
        try:
            msg = json.loads(frame, object_pairs_hook=_no_dup_keys)
        except (ValueError, AssertionError) as e:
            self._violation("server frame is not valid JSON (%s): %r"
                            % (e, frame[:300]))
        if not isinstance(msg, dict):
            self._violation("server frame is not an object: %r" % frame[:300])
        t = msg.get("type")
        if t not in ("response", "event"):
            self._violation("bad frame type %r: %r" % (t, frame[:300]))
        sseq = msg.get("seq")
        if type(sseq) is not int or sseq != self.last_server_seq + 1:
            self._violation("server seq %r does not follow %d: %r"
                            % (sseq, self.last_server_seq, frame[:300]))
        self.last_server_seq = sseq
        if t == "response":
            if type(msg.get("request_seq")) is not int:
                self._violation("request_seq is not a JSON integer: %r"
                                % frame[:300])
            if not isinstance(msg.get("command"), str):
                self._violation("command missing: %r" % frame[:300])
            ok = msg.get("success")
            if ok is True:
                if "message" in msg or "code" in msg:
                    self._violation("success with message/code: %r"
                                    % frame[:300])
            elif ok is False:
                if not isinstance(msg.get("message"), str) or not msg["message"]:
                    self._violation("error without message: %r" % frame[:300])
                if msg.get("code") not in ERROR_CODES:
                    self._violation("error with bad code %r: %r"
                                    % (msg.get("code"), frame[:300]))
                if "body" in msg:
                    self._violation("error with a body: %r" % frame[:300])
            else:
                self._violation("success is not a boolean: %r" % frame[:300])
        return msg

    async def _read_loop(self):
        try:
            async for frame in self.ws:
                self.frames.append(frame)
                msg = self._check_frame(frame)
                msg["_raw"] = frame
                if msg["type"] == "response":
                    fut = self.pending.pop(msg["request_seq"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                        continue
                else:
                    self.events.append(msg)
                    self._event_flag.set()
                await self.unmatched.put(msg)
        except ProtocolViolation:
            pass
        except websockets.exceptions.ConnectionClosed:
            pass
        except Exception as e:  # pragma: no cover - reported to the test
            self.violations.append("reader crashed: %r" % (e,))
        finally:
            code = self.ws.close_code
            err = ConnectionError("connection closed (code %s)" % code)
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(err)
                    # a test may legitimately never look at it
                    fut.add_done_callback(lambda f: f.exception())
            self.pending.clear()
            if not self.closed.done():
                self.closed.set_result(code)
            self._event_flag.set()
            await self.unmatched.put(None)

    # -- sending
    def next_seq(self):
        self.seq += 1
        return self.seq

    def build(self, command, args=None, seq=None, style=None, omit_args=None):
        style = style or self.style
        seq = self.next_seq() if seq is None else seq
        msg = {"type": "request", "seq": seq, "command": command}
        if omit_args is None:
            omit_args = style == "ts" and not args
        if not omit_args:
            msg["arguments"] = {} if args is None else args
        return seq, (ts_frame(msg) if style == "ts" else py_frame(msg))

    async def send_expect(self, text, seq, timeout=30.0):
        """Send raw text (or bytes, or a list of fragments) and wait for the
        response whose request_seq is seq."""
        fut = asyncio.get_running_loop().create_future()
        self.pending[seq] = fut
        self.sent.append(text)
        await self.ws.send(text)
        return await asyncio.wait_for(fut, timeout)

    def start(self, command, args=None, style=None, omit_args=None):
        """Send a request now; return a future for its response (pipelining)."""
        seq, text = self.build(command, args, style=style, omit_args=omit_args)
        fut = asyncio.get_running_loop().create_future()
        self.pending[seq] = fut
        return fut, self.ws.send(text)

    async def request(self, command, args=None, style=None, omit_args=None,
                      timeout=30.0):
        seq, text = self.build(command, args, style=style, omit_args=omit_args)
        return await self.send_expect(text, seq, timeout)

    async def call(self, command, **args):
        """Like the SDKs' call(cmd, **args), returning the whole response."""
        return await self.request(command, args)

    async def ok(self, command, **args):
        r = await self.request(command, args)
        if r.get("success") is not True:
            raise AssertionError("%s failed: %r" % (command, r))
        return r.get("body")

    async def auth(self, key, check=True):
        args = {"auth": key,
                "clientName": "TypeScript SDK" if self.style == "ts"
                else "Python SDK",
                "clientVersion": "1.1.0"}
        r = await self.request("auth", args)
        if check and r.get("success") is not True:
            raise AssertionError("auth failed: %r" % r)
        return r

    async def send_raw(self, data):
        self.sent.append(data)
        await self.ws.send(data)

    async def recv_raw(self, timeout=30.0):
        """Next response that no pending request claimed (e.g. request_seq 0),
        or None once the connection is closed."""
        return await asyncio.wait_for(self.unmatched.get(), timeout)

    async def wait_event(self, pred=None, timeout=30.0, start=0):
        """First event (from index `start` of self.events) whose body matches
        pred(body); waits for it up to timeout seconds. Events also go to the
        unmatched queue, as before."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                ev = self.events[i]
                i += 1
                if pred is None or pred(ev.get("body")):
                    return ev
            if self.is_closed():
                raise ConnectionError("connection closed while waiting for "
                                      "an event; got %r" % self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "no matching event within %ss; events so far: %s"
                    % (timeout, json.dumps([e.get("body")
                                            for e in self.events])[:4000]))
            self._event_flag.clear()
            try:
                await asyncio.wait_for(self._event_flag.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_closed(self, timeout=30.0):
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def is_closed(self):
        return self.closed is not None and self.closed.done()

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 10)
            except Exception:
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 10)
            except Exception:
                pass

    def check(self):
        if self.violations:
            raise ProtocolViolation("; ".join(self.violations))


# ---------------------------------------------------------------- test base

def async_test(timeout=DEFAULT_TEST_TIMEOUT):
    """Decorator: run an async test method on the test's loop with a hard
    timeout."""
    def deco(fn):
        def wrapper(self):
            return self.loop.run_until_complete(
                asyncio.wait_for(fn(self), timeout))
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper
    return deco


class ServerTest(unittest.TestCase):
    """Base class. Subclasses set SERVER_ARGS / DEV_KEY; by default one server
    per test class (started lazily), fresh clients per test."""

    SERVER_ARGS = ()
    DEV_KEY = None
    SHARED_SERVER = True

    @classmethod
    def setUpClass(cls):
        cls.server = None
        if cls.SHARED_SERVER:
            cls.server = Server(extra_args=cls.SERVER_ARGS,
                                dev_key=cls.DEV_KEY).start()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            srv, cls.server = cls.server, None
            srv.cleanup()

    def setUp(self):
        self.loop = asyncio.new_event_loop()
        self.clients = []
        self.servers = []
        self._user_n = 0

    def tearDown(self):
        try:
            for c in self.clients:
                self.loop.run_until_complete(c.close())
            for c in self.clients:
                c.check()
            for s in self.servers:
                s.cleanup()
            if self.server is not None:
                if not self.server.alive():
                    raise ServerError("shared server died:\n"
                                      + self.server.stderr())
                pat = sanitizer_report(self.server.stderr())
                if pat:
                    raise ServerError("sanitizer report (%s):\n%s"
                                      % (pat, self.server.stderr()))
        finally:
            self.loop.close()

    # -- helpers
    def new_server(self, extra_args=(), dev_key=None):
        s = Server(extra_args=extra_args, dev_key=dev_key)
        self.servers.append(s)
        return s.start()

    async def client(self, server=None, style="python", key=None,
                     path=WS_PATH, compression=None, source=None):
        """A connected client; source: the local address to connect from
        (any of 127.0.0.0/8 reaches the server, and the server counts each
        as its own client address)."""
        c = Client(server or self.server, style=style, path=path,
                   compression=compression, source=source)
        self.clients.append(c)
        await c.connect()
        if key is not None:
            await c.auth(key)
        return c

    async def admin(self, server=None, style="python"):
        srv = server or self.server
        return await self.client(srv, style=style, key=srv.admin_key)

    def unique_user(self, prefix="u"):
        self._user_n += 1
        return "%s_%s_%d_%d" % (prefix, self._testMethodName[-20:], os.getpid(),
                                self._user_n)

    async def user_client(self, perms=None, server=None, style="python",
                          user=None):
        srv = server or self.server
        user = user or self.unique_user()
        self._user_n += 1
        label = "it-%d" % self._user_n
        key = await asyncio.get_running_loop().run_in_executor(
            None, lambda: srv.create_key(user, perms=perms, label=label))
        c = await self.client(srv, style=style, key=key)
        c.user = user
        c.key = key
        c.key_label = label
        return c

    def assertOk(self, resp):
        self.assertIs(resp.get("success"), True, resp)
        return resp.get("body")

    def assertErr(self, resp, code, message=None, prefix=None):
        self.assertIs(resp.get("success"), False, resp)
        self.assertEqual(resp.get("code"), code, resp)
        if message is not None:
            self.assertEqual(resp.get("message"), message, resp)
        if prefix is not None:
            self.assertTrue(resp.get("message", "").startswith(prefix), resp)
        return resp.get("message")

    async def assertAlive(self, c):
        """The connection still works: a ping gets a pong."""
        r = await c.call("rrext_ping")
        self.assertEqual(self.assertOk(r), {"pong": True})

    async def assertClosedAfter(self, c, timeout=10.0):
        code = await c.wait_closed(timeout)
        return code


def pipeline(project_id, **extra):
    """A realistic pipeline: a webhook source feeding a response component."""
    p = {"project_id": project_id,
         "components": [
             {"id": "webhook_1", "provider": "webhook",
              "config": {"mode": "Source", "type": "webhook", "hideForm": True}},
             {"id": "response_1", "provider": "response", "config": {},
              "input": [{"lane": "text", "from": "webhook_1"}]}],
         "source": "webhook_1"}
    p.update(extra)
    return p
