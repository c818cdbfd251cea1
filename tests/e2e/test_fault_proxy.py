"""fault_proxy.FaultProxy against a real redis-server, with raw sockets
speaking RESP: every mode (pass, refuse, blackhole, delay, drop_after,
reset_mid_reply, flap) switched while connections are open, the RESP
scanners on streams split at every byte, many concurrent connections, and
no descriptor or thread left behind across 100 mode switches and stop()."""
import os
import select
import shutil
import socket
import sys
import threading
import time

import harness

if not shutil.which("redis-server") or not shutil.which("redis-cli"):
    print("# skipped: redis-server or redis-cli not installed")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(77)

from fault_proxy import CommandScanner, FaultProxy, ReplyScanner  # noqa: E402
from harness import RedisServer  # noqa: E402

REDIS = RedisServer()


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Client:
    """A raw RESP client; replies: str (+), RuntimeError (-), int, bytes, list."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[:n + 2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise AssertionError("bad reply line %r" % line)

    def call(self, *args):
        self.send(resp(*args))
        return self.reply()

    def close(self):
        self.sock.close()


def expect_reset(c, timeout=3.0):
    """Reads until the connection fails; asserts it was reset (RST, not FIN)
    and returns the bytes received before."""
    c.sock.settimeout(timeout)
    got = bytearray(c.buf)
    try:
        while True:
            d = c.sock.recv(65536)
            if not d:
                raise AssertionError("closed with FIN, not reset (got %d bytes)" % len(got))
            got += d
    except ConnectionResetError:
        pass
    c.close()
    return bytes(got)


def connect_state(port):
    """True if a connection is accepted, False if refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


def direct():
    return Client(REDIS.port)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def test_scanners_split_at_every_byte(srv):
    cmds = (resp("PING") + resp("SET", "k", b"a\r\nb" * 3) + b"PING\r\n\r\n"
            + resp("incr", "n") + b"*0\r\n" + resp("GET", b"x" * 200))
    want_cmds = [(14, "PING"), (53, "SET"), (59, "PING"), (82, "INCR"), (307, "GET")]
    replies = (b"+PONG\r\n-ERR x\r\n:12\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n"
               b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$4\r\n\r\n\r\n\r\n"
               b">2\r\n+message\r\n+x\r\n"  # a RESP3 push: not a reply
               b"%1\r\n+k\r\n~2\r\n_\r\n,1.5\r\n#t\r\n(12345\r\n=7\r\ntxt:abc\r\n")
    want_ends = [7, 15, 20, 31, 36, 41, 45, 74, 113, 117, 125, 138]

    def scan(scanner, pieces):
        s, got, base = scanner(), [], 0
        for piece in pieces:
            for x in s.feed(piece):
                got.append((x[0] + base, x[1]) if isinstance(x, tuple) else x + base)
            base += len(piece)
        return got
    for scanner, stream, want in ((CommandScanner, cmds, want_cmds),
                                  (ReplyScanner, replies, want_ends)):
        for cut in range(len(stream) + 1):  # two reads, split anywhere
            got = scan(scanner, [stream[:cut], stream[cut:]])
            assert got == want, (scanner.__name__, cut, got)
        for step in (1, 2, 3, 7):  # many small reads
            got = scan(scanner, [stream[i:i + step] for i in range(0, len(stream), step)])
            assert got == want, (scanner.__name__, step, got)


def test_pass_forwards_and_counts(srv):
    with FaultProxy(REDIS.port) as p:
        assert p.listening and p.mode == "pass" and p.port
        c = Client(p.port)
        assert c.call("PING") == "PONG"
        big = bytes(range(256)) * 4096  # 1 MiB, every byte value
        assert c.call("SET", "fp:big", big) == "OK"
        assert c.call("GET", "fp:big") == big
        c.send(resp("PING") + resp("INCR", "fp:pipe") + resp("PING"))  # one write
        assert [c.reply() for _ in range(3)] == ["PONG", 1, "PONG"]
        c.send(b"PING\r\n")  # inline
        assert c.reply() == "PONG"
        assert p.accepted == 1 and p.active == 1
        cmds = p.commands
        assert cmds["PING"] == 4 and cmds["INCR"] == 1 and cmds["SET"] == 1, cmds
        c.close()
        assert p.wait_for(lambda p: p.active == 0)


