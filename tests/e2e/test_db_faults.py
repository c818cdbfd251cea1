"""api.db on SQLite when the database cannot be written, on a running server
(tests/e2e/apps/dbfaults): the disk is full, the database is read-only, or
another process holds the write lock past DEVLOOP_DB_BUSY_TIMEOUT_MS. In
each case a route that writes answers a 503 JSON whose code and message say
what happened, within the busy timeout at most (never a hang or a crash),
reads keep working, GET /health shows the db DEGRADED with the error and
since when (also before any write: the store probes), and once the cause is
gone the next write succeeds and /health is UP again, with no restart.

- Disk full: the database lives on a 2 MiB tmpfs that a filler file fills.
  Where tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN), write(2) fails
  with ENOSPC through the LD_PRELOAD shim below instead, and the test says so.
- Read-only: the kernel refuses to remount a filesystem read-only while a
  process holds files on it open for writing (EBUSY), and chmod or chattr +i
  do not affect descriptors already open, so a running SQLite meets a
  read-only database as EROFS from write(2) (a filesystem the kernel forced
  read-only). The test tries the remount; when it is refused, as it is, the
  shim makes pwrite64() fail with EROFS for the database's folder.
- Locked: Python's sqlite3 holds BEGIN EXCLUSIVE on the same file.

The shim (compiled here with cc) fails pwrite64() on files under
DL_FAULT_DIR with the errno written in the file DL_FAULT_FLAG, while that
file exists: SQLite's own error paths run, as with a real fault.
"""
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

