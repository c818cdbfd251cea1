"""Uploads and downloads on examples/devloop-api (a copy, so files land in a
scratch folder): POST /api/files streams multipart bodies to disk, GET
/api/files/:id sends them back (ETag, ranges). Sizes 0, 1, 10 MB, exactly
the 50 MB limit, one byte over it; chunked bodies; binary data full of CRLF
and boundary-like bytes; several fields; a client that disconnects midway;
four concurrent 50 MB uploads with bounded memory. Every download is
compared by SHA-256."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import Server, curl

MB = 1024 * 1024
LIMIT = 50 * MB
WORK = tempfile.mkdtemp(prefix="devloop-uploads-")
APP = os.path.join(WORK, "app")
shutil.copytree(os.path.join(harness.SRC, "examples", "devloop-api"), APP,
                ignore=shutil.ignore_patterns("data", "logs"))
# a protected upload route (issue 18, item c): refused on its head alone
with open(os.path.join(APP, "routes", "zz_protected_upload.lua"), "w") as f:
    f.write('local api = require "devloop"\n'
            'api.post("/api/secure-files", { auth = "UPDATE_FEATURE", upload = { max_bytes = 50 * 1024 * 1024 } },\n'
            '  function(req) return 201, { n = #req.files } end)\n')


def blob(name, size, seed=1):
    """A file of size pseudo-random bytes (deterministic), its path and SHA-256."""
    path = os.path.join(WORK, name)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        block = hashlib.sha512(str(seed).encode()).digest() * 1024  # 64 KB
        left = size
        while left > 0:
            chunk = block[:min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            block = hashlib.sha512(block[:64]).digest() * 1024
    return path, h.hexdigest()


def upload(srv, path, ctype="application/octet-stream", extra=(), chunked=False, url="/api/files"):
    args = ["-F", "file=@%s;type=%s" % (path, ctype)] + list(extra)
    if chunked:
        args += ["-H", "Transfer-Encoding: chunked"]
    return curl(*args, "http://127.0.0.1:%d%s" % (srv.port, url))


def download(srv, fid, *extra):
    return curl(*extra, "http://127.0.0.1:%d/api/files/%s" % (srv.port, fid))


def left_behind():
    d = os.path.join(APP, "data", ".uploads")
    return os.listdir(d) if os.path.isdir(d) else []


def stored():
    d = os.path.join(APP, "data", "files")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def round_trip(srv, size, name, **kw):
    path, digest = blob(name, size, seed=size)
    st, _, body = upload(srv, path, **kw)
    assert st == 201, (st, body[:300])
    j = json.loads(body)
    assert j["success"] is True and j["file"]["size"] == size, j
    assert j["file"]["filename"] == name and j["file"]["contentType"] == "application/octet-stream"
    # asked for gzip: file bodies are never compressed (bytes as stored)
    st, h, data = download(srv, j["file"]["id"], "-H", "Accept-Encoding: gzip")
    assert st == 200 and int(h["content-length"]) == size, (st, h)
    assert hashlib.sha256(data).hexdigest() == digest
    assert "content-encoding" not in h
    return j["file"]["id"], h


def test_sizes(srv):
    for size in (0, 1, 10 * MB, LIMIT):
        round_trip(srv, size, "f%d.bin" % size)
    assert left_behind() == []


def test_over_the_limit(srv):
    before = stored()
    path, _ = blob("over.bin", LIMIT + 1)
    st, _, body = upload(srv, path)
    assert st == 413 and b"larger than" in body, (st, body[:200])
    # a declared length far over the limit: refused before the body is read
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
              b"boundary=XX\r\nContent-Length: %d\r\n\r\n" % (LIMIT * 2))
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    # chunked, crossing the limit midway
    st, _, body = upload(srv, path, chunked=True)
    assert st == 413, (st, body[:200])
    time.sleep(0.2)
    assert stored() == before and left_behind() == []


def test_chunked_and_fields(srv):
    path, digest = blob("chunked.bin", 3 * MB + 7)
    st, _, body = upload(srv, path, chunked=True, extra=["-F", "note=hello", "-F", "tag=a b"])
    assert st == 201, (st, body)
    fid = json.loads(body)["file"]["id"]
    assert hashlib.sha256(download(srv, fid)[2]).hexdigest() == digest


def test_binary_with_boundary_like_bytes(srv):
    boundary = "----devloopBoundary7MA4YWxkTrZu0gW"
    nasty = (b"\r\n--" + boundary[:10].encode() + b"\r\n\r\n--" + boundary.encode()[:-1] +
             b"X\r\n--\r\n\n\r\r\n" + bytes(range(256)) + b"--" + boundary.encode() + b"tail")
    data = nasty * 2000 + b"\r\n"
    body = (("--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/x\\\"y.bin\"\r\n"
             "Content-Type: application/x-test\r\n\r\n" % (boundary, boundary)).encode() +
            data + ("\r\n--%s--\r\n" % boundary).encode())
    r = srv.request("POST", "/api/files",
                    {"Content-Type": "multipart/form-data; boundary=" + boundary}, body)
    assert r.status == 201, r
    f = r.json()["file"]
    assert f["size"] == len(data) and f["contentType"] == "application/x-test", f
    assert "/" not in f["filename"] and '"' not in f["filename"] and f["filename"].endswith(".bin"), f
    st, h, got = download(srv, f["id"])
    assert got == data and h["content-type"] == "application/x-test"


def test_bad_requests(srv):
    r = srv.request("POST", "/api/files", {"Content-Type": "application/json"}, "{}")
    assert r.status == 400 and "multipart" in r.json()["message"], r
    r = srv.request("POST", "/api/files", {"Content-Type": "multipart/form-data; boundary=B"},
                    "--B\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--B--\r\n")
    assert r.status == 400 and "file" in r.json()["message"], r
    r = srv.request("POST", "/api/files", {"Content-Type": "multipart/form-data; boundary=B"},
                    "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nxyz")
    assert r.status == 400, r
    assert srv.get("/api/files/f-0123").status == 404
    assert srv.get("/api/files/nope").status == 404
    assert left_behind() == []


def test_upload_limits(srv):
    """The sink's own limits: 16 files a request, 256 KB of non-file fields,
    8 KB of headers per part; each 413 with nothing left behind."""
    def part(name, filename, data):
        fn = '; filename="%s"' % filename if filename else ""
        return ('--B\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n' % (name, fn)).encode() + \
            data + b"\r\n"
    ct = {"Content-Type": "multipart/form-data; boundary=B"}
    before = stored()
    body = b"".join(part("file", "f%d" % i, b"x") for i in range(17)) + b"--B--\r\n"
    r = srv.request("POST", "/api/files", ct, body)
    assert r.status == 413 and "too many files" in r.json()["message"], r
    body = part("note", None, b"y" * (257 * 1024)) + part("file", "a", b"x") + b"--B--\r\n"
    r = srv.request("POST", "/api/files", ct, body)
    assert r.status == 413 and "fields too large" in r.json()["message"], r
    body = ('--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\nX-Pad: %s\r\n\r\nx'
            '\r\n--B--\r\n' % ("p" * 9000)).encode()
    r = srv.request("POST", "/api/files", ct, body)
    assert r.status == 413 and "part headers" in r.json()["message"], r
    time.sleep(0.1)
    assert stored() == before and left_behind() == []


def test_upload_folder_removed_while_serving(srv):
    # made once at start; a folder removed by hand is made again on demand
    shutil.rmtree(os.path.join(APP, "data", ".uploads"), ignore_errors=True)
    round_trip(srv, 2000, "again.bin")
    assert os.path.isdir(os.path.join(APP, "data", ".uploads"))


def test_ranges_and_etag(srv):
    path, _ = blob("range.bin", 1000)
    fid, h = round_trip(srv, 1000, "range.bin")
    etag = h["etag"]
    with open(path, "rb") as f:
        want = f.read()
    st, h2, part = download(srv, fid, "-H", "Range: bytes=10-19")
    assert st == 206 and part == want[10:20] and h2["content-range"] == "bytes 10-19/1000", h2
    st, _, part = download(srv, fid, "-H", "Range: bytes=-5")
    assert st == 206 and part == want[-5:]
    st, h3, _ = download(srv, fid, "-H", "Range: bytes=5000-")
    assert st == 416 and h3["content-range"] == "bytes */1000", h3
    st, _, _ = download(srv, fid, "-H", "If-None-Match: " + etag)
    assert st == 304
    st, _, whole = download(srv, fid, "-H", "Range: bytes=0-1", "-H", 'If-Range: "other"')
    assert st == 200 and whole == want


def test_pipelined_file_responses(srv):
    fid, _ = round_trip(srv, 3 * MB + 1, "pipe.bin")
    path = os.path.join(WORK, "pipe.bin")
    with open(path, "rb") as f:
        want = f.read()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    req = ("GET /api/files/%s HTTP/1.1\r\nHost: x\r\n\r\n" % fid).encode()
    s.sendall(req + req + b"GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    bodies = []
    while len(bodies) < 3:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(1 << 20)
            assert chunk, "closed before every answer came: %r" % buf[:200]
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
                .split(b":")[1])
        while len(buf) < n:
            chunk = s.recv(1 << 20)
            assert chunk, "closed inside a body"
            buf += chunk
        bodies.append(buf[:n])
        buf = buf[n:]
    s.close()
    assert bodies[0] == want and bodies[1] == want and b"pong" in bodies[2]


def test_client_disconnect_leaves_nothing(srv):
    before = stored()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
              b"boundary=B\r\nContent-Length: 10000000\r\n\r\n--B\r\nContent-Disposition: "
              b"form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n" + b"x" * 3000000)
    time.sleep(0.3)
    assert len(left_behind()) == 1  # the partial file exists while the body arrives
    s.close()
    deadline = time.time() + 5
    while left_behind() and time.time() < deadline:
        time.sleep(0.05)
    assert left_behind() == [] and stored() == before


SECURE_HEAD = ("POST /api/secure-files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
               "boundary=B\r\nContent-Length: %d\r\n%s\r\n")
PART = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n")


def read_answer(s):
    """The status line and headers of the answer on a raw socket (lower-case names)."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        assert got, ("closed before an answer", data)
        data += got
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return int(head[0].split()[1]), {k.strip().lower(): v.strip() for k, v in
                                     (l.split(":", 1) for l in head[1:])}