def test_refuse_then_pass_same_port(srv):
    with FaultProxy(REDIS.port) as p:
        port = p.port
        c = Client(port)
        assert c.call("PING") == "PONG"
        p.refuse()
        assert not p.listening and p.mode == "refuse"
        assert expect_reset(c) == b""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2)
            raise AssertionError("connected while refusing")
        except ConnectionRefusedError:
            pass
        p.passthrough()
        assert p.port == port and p.listening
        c = Client(port)
        assert c.call("PING") == "PONG"
        c.close()


def test_blackhole_holds_then_pass_resumes(srv):
    with FaultProxy(REDIS.port) as p:
        old = Client(p.port)
        assert old.call("PING") == "PONG"
        p.blackhole()
        new = Client(p.port)  # accepted
        for c in (old, new):
            c.send(resp("PING"))
        t0 = time.monotonic()
        readable, _, _ = select.select([old.sock, new.sock], [], [], 0.5)
        assert readable == [] and time.monotonic() - t0 >= 0.5, readable
        assert p.accepted == 2 and p.active == 2
        p.passthrough()  # nothing was read: the held PINGs now go through
        assert old.reply() == "PONG" and new.reply() == "PONG"
        old.close()
        new.close()


def test_delay(srv):
    with FaultProxy(REDIS.port) as p:
        c = Client(p.port)
        assert c.call("PING") == "PONG"
        p.delay(300)
        t0 = time.monotonic()
        assert c.call("PING") == "PONG"
        dt = time.monotonic() - t0
        assert 0.3 <= dt < 1.5, dt
        t0 = time.monotonic()  # chunks keep their order
        c.send(resp("ECHO", "a") + resp("ECHO", "b"))
        time.sleep(0.05)
        c.send(resp("ECHO", "c"))
        assert [c.reply() for _ in range(3)] == [b"a", b"b", b"c"]
        assert time.monotonic() - t0 >= 0.35
        p.passthrough()
        t0 = time.monotonic()
        assert c.call("PING") == "PONG"
        assert time.monotonic() - t0 < 0.2
        c.close()


def test_drop_after_incr(srv):
    d = direct()
    assert d.call("SET", "fp:n", "10") == "OK"
    with FaultProxy(REDIS.port) as p:
        other = Client(p.port)
        p.drop_after("incr")  # any case
        assert other.call("GET", "fp:n") == b"10"  # other commands pass
        c = Client(p.port)
        c.send(resp("INCR", "fp:n"))
        assert expect_reset(c) == b""
        assert d.call("GET", "fp:n") == b"11"  # it ran on Redis
        assert p.drops == 1 and p.mode == "pass"
        assert other.call("INCR", "fp:n") == 12  # back to pass
        p.drop_after("INCR", count=2)
        for _ in range(2):
            c = Client(p.port)
            c.send(resp("INCR", "fp:n"))
            assert expect_reset(c) == b""
        assert p.drops == 3 and p.mode == "pass"
        assert d.call("GET", "fp:n") == b"14"
        assert other.call("INCR", "fp:n") == 15
        other.close()
    d.close()


def test_drop_after_pipelined_and_split(srv):
    d = direct()
    assert d.call("SET", "fp:p", "0") == "OK"
    with FaultProxy(REDIS.port) as p:
        p.drop_after("INCR")
        c = Client(p.port)
        c.send(resp("PING") + resp("INCR", "fp:p") + resp("PING"))  # one write
        assert expect_reset(c) == b"+PONG\r\n"  # the reply before INCR's only
        assert d.call("GET", "fp:p") == b"1"
        assert p.commands == {"PING": 1, "INCR": 1}, p.commands  # the last PING never went up
        p.drop_after("INCR")
        c = Client(p.port)
        for b in resp("INCR", "fp:p"):  # one byte per segment
            c.send(bytes([b]))
            time.sleep(0.002)
        assert expect_reset(c) == b""
        assert d.call("GET", "fp:p") == b"2" and p.drops == 2
        assert p.commands["INCR"] == 2
    d.close()