import harness
from harness import Server

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* The errno to fail a write to fd with, or 0. */
static int injected(int fd)
{
    const char *flag = getenv("DL_FAULT_FLAG"), *dir = getenv("DL_FAULT_DIR");
    if (flag == NULL || dir == NULL)
        return 0;
    int f = open(flag, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 0;
    char b[16] = {0}, p[64], t[4096];
    ssize_t n = read(f, b, sizeof(b) - 1);
    close(f);
    snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
    ssize_t k = readlink(p, t, sizeof(t) - 1);
    if (n <= 0 || k <= 0)
        return 0;
    t[k] = 0;
    return strncmp(t, dir, strlen(dir)) == 0 ? atoi(b) : 0;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    int e = injected(fd);
    if (e != 0) {
        errno = e;
        return -1;
    }
    if (real == NULL)
        real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    return real(fd, buf, n, off);
}
"""

JSON = {"Content-Type": "application/json"}
BUSY_MS = 300


class Skip(Exception):
    pass


# ---- helpers ---------------------------------------------------------------------------------

def post_note(srv, text):
    t0 = time.time()
    r = srv.request("POST", "/notes", JSON, '{"text": "%s"}' % text)
    return r, time.time() - t0


def write_ok(srv, text):
    r, _ = post_note(srv, text)
    assert r.status == 201, r
    return r.json()["_id"]


def write_fails(srv, text, code, words, within=2.0):
    """A write answers 503 JSON {error, code} naming the fault, in time."""
    r, took = post_note(srv, text)
    assert r.status == 503, r
    assert r.header("content-type", "").startswith("application/json"), r
    j = r.json()
    assert j["code"] == code and words in j["error"], j
    assert took < within, "the failed write took %.2fs" % took
    return j, took


def count(srv):
    r = srv.get("/notes/count")
    assert r.status == 200, r
    return r.json()["count"]


def health(srv):
    t0 = time.time()
    r = srv.get("/health")
    took = time.time() - t0
    assert took < 1.5, "/health took %.2fs" % took
    assert r.status in (200, 503), r
    j = r.json()
    assert (r.status == 503) == (j["status"] == "DOWN"), r
    return j


def wait_db(srv, want, timeout=6.0):
    """Polls /health until the db service is `want`; returns the answer."""
    deadline = time.time() + timeout
    while True:
        h = health(srv)
        if h["services"]["db"]["status"] == want:
            return h
        if time.time() > deadline:
            raise AssertionError("db never %s: %r" % (want, h))
        time.sleep(0.2)


def degraded(srv, code, words):
    h = wait_db(srv, "DEGRADED")
    db = h["services"]["db"]
    assert h["status"] == "DEGRADED", h
    assert db["code"] == code and words in db["error"], db
    assert db["since"].endswith("Z") and db["since"][:2] == "20", db
    return db


def up(srv):
    h = wait_db(srv, "UP")
    assert h["status"] == "UP", h
    assert "error" not in h["services"]["db"], h


def files(folder):
    return {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}


def integrity(path):
    c = sqlite3.connect(path)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def mount_tmpfs(folder, size="2m"):
    """Mounts a tmpfs on folder; None, or why it cannot."""
    if not shutil.which("mount"):
        return "no mount command"
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", folder],
                       capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip() or "mount exit %d" % p.returncode)


def umount(folder):
    for args in (["umount", folder], ["umount", "-l", folder]):
        if subprocess.run(args, capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    print("# could not unmount %s" % folder)


def build_shim(folder):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise Skip("no C compiler to build the LD_PRELOAD fault shim")
    src, so = os.path.join(folder, "shim.c"), os.path.join(folder, "shim.so")
    with open(src, "w") as f:
        f.write(SHIM_C)
    p = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so, src, "-ldl"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise Skip("cannot build the LD_PRELOAD fault shim: " + p.stderr.strip()[:200])
    return so


def shim_env(so, flag, dbdir):
    e = {"LD_PRELOAD": so, "DL_FAULT_FLAG": flag, "DL_FAULT_DIR": dbdir + "/"}
    # sanitizer builds: ASan wants to be first in the library list
    e["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return e


def stop(srv):
    """Stops srv expecting exit 0 and no error logged."""
    srv.stop()
    bad = [l for l in srv.output().splitlines() if " error " in l]
    assert not bad, "errors in the server log:\n" + "\n".join(bad[:10])


# ---- tests -----------------------------------------------------------------------------------

def test_disk_full():
    base = tempfile.mkdtemp(prefix="devloop-dbfull-")
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    why = mount_tmpfs(mnt)
    mounted = why is None
    flag = os.path.join(base, "flag")
    env = {}
    if not mounted:
        print("# tmpfs cannot be mounted here (%s): ENOSPC comes from the LD_PRELOAD shim" % why)
        env = shim_env(build_shim(base), flag, os.path.join(mnt, "db"))
    dbdir = os.path.join(mnt, "db")
    env.update({"DEVLOOP_DB": os.path.join(dbdir, "notes.db")})
    srv = None
    filler = os.path.join(mnt, "filler")
    try:
        srv = Server("dbfaults", env=env)
        ids = [write_ok(srv, "n%d" % i) for i in range(5)]
        up(srv)
        before = files(dbdir)
        if mounted:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 65536)
            except OSError as e:
                assert e.errno == 28, e
            try:
                while True:  # the last partial block
                    os.write(fd, b"\0" * 512)
            except OSError:
                pass
            os.close(fd)
            print("# tmpfs of 2 MiB full: filler %d bytes; database files %r"
                  % (os.path.getsize(filler), before))
        else:
            with open(flag, "w") as f:
                f.write("28")

        # no write yet: the health probe finds it
        db = degraded(srv, "ENOSPC", "database or disk is full")
        for i in range(10):
            write_fails(srv, "full%d" % i, "ENOSPC", "database or disk is full")
        r = srv.request("POST", "/notes/%s/edit" % ids[0], JSON, '{"text": "changed"}')
        assert r.status == 503 and r.json()["code"] == "ENOSPC", r
        # reads work
        assert count(srv) == 5
        r = srv.get("/notes/" + ids[0])
        assert r.status == 200 and r.json()["text"] == "n0", r
        db2 = degraded(srv, "ENOSPC", "database or disk is full")
        assert db2["since"] == db["since"], (db, db2)
        during = files(dbdir)
        print("# after 11 failed writes: %r" % during)
        # the WAL cannot grow past the space that was left: at most into its last page
        wal = os.path.basename(env["DEVLOOP_DB"]) + "-wal"
        assert during.get(wal, 0) <= ((before.get(wal, 0) + 4095) // 4096) * 4096, (before, during)

        # space again: the next write succeeds, /health is UP, nothing restarted
        if mounted:
            os.unlink(filler)
        else:
            os.unlink(flag)
        pid = srv.pid()
        nid = write_ok(srv, "after")
        up(srv)
        assert count(srv) == 6 and srv.pid() == pid and srv.proc.poll() is None
        r = srv.request("POST", "/notes/%s/edit" % nid, JSON, '{"text": "edited"}')
        assert r.status == 200 and r.json()["modified"] == 1, r
        assert integrity(env["DEVLOOP_DB"]) == "ok"
        print("# recovered: %r" % files(dbdir))
        stop(srv)
        srv = None
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        if mounted:
            umount(mnt)
        shutil.rmtree(base, ignore_errors=True)


def test_read_only():
    base = tempfile.mkdtemp(prefix="devloop-dbro-")
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    why = mount_tmpfs(mnt, "8m")
    mounted = why is None
    if not mounted:
        print("# tmpfs cannot be mounted here (%s): no remount attempt" % why)
    flag = os.path.join(base, "flag")
    dbdir = os.path.join(mnt, "db")
    env = shim_env(build_shim(base), flag, dbdir)
    env["DEVLOOP_DB"] = os.path.join(dbdir, "notes.db")
    srv = None
    remounted = False
    try:
        srv = Server("dbfaults", env=env)
        ids = [write_ok(srv, "n%d" % i) for i in range(3)]
        up(srv)
        if mounted:
            p = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
            remounted = p.returncode == 0
            if not remounted:
                print("# mount -o remount,ro refused while devloop holds the files open: %s"
                      % p.stderr.strip().splitlines()[0])
        if not remounted:
            print("# read-only through the shim: pwrite64() fails with EROFS")
            with open(flag, "w") as f:
                f.write("30")

        db = degraded(srv, "EROFS", "database is read-only")
        for i in range(5):
            write_fails(srv, "ro%d" % i, "EROFS", "database is read-only")
        r = srv.request("POST", "/notes/%s/edit" % ids[1], JSON, '{"text": "changed"}')
        assert r.status == 503 and r.json()["code"] == "EROFS", r
        assert count(srv) == 3
        r = srv.get("/notes/" + ids[1])
        assert r.status == 200 and r.json()["text"] == "n1", r
        assert degraded(srv, "EROFS", "read-only")["since"] == db["since"]

        # writable again
        if remounted:
            subprocess.run(["mount", "-o", "remount,rw", mnt], check=True)
        else:
            os.unlink(flag)
        pid = srv.pid()
        write_ok(srv, "after")
        up(srv)
        assert count(srv) == 4 and srv.pid() == pid
        assert integrity(env["DEVLOOP_DB"]) == "ok"
        stop(srv)
        srv = None
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        if mounted:
            if remounted:
                subprocess.run(["mount", "-o", "remount,rw", mnt], capture_output=True)
            umount(mnt)
        shutil.rmtree(base, ignore_errors=True)


def test_locked():
    base = tempfile.mkdtemp(prefix="devloop-dblock-")
    path = os.path.join(base, "notes.db")
    srv = None
    other = None
    try:
        srv = Server("dbfaults", env={"DEVLOOP_DB": path,
                                      "DEVLOOP_DB_BUSY_TIMEOUT_MS": str(BUSY_MS)})
        ids = [write_ok(srv, "n%d" % i) for i in range(3)]
        up(srv)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        other.execute("BEGIN EXCLUSIVE")  # WAL: the write lock; readers go on

        words = "database locked by another process for more than %d ms" % BUSY_MS
        for i in range(3):
            j, took = write_fails(srv, "locked%d" % i, "EBUSY", words, within=BUSY_MS / 1000 + 1.0)
            assert took >= BUSY_MS / 1000 * 0.9, "failed after %.3fs only" % took
        print("# a write fails after %.0f ms: %s" % (took * 1000, j["error"]))
        t0 = time.time()
        assert count(srv) == 3
        r = srv.get("/notes/" + ids[2])
        assert r.status == 200 and r.json()["text"] == "n2", r
        assert time.time() - t0 < BUSY_MS / 1000, "reads waited for the lock"
        degraded(srv, "EBUSY", words)

        other.execute("COMMIT")  # released: writes work again
        write_ok(srv, "after")
        up(srv)
        assert count(srv) == 4

        # without traffic: the probe sees the lock held past the busy timeout, then free
        other.execute("BEGIN EXCLUSIVE")
        t0 = time.time()
        degraded(srv, "EBUSY", "locked by another process")
        print("# /health without writes: DEGRADED %.1fs after the lock was taken"
              % (time.time() - t0))
        other.execute("COMMIT")
        up(srv)
        other.close()
        other = None
        stop(srv)
        srv = None
    finally:
        if other is not None:
            other.close()
        if srv is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_bad_busy_timeout():
    base = tempfile.mkdtemp(prefix="devloop-dbbusy-")
    try:
        for bad in ("soon", "-5", "600001"):
            env = dict(os.environ, DEVLOOP_DB=os.path.join(base, "x.db"),
                       DEVLOOP_LOG_DIR=os.path.join(base, "logs"), DEVLOOP_DB_BUSY_TIMEOUT_MS=bad)
            p = subprocess.run([harness.BIN, "serve", os.path.join(harness.APPS, "dbfaults"),
                                "--listen", "127.0.0.1:%d" % harness.free_port()],
                               capture_output=True, text=True, timeout=20, env=env)
            out = p.stdout + p.stderr
            assert p.returncode != 0, out
            assert "DEVLOOP_DB_BUSY_TIMEOUT_MS=" + bad in out, out
        print("# %s" % out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- runner (harness.main plus skips) ---------------------------------------------------------

def main():
    names = sorted(k for k, v in globals().items() if k.startswith("test_") and callable(v))
    only = sys.argv[1:]
    if only:
        names = [n for n in names if n in only or n[5:] in only]
    print("1..%d" % len(names))
    passed = failed = skipped = 0
    for i, name in enumerate(names, 1):
        t0 = time.time()
        try:
            globals()[name]()
            print("ok %d - %s (%.2fs)" % (i, name, time.time() - t0))
            passed += 1
        except Skip as e:
            print("ok %d - %s # SKIP %s" % (i, name, e))
            skipped += 1
        except Exception:
            failed += 1
            print("not ok %d - %s" % (i, name))
            for line in traceback.format_exc().splitlines():
                print("# " + line)
        sys.stdout.flush()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else (77 if skipped == len(names) else 0))


if __name__ == "__main__":
    main()
