"""Deployments that run on a RocketRide engine (`serve --engine`,
docs/engine.md), against the stand-in engine (standin.py) on the test's own
loop: RocketRide keys signing in to rrdeploy, runs executed with the owner's
credential, each outcome, cancel and timeout, the owner's key revoked at the
engine, overlap with a task started on the engine directly, restarts of
rrdeploy and of the engine, an engine that cannot be reached, the service
credential, and credentials kept unreadable.

Scheduler time is the test clock (rrtest_clock); the engine's own timings are
short and real. Nothing waits on fixed sleeps: tests wait for events, for
stand-in conditions and for processes, with deadlines."""

import asyncio
import json
import os
import stat
import time

from harness import async_test
from runs_helpers import BASE, MINUTE, RunsTest
from standin import FAIL_RUN_MESSAGE, StandinServer, Timings, task_token

# Quick engine timings (milliseconds).
FAST = dict(init_ms=5, ready_ms=30, tick_ms=50, run_ms=150, stop_ms=20,
            slow_stop_ms=400, output_ms=20, ttl_sweep_ms=100,
            cleanup_sweep_ms=50, keep_ms=60000)

ALICE_KEY = "rr-alice-6f1c2d9e8a7b"
BOB_KEY = "rr-bob-0c9d8e7f6a5b"
SERVICE_KEY = "rr-service-1a2b3c4d5e6f"


def engine_pipeline(project_id, provider="filesys", source="source_1",
                    double=None):
    """A pipeline whose source component has the given provider (it picks
    the stand-in's scenario; `double` overrides it, see standin.py)."""
    config = {"mode": "Source", "type": provider}
    if double is not None:
        config["x-double"] = double
    return {"project_id": project_id, "source": source,
            "components": [
                {"id": source, "provider": provider, "config": config},
                {"id": "response_1", "provider": "response", "config": {},
                 "input": [{"lane": "text", "from": source}]}]}