def send_rest(s, total):
    """Sends the rest of a body until the server stops taking it; bytes sent."""
    sent = 0
    chunk = b"x" * 262144
    try:
        while sent < total:
            sent += s.send(chunk[:min(len(chunk), total - sent)])
    except OSError:
        pass
    return sent


def test_protected_upload_refused_before_its_body(srv):
    """401/403 at the end of the head, without Expect: the 20 MB body is not read
    into an upload file or memory, and the connection closes after the answer."""
    size = 20 * MB
    rss0 = harness.rss_kib(srv.pid())
    for auth, status in (("", 401), ("Authorization: Bearer wrong\r\n", 401),
                         ("Authorization: Bearer demo-viewer-token\r\n", 403)):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall((SECURE_HEAD % (size, auth)).encode() + PART + b"x" * 65536)
        # the answer comes with 20 MB still unsent: it cannot have waited for the body
        st, h = read_answer(s)
        assert st == status, (st, h)
        if status == 401:
            assert h.get("www-authenticate", "").startswith("Bearer"), h
        assert h.get("connection") == "close", h
        assert left_behind() == [], "an upload file was opened for a refused request"
        send_rest(s, size)
        s.close()
    time.sleep(0.2)
    assert left_behind() == []
    # nothing of the bodies stayed in memory (20 MB each)
    if not os.environ.get("DEVLOOP_SANITIZED"):
        assert harness.rss_kib(srv.pid()) - rss0 < 16 * 1024, (rss0, harness.rss_kib(srv.pid()))
    # with the token, the same route takes the upload
    path, _ = blob("small.bin", 1000, seed=7)
    st, _, body = curl("-H", "Authorization: Bearer demo-editor-token", "-F",
                       "file=@%s" % path, "http://127.0.0.1:%d/api/secure-files" % srv.port)
    assert st == 201 and json.loads(body) == {"n": 1}, (st, body)


