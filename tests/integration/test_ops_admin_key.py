"""The first start's admin key with --admin-key-file (docs/operations.md §3):
written to a new file of mode 0600 and shown nowhere else, a working key;
an existing file is never overwritten, and the server then does not start
and creates no key."""

import os
import re
import stat
import subprocess
import unittest

from harness import Server, ServerTest, async_test, sanitizer_env, \
    sanitizer_report


class AdminKeyFileTest(ServerTest):
    SHARED_SERVER = False

    def key_file_server(self, *where):
        """A server (not started) told to write the key to its directory's
        *where; (server, path)."""
        srv = Server()
        self.servers.append(srv)
        path = os.path.join(srv.dir, *where)
        srv.extra_args = ["--admin-key-file", path]
        return srv, path

    def start_fails(self, srv):
        """Run `serve` as srv would, expecting it to stop at once; its
        stderr."""
        r = subprocess.run([srv.bin, "serve", "--listen", "127.0.0.1:0",
                            "--db", srv.db] + srv.extra_args,
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, env=sanitizer_env(), cwd=srv.dir,
                           timeout=30)
        self.assertIsNone(sanitizer_report(r.stderr), r.stderr)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn("rrk_", r.stderr)
        return r.stderr

    @async_test(timeout=60)
    async def test_key_written_to_a_new_private_file(self):
        srv, path = self.key_file_server("admin.key")
        srv.start()
        self.assertIsNone(srv.admin_key)        # not printed to stderr
        st = os.lstat(path)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_uid, os.geteuid())
        with open(path) as f:
            text = f.read()
        self.assertRegex(text, r"\Arrk_[0-9a-f]{64}\n\Z")
        key = text.strip()
        err = srv.stderr()
        self.assertNotIn(key, err)
        self.assertNotIn(key[4:20], err)
        m = re.search(r"rrdeploy: first start: created user 'admin' with key "
                      r"(k_[0-9a-f]{16}) \(task\.control,task\.monitor\)\. "
                      r"The key is in (\S+) \(mode 0600\) and shown nowhere "
                      r"else: read it once, then delete the file\.\n", err)
        self.assertIsNotNone(m, err)
        self.assertEqual(m.group(2), path)
        # it is a working key, of user admin, with both permissions
        c = await self.client(srv, key=key)
        self.assertEqual(self.assertOk(await c.call("rrext_deploy_list")),
                         {"deployments": []})
        keys = srv.list_keys()
        self.assertEqual([(k["id"], k["user"], k["perms"]) for k in keys],
                         [(m.group(1), "admin", "task.control,task.monitor")])
        # later starts (the unit passes the option every time) leave the
        # file alone, whether it is still there or deleted
        before = os.stat(path)
        await c.close()
        srv.restart()
        self.assertNotIn("first start", srv.stderr())
        after = os.stat(path)
        self.assertEqual((before.st_ino, before.st_mtime_ns),
                         (after.st_ino, after.st_mtime_ns))
        os.unlink(path)
        srv.restart()
        self.assertFalse(os.path.exists(path))
        self.assertEqual(len(srv.list_keys()), 1)

    def test_existing_file_is_never_overwritten(self):
        srv, path = self.key_file_server("admin.key")
        with open(path, "w") as f:
            f.write("keep me\n")
        os.chmod(path, 0o644)
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        before = os.stat(path)
        err = self.start_fails(srv)
        self.assertEqual(
            err.splitlines()[-1],
            "rrdeploy: --admin-key-file: %s already exists and is never "
            "overwritten: save the key it holds and delete it, or name "
            "another file" % path)
        self.assertNotIn("first start", err)
        after = os.stat(path)
        self.assertEqual((before.st_ino, before.st_mode, before.st_mtime_ns,
                          before.st_size),
                         (after.st_ino, after.st_mode, after.st_mtime_ns,
                          after.st_size))
        with open(path) as f:
            self.assertEqual(f.read(), "keep me\n")
        # no key was made: once the file is moved away, the next start
        # creates the admin key
        self.assertEqual(srv.list_keys(), [])
        os.rename(path, path + ".old")
        srv.start()
        with open(path) as f:
            self.assertRegex(f.read(), r"\Arrk_[0-9a-f]{64}\n\Z")
        self.assertEqual(len(srv.list_keys()), 1)

    def test_a_symlink_is_not_followed(self):
        srv, path = self.key_file_server("admin.key")
        target = os.path.join(srv.dir, "elsewhere")
        os.symlink(target, path)
        self.assertIn("already exists", self.start_fails(srv))
        self.assertFalse(os.path.exists(target))
        self.assertEqual(srv.list_keys(), [])

    def test_unwritable_place_creates_no_key(self):
        srv, path = self.key_file_server("no", "such", "dir", "admin.key")
        err = self.start_fails(srv)
        self.assertIn("rrdeploy: --admin-key-file: cannot create %s: "
                      "No such file or directory" % path, err)
        self.assertEqual(srv.list_keys(), [])


class UnitFileTest(unittest.TestCase):
    def test_unit_writes_the_key_to_its_private_state_directory(self):
        root = os.path.join(os.path.dirname(__file__), "..", "..")
        with open(os.path.join(root, "packaging", "rrdeploy.service.in")) as f:
            unit = f.read()
        execs = [l for l in unit.splitlines() if l.startswith("ExecStart=")]
        self.assertEqual(len(execs), 1)
        self.assertIn(" --admin-key-file ${STATE_DIRECTORY}/admin.key ",
                      execs[0])
        for line in ("StateDirectory=rrdeploy", "StateDirectoryMode=0700",
                     "UMask=0077", "DynamicUser=yes"):
            self.assertIn(line, unit.splitlines())
        self.assertNotIn("journalctl", unit)


if __name__ == "__main__":
    unittest.main()