def test_reset_mid_reply(srv):
    d = direct()
    value = bytes(range(256)) * 1000  # 256000 bytes, several reads
    assert d.call("SET", "fp:big", value) == "OK"
    with FaultProxy(REDIS.port) as p:
        c = Client(p.port)
        assert c.call("PING") == "PONG"
        p.reset_mid_reply()
        c.send(resp("GET", "fp:big"))
        reply = b"$%d\r\n%s\r\n" % (len(value), value)
        got = expect_reset(c)
        assert got == reply[:len(reply) // 2], (len(got), len(reply))
        assert p.mid_resets == 1 and p.mode == "pass"
        c = Client(p.port)
        assert c.call("GET", "fp:big") == value
        c.close()
    d.close()


def test_flap(srv):
    with FaultProxy(REDIS.port) as p:
        port = p.port
        held = Client(port)
        assert held.call("PING") == "PONG"
        p.flap(0.5)
        t0 = time.monotonic()
        runs = []  # [state, first seen, last seen]
        while time.monotonic() - t0 < 2.4:
            state, t = connect_state(port), time.monotonic() - t0
            if runs and runs[-1][0] == state:
                runs[-1][2] = t
            else:
                runs.append([state, t, t])
            time.sleep(0.03)
        states = [r[0] for r in runs]
        assert states[:5] == [True, False, True, False, True], runs
        assert 0.35 < runs[1][1] < 0.7 and 0.85 < runs[2][1] < 1.2, runs
        assert expect_reset(held) == b""  # at the first down edge
        assert p.flap_downs >= 2
        p.passthrough()
        for _ in range(10):
            assert connect_state(port)
            time.sleep(0.06)
        c = Client(port)
        assert c.call("PING") == "PONG"
        c.close()


def test_upstream_down_resets_client(srv):
    with FaultProxy(harness.free_port()) as p:
        for _ in range(5):
            c = None
            try:
                c = Client(p.port)
                c.send(resp("PING"))
            except (ConnectionResetError, BrokenPipeError):
                if c:
                    c.close()
                continue  # reset before connect() or send() returned
            assert expect_reset(c) == b""
        assert p.wait_for(lambda p: p.resets == 5 and p.active == 0), p.stats()


def test_many_concurrent_connections(srv):
    d = direct()
    assert d.call("DEL", "fp:many") in (0, 1)
    with FaultProxy(REDIS.port) as p:
        clients = [Client(p.port) for _ in range(200)]
        for c in clients:
            c.send(resp("INCR", "fp:many"))
        assert sorted(c.reply() for c in clients) == list(range(1, 201))
        errors = []

        def worker(c):
            try:
                for _ in range(50):
                    c.call("INCR", "fp:many")
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(c,)) for c in clients[:16]]
        for t in threads:
            t.start()
        p.delay(5)  # switched under load
        p.passthrough()
        for t in threads:
            t.join()
        assert not errors, errors
        assert d.call("GET", "fp:many") == b"1000"
        assert p.accepted == 200 and p.active == 200
        assert p.close_all() == 200 and p.active == 0
        for c in clients:
            assert expect_reset(c) == b""
    d.close()


def test_fds_and_threads_flat_across_mode_switches(srv):
    threads0, fds0 = threading.active_count(), fd_count()
    p = FaultProxy(REDIS.port).start()
    c = Client(p.port)
    assert c.call("PING") == "PONG"
    c.close()
    assert p.wait_for(lambda p: p.active == 0)
    base = fd_count()
    modes = [("blackhole",), ("delay", 5), ("refuse",), ("pass",), ("drop_after", "PING"),
             ("reset_mid_reply",), ("flap", 0.02), ("blackhole",), ("pass",), ("delay", 1)]
    clients = []
    for i in range(100):
        p.set_mode(*modes[i % len(modes)])
        if p.listening:
            try:
                c = Client(p.port, timeout=2)
                c.send(resp("PING"))
                clients.append(c)
            except (ConnectionRefusedError, ConnectionResetError):
                pass  # flap went down
        if len(clients) > 5:
            clients.pop(0).close()
        assert threading.active_count() == threads0 + 1  # the loop thread only
    for c in clients:
        c.close()
    p.passthrough()
    assert p.wait_for(lambda p: p.active == 0), p.stats()
    assert fd_count() == base, (fd_count(), base)
    assert p.accepted > 50, p.stats()
    p.stop()
    assert threading.active_count() == threads0
    assert fd_count() == fds0, (fd_count(), fds0)


def test_stop_leaves_nothing(srv):
    threads0, fds0 = threading.active_count(), fd_count()
    p = FaultProxy(REDIS.port)
    with p:
        port = p.port
        a = Client(port)
        assert a.call("PING") == "PONG"
        p.delay(5000)
        a.send(resp("PING"))  # a reply queued for later
        time.sleep(0.05)
        p.blackhole()
        b = Client(port)  # held
        b.send(resp("PING"))
        time.sleep(0.05)
    assert threading.active_count() == threads0
    for c in (a, b):
        assert expect_reset(c) == b""
    assert not connect_state(port)
    assert fd_count() == fds0, (fd_count(), fds0)
    with p:  # restartable, on the same port
        assert p.port == port and p.mode == "pass"
        c = Client(port)
        assert c.call("PING") == "PONG"
        c.close()
    assert threading.active_count() == threads0


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        REDIS.stop()
