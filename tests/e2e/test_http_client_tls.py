"""api.http over TLS (issue 20) against upstreams with certificates made by
openssl here: a CA and a server certificate it signed, a self-signed one, one
for another name. Verification is on by default; tls.ca, tls.server_name and
tls.verify = false (logged once); connections are pooled per TLS setting."""
import shutil
import socket
import tempfile
import threading
import time

import harness
import httpc
from httpc import call, err_kind
from upstream import BlackholeAccept, Upstream, make_pki

D = tempfile.mkdtemp(prefix="devloop-pki-")
PKI = make_pki(D)
CA = PKI["ca"][0]
GOOD = Upstream(tls=PKI["server"])
SELF = Upstream(tls=PKI["self"])
WRONG = Upstream(tls=PKI["wrong"])


def test_verified_with_ca(srv):
    for host in ("127.0.0.1", "localhost"):
        out = call(srv, "https://%s:%d/echo" % (host, GOOD.port), tls={"ca": CA})
        assert out.get("status") == 200 and out["json"]["method"] == "GET", (host, out)


def test_unknown_ca_fails(srv):
    # verification is on by default, against the system store: our CA is not there
    before = GOOD.requests
    out = call(srv, GOOD.url("/echo"))
    err_kind(out, "tls")
    out = call(srv, GOOD.url("/echo"), tls={"verify": True})
    err_kind(out, "tls")
    assert GOOD.requests == before  # nothing was sent


def test_self_signed_fails(srv):
    err_kind(call(srv, SELF.url("/echo")), "tls")
    err_kind(call(srv, SELF.url("/echo"), tls={"ca": CA}), "tls")


def test_wrong_name_fails(srv):
    out = call(srv, WRONG.url("/echo"), tls={"ca": CA})
    err_kind(out, "tls")
    # the name it does hold, checked while connecting to 127.0.0.1
    out = call(srv, WRONG.url("/echo"), tls={"ca": CA, "server_name": "wrong.example"})
    assert out.get("status") == 200, out
    # and the other way round: a right certificate checked against another name
    out = call(srv, GOOD.url("/echo"), tls={"ca": CA, "server_name": "other.example"})
    err_kind(out, "tls")


def test_verify_off(srv):
    out = call(srv, SELF.url("/echo"), tls={"verify": False})
    assert out.get("status") == 200, out
    out = call(srv, WRONG.url("/echo"), tls={"verify": False})
    assert out.get("status") == 200, out
    log = srv.output()
    assert log.count("tls.verify = false") == 1, log[-2000:]


def test_pool_keeps_tls_settings_apart(srv):
    # a connection made without verification must never serve a request
    # that asks for it
    out = call(srv, SELF.url("/echo"), tls={"verify": False})
    assert out.get("status") == 200, out
    err_kind(call(srv, SELF.url("/echo")), "tls")
    err_kind(call(srv, SELF.url("/echo"), tls={"ca": CA}), "tls")
    # nor one verified for a name serve another name
    out = call(srv, WRONG.url("/echo"), tls={"ca": CA, "server_name": "wrong.example"})
    assert out.get("status") == 200, out
    err_kind(call(srv, WRONG.url("/echo"), tls={"ca": CA}), "tls")


def test_tls_reuse(srv):
    up = Upstream(tls=PKI["server"])
    try:
        for i in range(30):
            out = call(srv, up.url("/echo"), tls={"ca": CA})
            assert out.get("status") == 200, (i, out)
        assert up.accepted <= 2, up.accepted
        out = call(srv, up.url("/huge?n=2000000"), tls={"ca": CA})
        assert out.get("status") == 200 and len(out["body"]) == 2000000
        out = call(srv, up.url("/huge?n=2000000"), tls={"ca": CA}, stream=True)
        assert out.get("status") == 200 and len(out["body"]) == 2000000, out.get("read_err")
        out = call(srv, up.url("/gzip"), tls={"ca": CA})
        assert out["json"]["compressed"] == "gzip", out
    finally:
        up.stop()


def test_bad_ca_file(srv):
    out = call(srv, GOOD.url("/echo"), tls={"ca": "/nonexistent/ca.pem"})
    assert out.get("err", "").startswith(("tls:", "invalid:")), out
    out = call(srv, GOOD.url("/echo"), tls={"ca": "/etc/hostname"})
    assert out.get("err", "").startswith(("tls:", "invalid:")), out


def test_scheme_mismatch(srv):
    # TLS to a plain server that answers the ClientHello in plain text
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def greet():
        c, _ = ls.accept()
        c.recv(4096)
        c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        time.sleep(1)
        c.close()
    threading.Thread(target=greet, daemon=True).start()
    t0 = time.time()
    out = call(srv, "https://127.0.0.1:%d/echo" % ls.getsockname()[1], timeout=3000)
    err_kind(out, "tls")
    assert time.time() - t0 < 2.5
    ls.close()
    # plain to a TLS server: not an HTTP answer
    out = call(srv, "http://127.0.0.1:%d/echo" % GOOD.port, timeout=3000)
    assert out.get("err", "").startswith(("protocol:", "timeout:")), out


def test_handshake_timeout(srv):
    bh = BlackholeAccept()
    t0 = time.time()
    out = call(srv, "https://127.0.0.1:%d/" % bh.port, connect_timeout=300, timeout=5000)
    err_kind(out, "timeout")
    assert time.time() - t0 < 3


ALLOWED_ERRORS = ["api.http"]

if __name__ == "__main__":
    try:
        harness.main(globals(), app=httpc.new_app())
    finally:
        shutil.rmtree(D, ignore_errors=True)