class EngineTest(RunsTest):
    """One stand-in engine and one rrdeploy per test."""

    def setUp(self):
        super().setUp()
        self.standins = []

    def tearDown(self):
        for sd in self.standins:
            self.loop.run_until_complete(sd.stop())
        super().tearDown()

    async def standin(self, exit_mode="intended", **timings):
        t = dict(FAST)
        t.update(timings)
        sd = StandinServer(exit_mode=exit_mode, timings=Timings(**t))
        sd.add_key(ALICE_KEY, "alice")
        sd.add_key(BOB_KEY, "bob")
        sd.add_key(SERVICE_KEY, "svc")
        await sd.start()
        self.standins.append(sd)
        return sd

    def rrdeploy(self, sd_url, args=(), start=True):
        es = self.exec_server(["--engine", sd_url] + list(args),
                              exec_script=False, start=start)
        return es

    async def owner(self, es, key=ALICE_KEY):
        """A client signed in to rrdeploy with a RocketRide key, watching."""
        c = await self.client(es.server, key=key)
        await self.watch(c)
        return c

    async def add(self, c, project_id, schedule="* * * * *", **kw):
        args = {"pipeline": engine_pipeline(project_id, **kw),
                "schedule": schedule}
        return self.assertOk(await c.request("rrext_deploy_add", args))

    async def tick(self, c):
        """Move the test clock to the next minute: every `* * * * *`
        deployment is due. next_run looks at events from here on."""
        c.mark = len(c.events)
        now = (await self.clock(c))["now"]
        return await self.clock(c, set=(int(now) // MINUTE + 1) * MINUTE)

    async def next_run(self, c, project_id, timeout=30.0):
        """The run of project_id that finished since the last tick."""
        ev = await c.wait_event(self.is_event("run_finished", project_id),
                                timeout, start=getattr(c, "mark", 0))
        return ev["body"]["run"]

    async def wait_for(self, pred, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for " + what)
            await asyncio.sleep(0.01)

    async def final(self, c, project_id, run_id, timeout=30.0):
        """The run once it has its final outcome, from the ledger (after a
        restart its end may come before a watch could be set up)."""
        deadline = time.monotonic() + timeout
        while True:
            run = [r for r in await self.runs(c, project_id) if r["id"] == run_id][0]
            if run["outcome"] not in ("queued", "running"):
                return run
            self.assertLess(time.monotonic(), deadline, run)
            await asyncio.sleep(0.05)

    def executes(self, sd, user=None):
        return [r for r in sd.requests
                if r.command == "execute" and (user is None or r.user_id == user)]

    # ---------------------------------------------------------------- runs

    @async_test(timeout=90)
    async def test_scheduled_and_manual_runs_use_the_owners_key(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        # The RocketRide key signed in as the engine's user.
        rec = await self.add(c, "nightly")
        self.assertEqual(rec["userId"], "alice")

        await self.tick(c)
        run = await self.next_run(c, "nightly")
        self.assertEqual(run["outcome"], "succeeded", run)
        self.assertEqual(run["trigger"], "schedule")
        task = run["task"]
        self.assertEqual(task["token"], task_token("alice", "nightly", "source_1"))
        self.assertEqual(task["provider"], "filesys")
        self.assertIn(task["state"], (5, 6))
        self.assertIn("line", run["output_tail"])

        manual = await self.run_now(c, "nightly")
        run = await self.finished(c, manual["id"])
        self.assertEqual(run["outcome"], "succeeded", run)
        self.assertEqual(run["trigger"], "manual")

        ex = self.executes(sd)
        self.assertEqual(len(ex), 2)
        for r in ex:
            self.assertEqual(r.credential, ALICE_KEY)
            self.assertEqual(r.user_id, "alice")
            self.assertEqual(r.arguments["ttl"], 0)
            self.assertEqual(r.arguments["pipeline"]["project_id"], "nightly")
        # A monitor subscription precedes every execute.
        cmds = [r.command for r in sd.requests if r.conn_id == ex[0].conn_id]
        self.assertLess(cmds.index("rrext_monitor"), cmds.index("execute"))
        # No key in rrdeploy's log.
        self.assertNotIn(ALICE_KEY, es.server.stderr())

    @async_test(timeout=60)
    async def test_failed_task_is_a_failed_run_with_the_engines_message(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "broken", provider="test_fail_run")
        await self.tick(c)
        run = await self.next_run(c, "broken")
        self.assertEqual(run["outcome"], "failed", run)
        self.assertIn(FAIL_RUN_MESSAGE, run["reason"])
        self.assertEqual(run["task"]["errors"][-1].split("*")[1], FAIL_RUN_MESSAGE)

        await self.add(c, "nostart", provider="test_fail_start")
        await self.tick(c)
        run = await self.next_run(c, "nostart")
        self.assertEqual(run["outcome"], "failed", run)
        self.assertTrue(run["reason"], run)
        # The deployments stay active: a failing pipeline is not an owner error.
        for p in ("broken", "nostart"):
            self.assertEqual((await self.status(c, p))["state"], "active")

    @async_test(timeout=60)
    async def test_head_exit_convention_and_fast_end_are_successes(self):
        sd = await self.standin(exit_mode="head")
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "head")
        await self.add(c, "fast", provider="test_fast_end")
        await self.tick(c)
        for p in ("head", "fast"):
            run = await self.next_run(c, p)
            self.assertEqual(run["outcome"], "succeeded", run)

    @async_test(timeout=60)
    async def test_cancel_terminates_the_task(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "hook", schedule="manual", provider="webhook")
        started = await self.run_now(c, "hook")
        await self.started(c, started["id"])
        await self.wait_for(lambda: any(t.state == 3 for t in sd.tasks),
                            what="the task to run")
        self.assertOk(await c.call("rrext_deploy_cancel", projectId="hook"))
        run = await self.finished(c, started["id"])
        self.assertEqual(run["outcome"], "cancelled", run)
        self.assertTrue(any(r.command == "terminate" for r in sd.requests))
        self.assertTrue(all(t.state == 6 for t in sd.tasks))

    @async_test(timeout=60)
    async def test_run_timeout_terminates_and_resident_window_succeeds(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url, ["--run-timeout", "1s"])
        c = await self.owner(es)
        await self.add(c, "long", double={"scenario": "batch_ok", "runMs": 60000})
        await self.add(c, "hook", provider="webhook")
        await self.tick(c)
        runs = {p: await self.next_run(c, p) for p in ("long", "hook")}
        self.assertEqual(runs["long"]["outcome"], "timed_out", runs["long"])
        self.assertEqual(runs["hook"]["outcome"], "succeeded", runs["hook"])
        self.assertIn("window", runs["hook"]["reason"])
        self.assertEqual(sum(r.command == "terminate" for r in sd.requests), 2)

    # ---------------------------------------------------------------- owners

    @async_test(timeout=60)
    async def test_revoked_owner_key_errors_the_deployment(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "p")
        await self.tick(c)
        self.assertEqual((await self.next_run(c, "p"))["outcome"], "succeeded")

        sd.revoke_key(ALICE_KEY, text="API key revoked")
        await self.tick(c)
        run = await self.next_run(c, "p")
        self.assertEqual(run["outcome"], "failed", run)
        self.assertIn("API key revoked", run["reason"])
        ev = await c.wait_event(self.is_event("state_changed", "p"), 10)
        self.assertEqual(ev["body"]["state"], "errored")
        rec = await self.status(c, "p")
        self.assertEqual(rec["state"], "errored")
        self.assertIn("API key revoked", rec["error"])
        self.assertEqual(len(self.executes(sd)), 1)

        # It never fires again.
        before = len(sd.requests)
        await self.tick(c)
        await self.tick(c)
        self.assertEqual(len(await self.runs(c, "p")), 2)
        self.assertEqual(len(sd.requests), before)

    @async_test(timeout=60)
    async def test_overlap_with_a_task_started_on_the_engine(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "hook", provider="webhook")
        # alice starts the same pipeline on the engine herself
        from test_standin import EngineClient
        ec = EngineClient(sd.url)
        self.clients.append(ec)
        await ec.connect()
        await ec.auth(ALICE_KEY)
        r = await ec.call("execute", pipeline=engine_pipeline("hook", provider="webhook"),
                          args=[], ttl=0)
        self.assertTrue(r["success"], r)
        await self.tick(c)
        ev = await c.wait_event(lambda b: b.get("projectId") == "hook" and
                                b.get("action") in ("tick_skipped", "run_finished"), 20)
        run = ev["body"]["run"]
        self.assertEqual(run["outcome"], "skipped", run)
        self.assertIn("overlap", run["reason"])
        self.assertEqual(len(self.executes(sd)), 1)

    @async_test(timeout=60)
    async def test_local_keys_need_the_service_credential(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        admin = await self.admin(es.server)
        r = await admin.request("rrext_deploy_add",
                                {"pipeline": engine_pipeline("x"), "schedule": "manual"})
        self.assertErr(r, "forbidden")
        self.assertIn("--engine-key-file", r["message"])
        await admin.close()
        es.server.stop()

        keyfile = os.path.join(es.dir, "service.key")
        with open(keyfile, "w") as f:
            f.write(SERVICE_KEY + "\n")
        os.chmod(keyfile, 0o600)
        es.server.extra_args += ["--engine-key-file", keyfile]
        es.server.start()
        admin = await self.admin(es.server)
        await self.watch(admin)
        self.assertOk(await admin.request(
            "rrext_deploy_add", {"pipeline": engine_pipeline("x"), "schedule": "manual"}))
        started = await self.run_now(admin, "x")
        run = await self.finished(admin, started["id"])
        self.assertEqual(run["outcome"], "succeeded", run)
        self.assertEqual(self.executes(sd)[-1].credential, SERVICE_KEY)

    @async_test(timeout=60)
    async def test_a_local_user_name_is_not_an_engine_users(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: es.server.create_key("alice"))
        c = await self.client(es.server)
        r = await c.auth(ALICE_KEY, check=False)
        self.assertIs(r["success"], False, r)
        self.assertIn("also a local user", r["message"])
        bob = await self.owner(es, key=BOB_KEY)
        self.assertEqual((await self.add(bob, "p", schedule="manual"))["userId"], "bob")

    @async_test(timeout=60)
    async def test_credentials_are_unreadable_in_the_database(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "p")
        await self.add(c, "q", schedule="manual")
        await c.close()
        es.server.stop()
        for suffix in ("", "-wal", "-shm"):
            path = es.server.db + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    self.assertNotIn(ALICE_KEY.encode(), f.read())
        secret = es.server.db + ".secret"
        self.assertEqual(stat.S_IMODE(os.stat(secret).st_mode), 0o600)
        self.assertNotIn(ALICE_KEY, es.server.stderr(all_generations=True))

    # ---------------------------------------------------------------- restarts

    @async_test(timeout=90)
    async def test_kill9_during_a_run_then_the_run_is_followed_to_its_end(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "long", schedule="manual",
                       double={"scenario": "batch_ok", "runMs": 3000})
        started = await self.run_now(c, "long")
        await self.started(c, started["id"])
        es.server.kill9()
        es.server.start()
        c = await self.owner(es)
        run = await self.final(c, "long", started["id"])
        self.assertEqual(run["outcome"], "succeeded", run)
        self.assertEqual(len(self.executes(sd)), 1)

    @async_test(timeout=90)
    async def test_graceful_stop_leaves_the_task_to_the_next_start(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url, ["--shutdown-grace", "30s"])
        c = await self.owner(es)
        await self.add(c, "long", schedule="manual",
                       double={"scenario": "batch_ok", "runMs": 4000})
        started = await self.run_now(c, "long")
        await self.started(c, started["id"])
        t0 = time.monotonic()
        es.server.stop()          # SIGTERM: no waiting for the engine's task
        self.assertLess(time.monotonic() - t0, 10)
        row = [r for r in es.db_runs("long") if r["id"] == started["id"]][0]
        self.assertEqual(row["outcome"], "running", row)
        es.server.start()
        c = await self.owner(es)
        run = await self.final(c, "long", started["id"])
        self.assertEqual(run["outcome"], "succeeded", run)
        self.assertEqual(len(self.executes(sd)), 1)

    @async_test(timeout=60)
    async def test_engine_restart_gives_interrupted(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "hook", schedule="manual", provider="webhook")
        started = await self.run_now(c, "hook")
        await self.started(c, started["id"])
        await self.wait_for(lambda: any(t.state == 3 for t in sd.tasks),
                            what="the task to run")
        await sd.restart()
        run = await self.finished(c, started["id"], timeout=30)
        self.assertEqual(run["outcome"], "interrupted", run)
        self.assertIn("no longer knows", run["reason"])

    @async_test(timeout=60)
    async def test_unreachable_engine_fails_the_run_and_keeps_it_active(self):
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        c = await self.owner(es)
        await self.add(c, "p")
        await sd.stop()
        self.standins.remove(sd)
        await self.tick(c)
        run = await self.next_run(c, "p", timeout=40)
        self.assertEqual(run["outcome"], "failed", run)
        self.assertIn("could not be reached", run["reason"])
        self.assertEqual((await self.status(c, "p"))["state"], "active")

    # ---------------------------------------------------------------- operations

    @async_test(timeout=60)
    async def test_healthz_and_metrics_show_the_engine(self):
        from test_ops import http_get, samples, value
        sd = await self.standin()
        es = self.rrdeploy(sd.url)
        base = "http://127.0.0.1:%d" % es.server.port
        loop = asyncio.get_running_loop()

        async def health():
            status, body, _ = await loop.run_in_executor(
                None, http_get, base + "/healthz")
            self.assertEqual(status, 200, body)
            return json.loads(body)["engine"]

        async def until_reachable(want):
            deadline = time.monotonic() + 30
            while True:
                eng = await health()
                if eng["reachable"] is want:
                    return eng
                self.assertLess(time.monotonic(), deadline, eng)
                await asyncio.sleep(0.05)

        eng = await until_reachable(True)
        self.assertEqual(eng["url"], sd.url)
        # the TypeScript SDK's framing signs in the same way
        c = await self.client(es.server, style="ts", key=ALICE_KEY)
        await self.watch(c)
        await self.add(c, "p", schedule="manual")
        started = await self.run_now(c, "p")
        self.assertEqual((await self.finished(c, started["id"]))["outcome"],
                         "succeeded")
        _, text, _ = await loop.run_in_executor(None, http_get, base + "/metrics")
        m = samples(text)
        self.assertEqual(value(m, "rrdeploy_runs_total", executor="rocketride",
                               outcome="succeeded"), 1)
        self.assertEqual(value(m, "rrdeploy_engine_requests_total",
                               command="execute"), 1)
        self.assertGreaterEqual(value(m, "rrdeploy_engine_requests_total",
                                      command="auth"), 1)
        self.assertGreaterEqual(value(m, "rrdeploy_engine_auth_total",
                                      result="accepted"), 1)
        self.assertEqual(value(m, "rrdeploy_engine_reachable"), 1)
        self.assertNotIn(ALICE_KEY, text)

        await sd.stop()
        self.standins.remove(sd)
        eng = await until_reachable(False)
        self.assertTrue(eng["why"], eng)
