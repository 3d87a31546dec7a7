"""Smoke test of ./scripts/run, the README's first command: it installs what is
missing, builds a release binary and starts a server that a WebSocket client can
use right away with the admin key it prints.

The script builds into its own directory (BUILD_DIR), so this test does a full
release build; extra arguments are passed through to `rrdeploy serve` to use a
temporary database and a kernel-picked port."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import websockets

def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class RunScriptTest(unittest.TestCase):
    def test_run_starts_a_usable_server(self):
        with tempfile.TemporaryDirectory() as tmp:
            port_file = os.path.join(tmp, "port")
            env = dict(os.environ, BUILD_DIR=os.environ.get(
                "RR_RUN_BUILD_DIR", os.path.join(tmp, "build")))
            err_path = os.path.join(tmp, "stderr")
            with open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    [os.path.join(ROOT, "scripts", "run"), "--listen",
                     "127.0.0.1:0", "--port-file", port_file, "--db",
                     os.path.join(tmp, "rr.db")],
                    cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=err)
            try:
                deadline = time.monotonic() + 600
                while not os.path.exists(port_file):
                    self.assertIsNone(proc.poll(), read(err_path))
                    self.assertLess(time.monotonic(), deadline, "server never listened")
                    time.sleep(0.1)
                port = int(read(port_file))
                text = read(err_path)
                self.assertIn("ws://127.0.0.1:5565/task/service", text)
                lines = text.splitlines()
                idx = [i for i, l in enumerate(lines) if "shown only this once" in l]
                self.assertTrue(idx, text)
                key = lines[idx[0] + 1].strip()
                self.assertRegex(key, r"^rrk_[0-9a-f]{64}$")
                asyncio.run(self.use(port, key))
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=30), 0)

    async def use(self, port, key):
        async with websockets.connect(f"ws://127.0.0.1:{port}/task/service") as ws:
            await ws.send(json.dumps({"type": "request", "seq": 1, "command": "auth",
                                      "arguments": {"auth": key}}))
            auth = json.loads(await asyncio.wait_for(ws.recv(), 10))
            self.assertTrue(auth["success"], auth)
            self.assertEqual(auth["body"]["userId"], "admin")
            await ws.send(json.dumps({"type": "request", "seq": 2,
                                      "command": "rrext_deploy_list", "arguments": {}}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            self.assertEqual(reply["request_seq"], 2)
            self.assertEqual(reply["body"], {"deployments": []})


if __name__ == "__main__":
    unittest.main(verbosity=2)
