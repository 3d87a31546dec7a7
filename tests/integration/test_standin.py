"""The stand-in RocketRide server (standin.py) against the behaviour of the
real one: token derivation, `execute` validation and timing, events and
subscriptions, `terminate`, the two exit conventions, scenarios, the TTL
and retention sweeps, fault injection, authentication, what it records, and
the standalone program. The stand-in runs in-process on each test's loop;
clients are real `websockets` connections. Nothing waits on fixed sleeps:
tests wait for events, replies or stand-in conditions, with deadlines."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from harness import Client, async_test

import websockets
import websockets.exceptions

import standin
from standin import ApiKey, StandinServer, Timings

HERE = os.path.dirname(os.path.abspath(__file__))

# Quick timings: the whole file runs in seconds.
FAST = dict(init_ms=5, ready_ms=30, tick_ms=50, run_ms=150, stop_ms=20,
            slow_stop_ms=400, output_ms=20, ttl_sweep_ms=100,
            cleanup_sweep_ms=50, keep_ms=60000)

# What the real server sends for a project with no task (catch-up).
NOT_RUNNING_STATUS = {
    "name": "", "project_id": "p1", "source": "webhook_1",
    "completed": False, "state": 0, "startTime": 0.0, "endTime": 0.0,
    "debuggerAttached": False, "status": "Not running", "warnings": [],
    "errors": [], "currentObject": "", "currentSize": 0, "notes": [],
    "totalSize": 0, "totalCount": 0, "completedSize": 0,
    "completedCount": 0, "failedSize": 0, "failedCount": 0, "wordsSize": 0,
    "wordsCount": 0, "rateSize": 0, "rateCount": 0, "serviceUp": False,
    "exitCode": 0, "exitMessage": "",
    "pipeflow": {"totalPipes": 0, "byPipe": {}},
    "metrics": {"cpu_percent": 0.0, "cpu_memory_mb": 0.0,
                "gpu_memory_mb": 0.0, "peak_cpu_percent": 0.0,
                "peak_cpu_memory_mb": 0.0, "peak_gpu_memory_mb": 0.0,
                "avg_cpu_percent": 0.0, "avg_cpu_memory_mb": 0.0,
                "avg_gpu_memory_mb": 0.0},
    "tokens": {"cpu_utilization": 0.0, "cpu_memory": 0.0, "gpu_memory": 0.0,
               "gpu_inference": 0.0, "custom": {}, "total": 0.0},
}

ALL_TYPES = ["summary", "task", "output", "detail"]


def pipe(project_id="p1", provider="webhook", source="webhook_1",
         double=None, **component):
    """A pipeline whose source component has the given provider; `double`
    goes into its config as the x-double override."""
    config = {"mode": "Source", "type": provider}
    if double is not None:
        config["x-double"] = double
    src = dict({"id": source, "provider": provider, "config": config},
               **component)
    return {"project_id": project_id, "source": source,
            "components": [src, {"id": "response_1", "provider": "response",
                                 "config": {},
                                 "input": [{"lane": "text",
                                            "from": source}]}]}


def describe(msg):
    """A short name for a frame: s<state>[u][c] for status updates (u:
    serviceUp, c: completed), the action of apaevt_task, other event names,
    reply:<command> for responses."""
    if msg["type"] == "response":
        return "reply:" + msg["command"]
    body = msg.get("body") or {}
    if msg["event"] == "apaevt_status_update":
        return "s%d%s%s" % (body["state"], "u" if body["serviceUp"] else "",
                            "c" if body["completed"] else "")
    if msg["event"] == "apaevt_task":
        return body["action"]
    return msg["event"]


def squeeze(names):
    """Consecutive repeats (periodic status ticks) collapsed."""
    out = []
    for n in names:
        if not out or out[-1] != n:
            out.append(n)
    return out


class EngineClient(Client):
    """The harness client, checking frames against RocketRide's envelope
    (error replies carry a message, possibly empty, and no code)."""

    def _check_frame(self, frame):
        if not isinstance(frame, str):
            self._violation("binary frame: %r" % frame[:200])
        if "\n" in frame:
            self._violation("raw newline in a frame: %r" % frame[:300])
        try:
            msg = json.loads(frame)
        except ValueError as e:
            self._violation("not JSON (%s): %r" % (e, frame[:300]))
        if not isinstance(msg, dict) or msg.get("type") not in ("response",
                                                                "event"):
            self._violation("bad frame: %r" % frame[:300])
        if msg.get("seq") != self.last_server_seq + 1:
            self._violation("seq %r does not follow %d"
                            % (msg.get("seq"), self.last_server_seq))
        self.last_server_seq = msg["seq"]
        if frame != json.dumps(msg, separators=(",", ":"),
                               ensure_ascii=False):
            self._violation("not compact JSON: %r" % frame[:300])
        if msg["type"] == "event":
            if not isinstance(msg.get("event"), str):
                self._violation("event without a name: %r" % frame[:300])
            return msg
        if type(msg.get("request_seq")) is not int or \
                not isinstance(msg.get("command"), str):
            self._violation("bad response envelope: %r" % frame[:300])
        if msg.get("success") is True:
            if "message" in msg:
                self._violation("success with a message: %r" % frame[:300])
        elif msg.get("success") is False:
            if not isinstance(msg.get("message"), str) or "body" in msg \
                    or "code" in msg:
                self._violation("bad error reply: %r" % frame[:300])
        else:
            self._violation("success is not a boolean: %r" % frame[:300])
        return msg

    def messages(self, start=0):
        return [json.loads(f) for f in self.frames[start:]]

    async def barrier(self):
        """Everything the server queued for this connection so far has
        arrived (its queue is first in, first out)."""
        r = await self.call("rrext_ping")
        assert r["success"], r


class StandinTest(unittest.TestCase):
    """An asyncio loop per test, stand-ins and clients cleaned up after."""

    def setUp(self):
        self.loop = asyncio.new_event_loop()
        self.clients = []
        self.servers = []

    def tearDown(self):
        try:
            for c in self.clients:
                self.loop.run_until_complete(c.close())
            for s in self.servers:
                self.loop.run_until_complete(asyncio.wait_for(s.stop(), 20))
            for c in self.clients:
                c.check()
        finally:
            self.loop.close()

    async def standin(self, timings=None, **kw):
        t = Timings(**dict(FAST, **(timings or {})))
        s = StandinServer(timings=t, **kw)
        self.servers.append(s)
        return await s.start()

    async def client(self, server, key="MYAPIKEY"):
        c = EngineClient(server.url)
        self.clients.append(c)
        await c.connect()
        if key is not None:
            await c.auth(key)
        return c

    def assertOk(self, r):
        self.assertIs(r.get("success"), True, r)
        return r.get("body")

    def assertFails(self, r, message):
        self.assertIs(r.get("success"), False, r)
        self.assertEqual(r.get("message"), message, r)

    async def execute(self, c, pipeline, **args):
        return self.assertOk(await c.call("execute", pipeline=pipeline,
                                          args=[], **args))

    async def monitor(self, c, project_id="p1", source="webhook_1",
                      types=ALL_TYPES):
        self.assertOk(await c.call("rrext_monitor", projectId=project_id,
                                   source=source, types=types))

    async def final_status(self, c, token):
        ev = await c.wait_event(
            lambda b: b.get("completed") is True and b.get("__id")
            == standin.task_id(token, b.get("source", "")), 10)
        return ev["body"]


# ---------------------------------------------------------------- identity

class IdentityTest(StandinTest):

    def test_token_vectors(self):
        self.assertEqual(
            standin.task_token("local",
                               "e612b741-748c-4b35-a8b7-186797a8ea42",
                               "webhook_1"),
            "tk_1b4bbac062687abd2f25ecf1f535d7e2")
        self.assertEqual(
            standin.public_token("e612b741-748c-4b35-a8b7-186797a8ea42",
                                 "webhook_1"),
            "pk_0f8ac5fd49d55285fe44f3881b0ee0a9")
        self.assertEqual(
            standin.task_id("tk_1b4bbac062687abd2f25ecf1f535d7e2",
                            "webhook_1"), "1b4bbac0.webhook_1")
        self.assertEqual(standin.task_token("local", "p1", "webhook_1"),
                         "tk_80dcb3cf19502659e7e571a44a3cef1b")
        self.assertEqual(standin.task_id("PY-E2", "webhook_1"),
                         "PY-E2.webhook_1")

    @async_test(timeout=30)
    async def test_execute_replies_with_derived_identity(self):
        s = await self.standin()
        c = await self.client(s)
        project = "e612b741-748c-4b35-a8b7-186797a8ea42"
        body = await self.execute(c, pipe(project), ttl=0)
        self.assertEqual(body, {
            "id": "1b4bbac0.webhook_1",
            "token": "tk_1b4bbac062687abd2f25ecf1f535d7e2",
            "publicToken": "pk_0f8ac5fd49d55285fe44f3881b0ee0a9",
            "projectId": project, "source": "webhook_1",
            "provider": "webhook"})
        # a custom token is used as it is
        body = await self.execute(c, pipe("p2"), token="PY-E2")
        self.assertEqual((body["id"], body["token"]),
                         ("PY-E2.webhook_1", "PY-E2"))
        # the same project for another user is another task
        s.add_key("kb", "bob")
        b = await self.client(s, "kb")
        body = await self.execute(b, pipe(project))
        self.assertEqual(body["token"],
                         standin.task_token("bob", project, "webhook_1"))
        # without a project id the run gets a random one
        p = pipe()
        del p["project_id"]
        body = await self.execute(c, p)
        self.assertEqual(len(body["projectId"]), 36)
        self.assertEqual(body["token"], standin.task_token(
            "local", body["projectId"], "webhook_1"))


# ---------------------------------------------------------------- execute

class ExecuteTest(StandinTest):

    @async_test(timeout=30)
    async def test_validation_texts_in_order(self):
        s = await self.standin()
        s.add_key("watch", "w", permissions=["task.monitor"])
        w = await self.client(s, "watch")
        # permission comes first, whatever the pipeline
        self.assertFails(await w.call("execute", pipeline=None),
                         "Permission 'task.control' denied")
        c = await self.client(s)

        def comps(*cs):
            return {"project_id": "p1", "components": list(cs)}
        src = {"id": "a", "provider": "webhook",
               "config": {"mode": "Source"}}
        src2 = {"id": "b", "provider": "filesys",
                "config": {"mode": "Source"}}
        cases = [
            # no pipeline at all
            (dict(), "'NoneType' object has no attribute 'get'"),
            # the plan walk reads every component's id, before the source
            # check, when pipeline.source is set
            (dict(pipeline={"source": "a", "components": [
                {"provider": "x"}]}), "'id'"),
            (dict(pipeline={"source": "a", "components": {"a": src}}),
             "string indices must be integers, not 'str'"),
            # env is read before the source
            (dict(pipeline=comps(), env=None),
             "'NoneType' object has no attribute 'items'"),
            (dict(pipeline=comps(src, src2)),
             "Pipeline has multiple source components, please specify one "
             "explicitly"),
            (dict(pipeline=comps({"id": "a", "provider": "webhook"})),
             "Pipeline does not have a source component defined"),
            (dict(pipeline=dict(comps(src), source="nope")),
             'Pipeline source component "nope" not found in components '
             'list'),
            (dict(pipeline={"source": "s", "components": {}}),
             'Pipeline source component "s" not found in components list'),
            (dict(pipeline=dict(comps({"id": "a", "config": {}}),
                                source="a")),
             'Source "a" not found in pipeline'),
            # a top-level source overrides the pipeline's
            (dict(pipeline=dict(comps(src, src2), source="a"),
                  source="zz"),
             'Pipeline source component "zz" not found in components list'),
        ]
        for args, text in cases:
            with self.subTest(text=text):
                self.assertFails(await c.call("execute", **args), text)
        # failed requests leave no task
        self.assertEqual(s.tasks, [])

        first = await self.execute(c, pipe())
        self.assertFails(await c.call("execute", pipeline=pipe()),
                         "Pipeline is already running.")
        again = await self.execute(c, pipe(), useExisting=True)
        self.assertEqual(again, first)
        self.assertEqual(len(s.tasks), 1)
        # the source component got a config, the pipeline its source
        p = pipe(source="w")
        del p["source"]
        del p["components"][0]["config"]
        p["components"][0]["config"] = {"mode": "Source"}
        body = await self.execute(c, p)
        self.assertEqual(s.task(body["token"]).pipeline["source"], "w")

    @async_test(timeout=30)
    async def test_reply_only_after_running_events_first(self):
        s = await self.standin()
        c = await self.client(s)
        mark = len(c.frames)
        await self.monitor(c)
        catchup = c.messages(mark)
        self.assertEqual([describe(m) for m in catchup],
                         ["s0", "running", "reply:rrext_monitor"])
        self.assertEqual(catchup[0]["body"],
                         dict(NOT_RUNNING_STATUS, __id="p1.webhook_1"))
        self.assertEqual(catchup[1]["body"],
                         {"action": "running", "tasks": []})
        self.assertNotIn("body", catchup[2])

        mark = len(c.frames)
        body = await self.execute(c, pipe(name="My webhook"), name="nightly",
                                  ttl=0)
        msgs = c.messages(mark)
        self.assertEqual(squeeze(describe(m) for m in msgs),
                         ["s1", "begin", "s2", "s3u", "reply:execute"])
        self.assertEqual(s.task(body["token"]).state, standin.RUNNING)
        for m in msgs[:-1]:
            self.assertEqual(m["body"]["__id"], "80dcb3cf.webhook_1")
            if m["event"] == "apaevt_status_update":
                self.assertEqual(set(m["body"]),
                                 set(NOT_RUNNING_STATUS) | {"__id"})
                self.assertEqual(m["body"]["name"],
                                 "nightly.My webhook")
        begin = [m for m in msgs if describe(m) == "begin"][0]["body"]
        self.assertEqual(begin, {"action": "begin",
                                 "name": "nightly.My webhook",
                                 "projectId": "p1", "source": "webhook_1",
                                 "__id": "80dcb3cf.webhook_1"})
        running = msgs[-2]["body"]
        self.assertEqual(running["status"], standin.RESIDENT_STATUS)
        self.assertGreater(running["startTime"], 0)
        # the status reply is the TASK_STATUS, without __id
        st = self.assertOk(await c.call("rrext_get_task_status",
                                        token=body["token"]))
        self.assertEqual(set(st), set(NOT_RUNNING_STATUS))
        self.assertEqual(st["state"], standin.RUNNING)

    @async_test(timeout=30)
    async def test_no_events_without_subscription(self):
        s = await self.standin()
        c = await self.client(s)
        body = await self.execute(c, pipe())
        await s.stop_task(body["token"])
        await c.barrier()
        self.assertEqual(c.events, [])

    @async_test(timeout=30)
    async def test_requests_run_concurrently(self):
        s = await self.standin()
        c = await self.client(s)
        fut, send = c.start("execute", {"pipeline": pipe(
            provider="test_hang_start"), "args": []})
        await send
        task = await s.wait_for(lambda: s.find_task("p1", "webhook_1"))
        await s.wait_for(lambda: task.state == standin.INITIALIZING)
        # the pending execute blocks nothing on the same connection
        st = self.assertOk(await c.call("rrext_get_task_status",
                                        token=task.token))
        self.assertEqual(st["state"], standin.INITIALIZING)
        await c.barrier()
        self.assertFalse(fut.done())
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), 0.3)

    @async_test(timeout=30)
    async def test_finished_record_is_replaced(self):
        s = await self.standin()
        c = await self.client(s)
        await self.monitor(c, source="f")
        first = await self.execute(c, pipe(provider="filesys", source="f"))
        old = s.task(first["token"])
        await s.wait_for(lambda: old.done)
        second = await self.execute(c, pipe(provider="filesys", source="f"))
        self.assertEqual(second, first)
        new = s.task(first["token"])
        self.assertIsNot(new, old)
        self.assertGreaterEqual(new.status["startTime"],
                                old.status["endTime"])
        self.assertEqual(len(s.tasks), 1)
        self.assertEqual(len(s.history), 2)


# ---------------------------------------------------------------- monitor

class MonitorTest(StandinTest):

    @async_test(timeout=30)
    async def test_catch_up_of_an_existing_task(self):
        s = await self.standin()
        c = await self.client(s)
        body = await self.execute(c, pipe())
        w = await self.client(s)
        mark = len(w.frames)
        self.assertOk(await w.call("rrext_monitor", token=body["token"],
                                   types=["summary", "task"]))
        msgs = w.messages(mark)
        self.assertEqual([describe(m) for m in msgs],
                         ["s3u", "running", "reply:rrext_monitor"])
        self.assertEqual(msgs[0]["body"]["__id"], body["id"])
        self.assertEqual(msgs[1]["body"], {"action": "running", "tasks": [
            {"id": body["id"], "name": body["id"] + ".webhook_1",
             "projectId": "p1", "source": "webhook_1"}]})
        # a subscription by token is the project's key
        self.assertEqual(s.sessions[-1].monitors, {"p.p1.webhook_1": 36})

    @async_test(timeout=30)
    async def test_replace_semantics_and_unsubscribe(self):
        s = await self.standin()
        c = await self.client(s)
        body = await self.execute(c, pipe())
        await self.monitor(c, types=["summary", "task"])
        await c.wait_event(lambda b: b.get("state") == 3
                           and b.get("__id") == body["id"])
        # only TASK now: no catch-up (no new bit), and no status updates
        # (a periodic one may still come just before the reply)
        mark = len(c.frames)
        self.assertOk(await c.call("rrext_monitor", projectId="p1",
                                   source="webhook_1", types=["TASK"]))

        def since_reply():
            names = [describe(m) for m in c.messages(mark)]
            return names[names.index("reply:rrext_monitor"):]
        self.assertEqual(since_reply(), ["reply:rrext_monitor"])
        w = await self.client(s)
        await self.monitor(w)
        ticks = len(w.events)
        await w.wait_event(lambda b: b.get("state") == 3, start=ticks)
        await c.barrier()
        self.assertEqual(since_reply(),
                         ["reply:rrext_monitor", "reply:rrext_ping"])
        # SUMMARY again: its catch-up only
        mark = len(c.frames)
        self.assertOk(await c.call("rrext_monitor", projectId="p1",
                                   source="webhook_1",
                                   types=["summary", "task"]))
        self.assertEqual([describe(m) for m in c.messages(mark)][:2],
                         ["s3u", "reply:rrext_monitor"])
        # [] removes the key: nothing more, even the end of the task
        self.assertOk(await c.call("rrext_monitor", projectId="p1",
                                   source="webhook_1", types=[]))
        self.assertEqual(s.sessions[0].monitors, {})
        mark = len(c.frames)
        await s.stop_task(body["token"])
        await w.wait_event(lambda b: b.get("action") == "end")
        await c.barrier()
        self.assertEqual([describe(m) for m in c.messages(mark)],
                         ["reply:rrext_ping"])

    @async_test(timeout=30)
    async def test_key_forms_and_errors(self):
        s = await self.standin()
        c = await self.client(s)
        self.assertFails(
            await c.call("rrext_monitor", token="tk_x", projectId="p1",
                         types=["task"]),
            "You must specifiy either token or project_id/source, not both")
        self.assertFails(
            await c.call("rrext_monitor", token="*", source="s",
                         types=["task"]),
            "You must specifiy either token or project_id/source, not both")
        self.assertFails(await c.call("rrext_monitor", types=["task"]),
                         "You must specifiy either token or project_id/"
                         "source")
        self.assertFails(await c.call("rrext_monitor", projectId="p1",
                                      types=["task"]),
                         "You must specifiy either token or project_id/"
                         "source")
        self.assertFails(await c.call("rrext_monitor", token="tk_nope",
                                      types=["task"]),
                         "Your pipeline is not running")
        mons = s.sessions[0].monitors
        self.assertOk(await c.call("rrext_monitor", projectId="a",
                                   source="s", types=36))
        self.assertOk(await c.call("rrext_monitor", projectId="b",
                                   source="s", types="12"))
        self.assertOk(await c.call("rrext_monitor", projectId="c",
                                   source="s", listenType=2))
        self.assertOk(await c.call("rrext_monitor", projectId="d",
                                   source="s", pipeId=3,
                                   types=["Sse", "bogus"]))
        self.assertOk(await c.call("rrext_monitor", token="*",
                                   types=["all"]))
        self.assertEqual(mons, {"p.a.s": 36, "p.b.s": 12, "p.c.s": 2,
                                "p.d.s.3": 64, "*": 255})
        # the global key receives every task's events
        body = await self.execute(c, pipe("zz"))
        await c.wait_event(lambda b: b.get("action") == "begin"
                           and b.get("__id") == body["id"])
        # a project wildcard: source "*"
        w = await self.client(s)
        self.assertOk(await w.call("rrext_monitor", projectId="zz",
                                   source="*", types=["task"]))
        await s.stop_task(body["token"])
        await w.wait_event(lambda b: b.get("action") == "end")

    @async_test(timeout=30)
    async def test_subscription_follows_the_next_run(self):
        s = await self.standin()
        c = await self.client(s)
        first = await self.execute(c, pipe(provider="filesys", source="f"))
        self.assertOk(await c.call("rrext_monitor", token=first["token"],
                                   types=["summary", "task"]))
        await self.final_status(c, first["token"])
        mark = len(c.events)
        await self.execute(c, pipe(provider="filesys", source="f"))
        await c.wait_event(lambda b: b.get("action") == "begin", start=mark)
        # subscribing before a run can deliver the previous run's end
        w = await self.client(s)
        await s.wait_for(lambda: s.task(first["token"]).done)
        mark = len(w.frames)
        await self.monitor(w, source="f", types=["summary"])
        self.assertTrue(w.messages(mark)[0]["body"]["completed"])

    @async_test(timeout=30)
    async def test_events_reach_only_team_members(self):
        s = await self.standin(keys=[ApiKey("ka", "alice"),
                                     ApiKey("kb", "bob")])
        a = await self.client(s, "ka")
        b = await self.client(s, "kb")
        # before the task exists anyone may subscribe...
        await self.monitor(a)
        await self.monitor(b)
        body = await self.execute(a, pipe())
        await a.wait_event(lambda x: x.get("action") == "begin")
        await b.barrier()
        # ...but bob (another team) receives nothing of alice's task
        self.assertEqual([describe(e) for e in b.events], ["s0", "running"])
        # and cannot subscribe to it, see it, or stop it
        self.assertFails(await b.call("rrext_monitor", token=body["token"],
                                      types=["task"]),
                         "Access denied: no permissions for this task")
        self.assertFails(await b.call("rrext_monitor", projectId="p1",
                                      source="webhook_1", types=["task"]),
                         "Access denied: no permissions for this task")
        self.assertFails(await b.call("rrext_get_task_status",
                                      token=body["token"]),
                         "Access denied: no permissions for this task")
        self.assertFails(await b.call("terminate", token=body["token"]),
                         "Access denied: no permissions for this task")


# ---------------------------------------------------------------- terminate

class TerminateTest(StandinTest):

    @async_test(timeout=30)
    async def test_reply_after_cancelled(self):
        s = await self.standin()
        c = await self.client(s)
        await self.monitor(c)
        body = await self.execute(c, pipe(), ttl=0)
        mark = len(c.frames)
        self.assertOk(await c.call("terminate", token=body["token"]))
        msgs = c.messages(mark)
        self.assertEqual(squeeze(describe(m) for m in msgs)[-4:],
                         ["s4", "s6c", "end", "reply:terminate"])
        self.assertNotIn("body", msgs[-1])
        final = msgs[-3]["body"]
        self.assertEqual((final["status"], final["exitCode"],
                          final["exitMessage"], final["serviceUp"]),
                         ("Stopped", 0, "", False))
        self.assertGreaterEqual(final["endTime"], final["startTime"])
        self.assertEqual(msgs[-4]["body"]["status"], "Stopping")
        self.assertFalse(msgs[-4]["body"]["completed"])
        # a retained finished task: success, nothing changes
        task = s.task(body["token"])
        before = task.snapshot()
        mark = len(c.frames)
        self.assertOk(await c.call("terminate", token=body["token"]))
        self.assertEqual([describe(m) for m in c.messages(mark)],
                         ["reply:terminate"])
        self.assertEqual(task.snapshot(), before)
        # unknown and missing tokens
        self.assertFails(await c.call("terminate", token="tk_unknown"),
                         "Your pipeline is not running")
        self.assertFails(await c.call("terminate"),
                         "Task token is required")
        self.assertFails(await c.call("rrext_get_task_status"),
                         "Task token is required")

    @async_test(timeout=30)
    async def test_during_startup_fails_the_execute(self):
        s = await self.standin()
        c = await self.client(s)
        fut, send = c.start("execute", {"pipeline": pipe(
            provider="test_hang_start")})
        await send
        task = await s.wait_for(lambda: s.find_task("p1", "webhook_1"))
        self.assertOk(await c.call("terminate", token=task.token))
        r = await fut
        self.assertFails(r, "")
        self.assertIsNone(s.task(task.token))
        self.assertFails(await c.call("rrext_get_task_status",
                                      token=task.token),
                         "Your pipeline is not running")

    @async_test(timeout=30)
    async def test_slow_stop_and_stop_hang(self):
        s = await self.standin()
        c = await self.client(s)
        slow = await self.execute(c, pipe(provider="test_slow_stop"))
        t0 = time.monotonic()
        self.assertOk(await c.call("terminate", token=slow["token"]))
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        custom = await self.execute(c, pipe("p2", double={"stopMs": 250}))
        t0 = time.monotonic()
        self.assertOk(await c.call("terminate", token=custom["token"]))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)

        hang = await self.execute(c, pipe("p3", provider="test_stop_hang"))
        fut, send = c.start("terminate", {"token": hang["token"]})
        await send
        await s.wait_for(lambda: s.task(hang["token"]).stop_requested)
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), 0.5)
        # the task is still running, and the connection still answers
        st = self.assertOk(await c.call("rrext_get_task_status",
                                        token=hang["token"]))
        self.assertEqual(st["state"], standin.RUNNING)


# ---------------------------------------------------------------- scenarios

class ScenarioTest(StandinTest):

    async def batch(self, exit_mode, provider, double=None):
        s = await self.standin(exit_mode=exit_mode)
        c = await self.client(s)
        await self.monitor(c, source="f")
        mark = len(c.frames)
        body = await self.execute(c, pipe(provider=provider, source="f",
                                          double=double))
        final = await self.final_status(c, body["token"])
        await c.wait_event(lambda b: b.get("action") == "end")
        names = squeeze(describe(m) for m in c.messages(mark))
        # the execute reply comes once RUNNING, after the start-up events
        self.assertEqual(names[:5], ["s1", "begin", "s2", "s3u",
                                     "reply:execute"])
        return s, c, body, final, names

    @async_test(timeout=30)
    async def test_batch_success_intended(self):
        s, c, body, final, names = await self.batch("intended", "filesys")
        self.assertEqual(names[-4:], ["s3", "s4", "s5c", "end"])
        self.assertEqual((final["state"], final["status"], final["exitCode"],
                          final["exitMessage"], final["errors"]),
                         (5, "Completed", 0, "", []))
        st = self.assertOk(await c.call("rrext_get_task_status",
                                        token=body["token"]))
        self.assertEqual(st, {k: v for k, v in final.items()
                              if k != "__id"})

    @async_test(timeout=30)
    async def test_batch_success_head(self):
        s, c, body, final, names = await self.batch("head", "filesys")
        self.assertEqual(names[-4:], ["s3", "s4", "s6c", "end"])
        self.assertEqual((final["state"], final["status"], final["exitCode"],
                          final["exitMessage"], final["errors"]),
                         (6, "Stopped", 1, "", []))

    @async_test(timeout=30)
    async def test_batch_failure_both_modes(self):
        for mode in ("intended", "head"):
            with self.subTest(mode=mode):
                s, c, body, final, names = await self.batch(
                    mode, "test_fail_run")
                self.assertEqual(names[-4:], ["s3", "s4", "s6c", "end"])
                self.assertEqual(
                    (final["state"], final["status"], final["exitCode"],
                     final["exitMessage"]),
                    (6, "Stopped", 1, "Simulated pipeline failure"))
                self.assertEqual(len(final["errors"]), 1)
                code, msg, loc = final["errors"][0].split("*")
                self.assertEqual(msg, "Simulated pipeline failure")
                detail = [e for e in c.events
                          if e["event"] == "apaevt_status_error"]
                self.assertEqual([e["body"] for e in detail],
                                 [{"message": final["errors"][0],
                                   "__id": body["id"]}])
                # the error was visible while the task was still running
                self.assertIn("apaevt_status_error", names[
                    names.index("reply:execute"):names.index("s3")])
        # x-double: own errors and message
        s, c, body, final, names = await self.batch(
            "intended", "filesys", double={"scenario": "fail_run",
                                           "errors": ["E*boom*here"],
                                           "exitMessage": "boom"})
        self.assertEqual((final["errors"], final["exitMessage"]),
                         (["E*boom*here"], "boom"))

    @async_test(timeout=30)
    async def test_fail_start(self):
        s = await self.standin()
        c = await self.client(s)
        await self.monitor(c)
        mark = len(c.frames)
        r = await c.call("execute", pipeline=pipe(
            provider="test_fail_start", double={"exitMessage": "no such "
                                                "node"}))
        self.assertFails(r, "no such node")
        names = squeeze(describe(m) for m in c.messages(mark))
        self.assertEqual(names, ["s1", "begin", "s2", "s4", "s6c", "end",
                                 "reply:execute"])
        final = c.messages(mark)[-3]["body"]
        self.assertEqual((final["exitCode"], final["exitMessage"]),
                         (1, "no such node"))
        self.assertEqual(s.tasks, [])
        token = standin.task_token("local", "p1", "webhook_1")
        self.assertFails(await c.call("rrext_get_task_status", token=token),
                         "Your pipeline is not running")
        # the default exit message is empty
        self.assertFails(await c.call("execute", pipeline=pipe(
            provider="test_fail_start")), "")
        # a malformed x-double is refused before anything starts
        self.assertFails(await c.call("execute", pipeline=pipe(
            double={"runMs": "soon"})), "x-double: runMs must be a number")
        self.assertFails(await c.call("execute", pipeline=pipe(
            double={"scenario": "explode"})),
            'x-double: unknown scenario "explode"')
        self.assertEqual(s.tasks, [])

    @async_test(timeout=30)
    async def test_fast_end(self):
        for mode, text, state in (("intended", "Task has already completed",
                                   5), ("head", "", 6)):
            with self.subTest(mode=mode):
                s = await self.standin(exit_mode=mode)
                c = await self.client(s)
                await self.monitor(c)
                mark = len(c.frames)
                r = await c.call("execute", pipeline=pipe(
                    provider="test_fast_end"))
                self.assertFails(r, text)
                names = squeeze(describe(m) for m in c.messages(mark))
                self.assertEqual(names, ["s1", "begin", "s2", "s3u", "s3",
                                         "s4", "s%dc" % state, "end",
                                         "reply:execute"])
                self.assertEqual(s.tasks, [])

    @async_test(timeout=30)
    async def test_hang_start(self):
        s = await self.standin()
        c = await self.client(s)
        # never answers by default
        fut, send = c.start("execute", {"pipeline": pipe(
            provider="test_hang_start")})
        await send
        task = await s.wait_for(lambda: s.find_task("p1", "webhook_1"))
        await s.wait_for(lambda: task.state == standin.INITIALIZING)
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), 0.4)
        # with hangMs: the real server's start-up timeout text
        r = await c.call("execute", pipeline=pipe("p2", provider=
                                                  "test_hang_start",
                                                  double={"hangMs": 100}))
        self.assertFails(r, standin.HANG_TEXT.format(state=2))
        self.assertTrue(r["message"].startswith(
            "No subprocess events received for 300 seconds. Task stuck in "
            "state 2 (NONE=0,"))
        self.assertIsNone(s.find_task("p2", "webhook_1"))

    @async_test(timeout=30)
    async def test_resident_tasks_stay_running(self):
        s = await self.standin()
        c = await self.client(s)
        await self.monitor(c, types=["summary"])
        for provider in ("webhook", "chat", "dropper", "telegram"):
            await self.execute(c, pipe(provider=provider, source=provider))
        body = await self.execute(c, pipe())
        mark = len(c.events)
        # several periodic updates, well past a batch's run time
        for _ in range(6):
            ev = await c.wait_event(lambda b: b.get("__id") == body["id"],
                                    start=mark)
            mark = c.events.index(ev) + 1
            self.assertEqual(ev["body"]["state"], standin.RUNNING)
            self.assertTrue(ev["body"]["serviceUp"])
        self.assertEqual({t.state for t in s.tasks}, {standin.RUNNING})
        self.assertEqual({t.status["status"] for t in s.tasks},
                         {standin.RESIDENT_STATUS})

    @async_test(timeout=30)
    async def test_output_events(self):
        s = await self.standin()
        c = await self.client(s)
        quiet = await self.client(s)
        await self.monitor(c, source="f", types=["output"])
        await self.monitor(quiet, source="f", types=["summary", "task"])
        body = await self.execute(c, pipe(provider="filesys", source="f",
                                          double={"output": ["alpha",
                                                             "beta"]}))
        await s.wait_for(lambda: s.task(body["token"]).done)
        await c.barrier()
        self.assertEqual([e["body"] for e in c.events],
                         [{"category": "console", "output": "alpha\n",
                           "__id": body["id"]},
                          {"category": "console", "output": "beta\n",
                           "__id": body["id"]}])
        await quiet.barrier()
        self.assertNotIn("output", [e["event"] for e in quiet.events])
        # by default: "line k" while running
        body = await self.execute(c, pipe(source="w"))
        self.assertOk(await c.call("rrext_monitor", token=body["token"],
                                   types=["output"]))
        ev = await c.wait_event(lambda b: b.get("__id") == body["id"])
        self.assertEqual(ev["body"]["output"], "line 1\n")


# ---------------------------------------------------------------- sweeps

class SweepTest(StandinTest):

    @async_test(timeout=30)
    async def test_idle_ttl(self):
        s = await self.standin()
        c = await self.client(s)
        await self.monitor(c)
        short = await self.execute(c, pipe(), ttl=1)
        forever = await self.execute(c, pipe("p2"), ttl=0)
        final = await self.final_status(c, short["token"])
        self.assertEqual((final["state"], final["status"], final["exitCode"]),
                         (6, "Stopped", 0))
        elapsed = final["endTime"] - final["startTime"]
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertEqual(s.task(forever["token"]).state, standin.RUNNING)
        self.assertEqual(s.task(forever["token"]).idle, 0)
        # the default TTL is 900 s; status polls do not reset the counter,
        # data requests do
        dflt = await self.execute(c, pipe("p3"))
        task = s.task(dflt["token"])
        self.assertEqual(task.ttl, 900)
        await s.wait_for(lambda: task.idle > 0)
        # (a sweep may add its period between a reply and the check)
        task.idle = 500
        self.assertOk(await c.call("rrext_get_task_status",
                                   token=dflt["token"]))
        self.assertGreaterEqual(task.idle, 500)
        pid = self.assertOk(await c.call("rrext_process", token=dflt["token"],
                                         subcommand="open"))["pipe_id"]
        self.assertLess(task.idle, 1)
        self.assertOk(await c.call("rrext_process", token=dflt["token"],
                                   subcommand="write", pipe_id=pid,
                                   data="abc"))
        # the SDKs send data as a binary frame: JSON header, newline, bytes
        seq, head = c.build("rrext_process", {"subcommand": "write",
                                              "pipe_id": pid,
                                              "token": dflt["token"]})
        self.assertOk(await c.send_expect(head.encode() + b"\n\x00\n\xff",
                                          seq))
        self.assertEqual(self.assertOk(await c.call(
            "rrext_process", token=dflt["token"], subcommand="close",
            pipe_id=pid)), {})
        self.assertEqual(task.pipes, {pid: 6})

    @async_test(timeout=30)
    async def test_retention(self):
        s = await self.standin(timings=dict(keep_ms=200))
        c = await self.client(s)
        await self.monitor(c, source="f")
        await self.monitor(c, project_id="other", source="f")
        body = await self.execute(c, pipe(provider="filesys", source="f"))
        await self.final_status(c, body["token"])
        self.assertOk(await c.call("rrext_get_task_status",
                                   token=body["token"]))
        await s.wait_for(lambda: s.task(body["token"]) is None)
        self.assertFails(await c.call("rrext_get_task_status",
                                      token=body["token"]),
                         "Your pipeline is not running")
        # the project's subscription went with it, others stay
        self.assertEqual(s.sessions[0].monitors, {"p.other.f": 46})


# ---------------------------------------------------------------- faults

class FaultTest(StandinTest):

    @async_test(timeout=30)
    async def test_drop_mid_execute(self):
        for when in ("accepted", "running"):
            with self.subTest(when=when):
                s = await self.standin()
                s.faults.drop_execute = 1
                s.faults.drop_execute_when = when
                c = await self.client(s)
                fut, send = c.start("execute", {"pipeline": pipe()})
                await send
                await c.wait_closed(10)
                with self.assertRaises(ConnectionError):
                    await fut
                # the task goes on; found again by its computed token
                c2 = await self.client(s)
                token = standin.task_token("local", "p1", "webhook_1")
                await s.wait_for(lambda: s.task(token).state == 3)
                st = self.assertOk(await c2.call("rrext_get_task_status",
                                                 token=token))
                self.assertEqual(st["state"], standin.RUNNING)
                self.assertEqual(s.faults.drop_execute, 0)
                # the next execute is answered
                await self.execute(c2, pipe("p2"))

    @async_test(timeout=30)
    async def test_restart(self):
        s = await self.standin()
        c = await self.client(s)
        body = await self.execute(c, pipe())
        await s.restart()
        await c.wait_closed(10)
        self.assertEqual(s.tasks, [])
        c2 = await self.client(s)
        self.assertFails(await c2.call("rrext_get_task_status",
                                       token=body["token"]),
                         "Your pipeline is not running")
        self.assertEqual(s.execute_count, 1)
        again = await self.execute(c2, pipe())
        self.assertEqual(again["token"], body["token"])

    @async_test(timeout=30)
    async def test_reject_auth(self):
        s = await self.standin()
        for text in ("Authentication failed", "Invalid authorization "
                     "provided", "Bad request"):
            s.faults.reject_auth_text = text
            s.faults.reject_auth_count = 1
            c = await self.client(s, key=None)
            self.assertFails(await c.auth("MYAPIKEY", check=False), text)
            await c.wait_closed(10)
        self.assertIsNone(s.faults.reject_auth_text)
        await self.client(s)

    @async_test(timeout=30)
    async def test_silence_and_duplicate_final_status(self):
        s = await self.standin()
        c = await self.client(s)
        await self.monitor(c, source="f")
        s.faults.silence_final_status = True
        s.faults.silence_end_event = True
        body = await self.execute(c, pipe(provider="filesys", source="f"))
        await s.wait_for(lambda: s.task(body["token"]).done)
        await c.barrier()
        names = squeeze(describe(m) for m in c.events)
        self.assertEqual(names[-2:], ["s3", "s4"])
        # polling still gives the final state
        st = self.assertOk(await c.call("rrext_get_task_status",
                                        token=body["token"]))
        self.assertEqual(st["state"], standin.COMPLETED)

        s.faults.reset()
        s.faults.silence_end_event = True
        body = await self.execute(c, pipe(provider="filesys", source="f"))
        await s.wait_for(lambda: s.task(body["token"]).done)
        await c.barrier()
        self.assertEqual(describe(c.events[-1]), "s5c")

        s.faults.reset()
        s.faults.duplicate_final_status = True
        mark = len(c.events)
        body = await self.execute(c, pipe(provider="filesys", source="f"))
        await s.wait_for(lambda: s.task(body["token"]).done)
        await c.barrier()
        names = [describe(e) for e in c.events[mark:]]
        self.assertEqual(names[-3:], ["s5c", "end", "s5c"])


# ---------------------------------------------------------------- auth

class AuthTest(StandinTest):

    @async_test(timeout=30)
    async def test_failure_texts_then_close(self):
        s = await self.standin()
        s.add_key("kr", "rita")
        s.revoke_key("kr")
        s.add_key("ke", "eve", expires_at=time.time() - 1)
        for cred, text in (("", "No authorization provided"),
                           ("Bearer ", "No authorization provided"),
                           ("Bearer   ", "No authorization provided"),
                           ("nope", "Invalid API key"),
                           ("kr", "Authentication failed"),
                           ("ke", "Authentication failed"),
                           ("tk_0000", "Bad request"),
                           ("pk_0000", "Bad request")):
            with self.subTest(cred=cred):
                c = await self.client(s, key=None)
                self.assertFails(await c.auth(cred, check=False), text)
                await c.wait_closed(10)

    @async_test(timeout=30)
    async def test_connect_results(self):
        s = await self.standin()
        c = await self.client(s, key=None)
        oss = self.assertOk(await c.auth("MYAPIKEY"))
        self.assertEqual(oss, {
            "userToken": "MYAPIKEY", "userId": "local",
            "displayName": "RocketRide Developer", "givenName": "",
            "familyName": "", "preferredUsername": "developer", "email": "",
            "emailVerified": False, "phoneNumber": "",
            "phoneNumberVerified": False, "locale": "",
            "defaultTeam": "local",
            "organizations": [{"id": "local", "name": "Local",
                               "permissions": ["org.admin"],
                               "teams": [{"id": "local",
                                          "name": "Development",
                                          "permissions": [
                                              "team.admin", "read", "write",
                                              "execute", "task.control",
                                              "task.data", "task.monitor",
                                              "task.debug", "task.store"]}]}],
            "apps": [], "capabilities": ["oss"]})
        s.add_key("k1", "alice", permissions=["task.monitor"])
        r = self.assertOk(await c.auth("Bearer k1"))
        self.assertEqual((r["userId"], r["userToken"], r["defaultTeam"]),
                         ("alice", "k1", "alice"))
        self.assertEqual(r["organizations"][0]["teams"][0]["permissions"],
                         ["task.monitor"])
        self.assertEqual(s.sessions[0].credential, "k1")

    @async_test(timeout=30)
    async def test_attempt_limit(self):
        s = await self.standin()
        c = await self.client(s, key=None)
        for _ in range(5):
            await c.auth("MYAPIKEY")
        self.assertFails(await c.auth("MYAPIKEY", check=False),
                         "Too many authentication attempts")
        await c.wait_closed(10)

    @async_test(timeout=30)
    async def test_gate_and_connection_commands(self):
        s = await self.standin()
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(s.url.replace("/task/service",
                                                   "/other"))
        self.assertEqual(e.exception.status_code, 404)
        c = await self.client(s, key=None)
        await asyncio.wait_for(await c.ws.ping(b"are you there"), 5)
        probe = self.assertOk(await c.call("rrext_public_probe"))
        self.assertEqual(set(probe), {"version", "capabilities", "platform",
                                      "apps"})
        self.assertFails(await c.call("rrext_public_bogus"),
                         "Invalid command: rrext_public_bogus")
        self.assertFails(await c.call("rrext_ping"), "Not authenticated")
        await c.wait_closed(10)

        c = await self.client(s)
        self.assertEqual(self.assertOk(await c.call("rrext_ping")),
                         {"pong": True})
        self.assertFails(await c.call("rrext_bogus"),
                         "Invalid command: rrext_bogus")
        self.assertFails(await c.call("launch"), "Invalid command: launch")
        self.assertFails(await c.request("", {}), "Invalid command: ")
        # arguments may be missing
        self.assertEqual(self.assertOk(await c.request(
            "rrext_ping", omit_args=True)), {"pong": True})
        # not a request: no answer
        await c.send_raw(json.dumps({"type": "event", "seq": 99}))
        await c.send_raw("not json")
        await c.barrier()
        self.assertEqual(self.assertOk(await c.call("deauth")), {})
        self.assertFails(await c.call("rrext_ping"), "Not authenticated")
        await c.wait_closed(10)

    @async_test(timeout=30)
    async def test_keys_change_at_run_time(self):
        s = await self.standin()
        s.add_key("k1", "alice")
        c = await self.client(s, "k1")
        # revoked: new connections fail, the open one keeps working
        s.revoke_key("k1")
        c2 = await self.client(s, key=None)
        self.assertFails(await c2.auth("k1", check=False),
                         "Authentication failed")
        body = await self.execute(c, pipe())
        self.assertEqual(s.task(body["token"]).user_id, "alice")
        # ...unless the revocation drops them
        s.revoke_key("k1", text="Key revoked", close_sessions=True)
        await c.wait_closed(10)
        c3 = await self.client(s, key=None)
        self.assertFails(await c3.auth("k1", check=False), "Key revoked")
        # expiry
        s.add_key("k2", "bob")
        await self.client(s, "k2")
        s.expire_key("k2")
        c4 = await self.client(s, key=None)
        self.assertFails(await c4.auth("k2", check=False),
                         "Authentication failed")
        s.remove_key("k2")
        c5 = await self.client(s, key=None)
        self.assertFails(await c5.auth("k2", check=False), "Invalid API key")
        # any key, when configured so
        s.accept_any_key = True
        c6 = await self.client(s, key=None)
        self.assertEqual(self.assertOk(await c6.auth("whatever"))["userId"],
                         "local")

    @async_test(timeout=30)
    async def test_permissions(self):
        s = await self.standin()
        s.add_key("owner", "alice")
        s.add_key("ro", "alice", permissions=["task.control"])
        o = await self.client(s, "owner")
        body = await self.execute(o, pipe())
        r = await self.client(s, "ro")
        self.assertFails(await r.call("rrext_get_task_status",
                                      token=body["token"]),
                         "Permission 'task.monitor' denied for this task")
        self.assertFails(await r.call("rrext_get_token", projectId="p1",
                                      source="webhook_1"),
                         "Permission 'task.monitor' denied")

    @async_test(timeout=30)
    async def test_task_token_credentials(self):
        s = await self.standin()
        c = await self.client(s)
        body = await self.execute(c, pipe())
        t = await self.client(s, None)
        r = self.assertOk(await t.auth(body["token"]))
        self.assertEqual((r["userId"], r["defaultTeam"]), ("local", "local"))
        # locked to its task, whatever token is sent
        st = self.assertOk(await t.call("rrext_get_task_status",
                                        token="tk_other"))
        self.assertEqual(st["state"], standin.RUNNING)
        # the public token: data rights only, so no execute
        p = await self.client(s, body["publicToken"])
        self.assertFails(await p.call("execute", pipeline=pipe("p2")),
                         "Permission 'task.control' denied")
        self.assertEqual(self.assertOk(await p.call(
            "rrext_process", subcommand="open")), {"pipe_id": 1})

    @async_test(timeout=30)
    async def test_token_and_task_list(self):
        s = await self.standin()
        c = await self.client(s)
        body = await self.execute(c, pipe())
        batch = await self.execute(c, pipe("p2", provider="filesys",
                                           source="f"))
        await s.wait_for(lambda: s.task(batch["token"]).done)
        self.assertEqual(self.assertOk(await c.call(
            "rrext_get_token", projectId="p1", source="webhook_1")),
            {"token": body["token"]})
        self.assertFails(await c.call("rrext_get_token", projectId="p9",
                                      source="webhook_1"),
                         "Your pipeline is not running")
        tasks = self.assertOk(await c.call("rrext_get_tasks"))["tasks"]
        self.assertEqual([(t["token"], t["source"], t["status"],
                           t["description"]) for t in tasks],
                         [(body["token"], "webhook_1",
                           standin.RESIDENT_STATUS,
                           "RocketRide DTC MCP Tool")])


# ---------------------------------------------------------------- records

class RecordTest(StandinTest):

    @async_test(timeout=30)
    async def test_each_task_records_its_credential(self):
        s = await self.standin(keys=[ApiKey("ka", "alice"),
                                     ApiKey("kb", "bob")])
        a = await self.client(s, "ka")
        b = await self.client(s, "Bearer kb")
        ta = await self.execute(a, pipe())
        tb = await self.execute(b, pipe())
        self.assertNotEqual(ta["token"], tb["token"])
        self.assertEqual((s.task(ta["token"]).user_id,
                          s.task(ta["token"]).credential), ("alice", "ka"))
        self.assertEqual((s.task(tb["token"]).user_id,
                          s.task(tb["token"]).credential), ("bob", "kb"))
        self.assertFails(await b.call("execute", pipeline=pipe()),
                         "Pipeline is already running.")
        self.assertEqual(s.execute_count, 3)
        self.assertEqual(s.executes_by_user, {"alice": 1, "bob": 2})
        recs = s.requests_for("execute")
        self.assertEqual([(r.user_id, r.credential) for r in recs],
                         [("alice", "ka"), ("bob", "kb"), ("bob", "kb")])
        self.assertEqual(recs[0].arguments["pipeline"], pipe())
        rep = s.report()
        self.assertEqual((rep["executes"], rep["tasksByUser"]),
                         (3, {"alice": 1, "bob": 1}))
        self.assertEqual(rep["executeTimes"], [r.at for r in recs])


# ---------------------------------------------------------------- program

class ProgramTest(StandinTest):

    @async_test(timeout=60)
    async def test_standalone_run_and_clean_stop(self):
        d = tempfile.mkdtemp(prefix="standin-")
        port_file = os.path.join(d, "port")
        report = os.path.join(d, "report.json")
        err_path = os.path.join(d, "stderr")
        err = open(err_path, "wb")
        began = time.time()
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "standin.py"), "--port", "0",
             "--port-file", port_file, "--key", "K1=alice",
             "--key", "K2=bob:task.monitor", "--exit-mode", "head",
             "--run-ms", "50", "--tick-ms", "20", "--report", report],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

        def stderr():
            with open(err_path, errors="replace") as f:
                return f.read()
        try:
            deadline = time.monotonic() + 20
            while not (os.path.exists(port_file)
                       and open(port_file).read().endswith("\n")):
                if proc.poll() is not None:
                    self.fail("stand-in exited: %s" % stderr())
                self.assertLess(time.monotonic(), deadline)
                await asyncio.sleep(0.02)
            port = int(open(port_file).read())
            url = "ws://127.0.0.1:%d/task/service" % port
            c = EngineClient(url)
            self.clients.append(c)
            await c.connect()
            await c.auth("K1")
            await self.monitor(c, source="f")
            body = await self.execute(c, pipe(provider="filesys",
                                              source="f"))
            final = await self.final_status(c, body["token"])
            self.assertEqual((final["state"], final["exitCode"]), (6, 1))
            b = EngineClient(url)
            self.clients.append(b)
            await b.connect()
            await b.auth("K2")
            self.assertFails(await b.call("execute", pipeline=pipe()),
                             "Permission 'task.control' denied")
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.get_running_loop().run_in_executor(
                None, lambda: proc.wait(20))
            self.assertEqual(rc, 0, stderr())
            self.assertIn("stopped after 2 execute requests", stderr())
            with open(report) as f:
                rep = json.load(f)
            self.assertEqual(rep["executes"], 2)
            self.assertEqual(rep["executesByUser"], {"alice": 1, "bob": 1})
            times = rep["executeTimes"]
            self.assertEqual(len(times), 2)
            self.assertTrue(began <= times[0] <= times[1] <= time.time(),
                            (began, times))
            self.assertEqual([(t["userId"], t["credential"])
                              for t in rep["tasks"]], [("alice", "K1")])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