def test_protected_upload_expect_continue(srv):
    """With Expect: 100-continue: the final 401 instead of 100 Continue."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall((SECURE_HEAD % (20 * MB, "Expect: 100-continue\r\n")).encode())
    st, h = read_answer(s)
    assert st == 401 and h.get("connection") == "close", (st, h)
    s.close()
    # and over the route's limit: 413 on the head, before the auth is looked at or not
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall((SECURE_HEAD % (60 * MB, "Expect: 100-continue\r\nAuthorization: Bearer "
                              "demo-editor-token\r\n")).encode())
    st, h = read_answer(s)
    assert st == 413, (st, h)
    s.close()
    assert left_behind() == []


H2_CLIENT = r"""
const http2 = require('http2');
const [port, size, auth] = [process.argv[1], +process.argv[2], process.argv[3]];
const c = http2.connect('http://127.0.0.1:' + port);
c.on('error', () => {});
const h = {':method': 'POST', ':path': '/api/secure-files', 'content-length': size,
           'content-type': 'multipart/form-data; boundary=B'};
if (auth) h.authorization = auth;
const req = c.request(h);
req.on('error', () => {});
req.write(Buffer.alloc(65536, 120));  // 64 KiB of 20 MB: the rest is never sent
req.on('response', (hd) => {
  console.log(JSON.stringify({status: hd[':status'], www: hd['www-authenticate'] || null}));
  req.close(); c.close(); process.exit(0);
});
setTimeout(() => { console.log(JSON.stringify({status: 'timeout'})); process.exit(0); }, 10000);
"""


def test_protected_upload_refused_on_h2(srv):
    for auth, status in (("", 401), ("Bearer demo-viewer-token", 403)):
        p = subprocess.run(["node", "-e", H2_CLIENT, str(srv.port), str(20 * MB), auth],
                           capture_output=True, text=True, timeout=30)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["status"] == status, (out, p.stderr)
        if status == 401:
            assert out["www"].startswith("Bearer"), out
        assert left_behind() == []


def test_stale_temporary_files_swept_at_start(_):
    d = os.path.join(APP, "data", ".uploads")
    os.makedirs(d, exist_ok=True)
    stale, fresh = os.path.join(d, "w0-dead-0.part"), os.path.join(d, "w0-live-0.part")
    for p in (stale, fresh):
        with open(p, "wb") as f:
            f.write(b"x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    s = Server(APP, env={"DEVLOOP_DB": os.path.join(WORK, "api2.db"), "DEVLOOP_PID_FILE": ""},
               args=["--pid-file", os.path.join(WORK, "pid2")])
    try:
        assert not os.path.exists(stale) and os.path.exists(fresh)
    finally:
        s.stop()
        os.unlink(fresh)


def test_gridfs_unreachable_fails_cleanly(_):
    """With MONGO_URI files go to GridFS; no server can run here, so an
    unreachable one: a clear 500 within the timeout, no file left behind."""
    app = os.path.join(WORK, "app-mongo")
    shutil.copytree(os.path.join(harness.APPS, "uploads"), app)
    s = Server(app, env={"MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"})
    try:
        path, _ = blob("g.bin", 100000)
        t0 = time.time()
        st, _, body = upload(s, path, url="/files")
        assert st == 500 and json.loads(body)["requestId"], (st, body)
        assert time.time() - t0 < 5
        assert os.listdir(os.path.join(app, "data", ".uploads")) == []
        r = s.get("/files/0123456789abcdef01234567")
        assert r.status == 500, r
        assert s.get("/files/not-an-id").status == 404
        assert os.listdir(os.path.join(app, "data", ".uploads")) == []
    finally:
        s.stop()


def rss_kb(pid, key="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])


def test_concurrent_50mb_uploads_bounded_memory(srv):
    files = [blob("c%d.bin" % i, LIMIT, seed=100 + i) for i in range(4)]
    base = rss_kb(srv.pid())
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(srv.pid()))
            time.sleep(0.01)

    t = threading.Thread(target=sample)
    t.start()
    procs = [subprocess.Popen(["curl", "-sS", "--max-time", "60", "-F", "file=@%s" % p,
                               "http://127.0.0.1:%d/api/files" % srv.port],
                              stdout=subprocess.PIPE) for p, _ in files]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    stop.set()
    t.join()
    growth_mb = (peak[0] - base) / 1024.0
    print("# 4 concurrent 50 MB uploads: RSS %d -> peak %d KB (+%.1f MB)" % (base, peak[0], growth_mb))
    # ASan's quarantine keeps freed memory resident (scripts/test.sh)
    if not os.environ.get("DEVLOOP_SANITIZED"):
        assert growth_mb < 32, growth_mb
    for (path, digest), o in zip(files, outs):
        assert o["success"] and o["file"]["size"] == LIMIT, o
        assert hashlib.sha256(download(srv, o["file"]["id"])[2]).hexdigest() == digest


if __name__ == "__main__":
    try:
        harness.main(globals(), app=APP,
                     env={"DEVLOOP_DB": os.path.join(WORK, "api.db"),
                          "DEVLOOP_TOKENS_FILE": os.path.join(APP, "tokens.json")})
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
