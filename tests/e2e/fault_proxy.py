"""
fault_proxy.py - a TCP fault-injection proxy for end-to-end tests, meant to
sit between devloop and a real redis-server (Toxiproxy, pure standard
library). It runs one selector loop in a background thread; every mode can
be switched at any time while connections are open:

    with FaultProxy(redis.port) as proxy:       # listens on proxy.port
        proxy.delay(300)                        # replies 300 ms late
        proxy.drop_after("INCR")                # INCR runs, its client is reset
        proxy.refuse(); proxy.passthrough()     # ECONNREFUSED, then the same port again

Modes: pass, refuse, blackhole, delay(ms), drop_after(command, count),
reset_mid_reply, flap(period_s). The client stream is parsed as RESP
commands (arrays of bulk strings, or inline commands) and the server stream
as RESP2/RESP3 replies, so drop_after and reset_mid_reply act on whole
commands and replies wherever the reads split them. Only the loop thread
touches sockets; a mode method returns once the loop has applied it.
"""
import collections
import errno
import fcntl
import heapq
import selectors
import socket
import struct
import termios
import threading
import time
import traceback

__all__ = ["FaultProxy", "ProtocolError", "CommandScanner", "ReplyScanner"]

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
CHUNK = 65536
HIGH_WATER = 1 << 20  # bytes queued one way before the other side stops being read
MAX_LINE = 1 << 16    # a RESP header line longer than this is not RESP
LINGER_0 = struct.pack("ii", 1, 0)
RESET_WAIT = 2.0      # longest wait for the client to take what precedes a reset


def _unacked(sock):
    """Bytes the peer has not acknowledged yet (Linux SIOCOUTQ): a reset
    (SO_LINGER 0) discards them."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                              b"\0\0\0\0"))[0]
    except OSError:
        return 0


class ProtocolError(Exception):
    pass


def _int(line):
    try:
        return int(line[1:])
    except ValueError:
        raise ProtocolError("bad RESP length %r" % line[:40])


class ReplyScanner:
    """Finds where top-level RESP2/RESP3 replies end in a byte stream fed in
    arbitrary pieces, without holding the replies (bulk payloads are only
    counted). feed() returns the offsets in the piece just after each reply
    that completed in it. Push messages (>) and attributes (|) are not
    replies and are not reported."""

    def __init__(self):
        self._stack = []          # elements still due in each open aggregate
        self._skip = 0            # bulk payload bytes (and CRLF) still due
        self._line = bytearray()  # a header line split across pieces
        self._counts = True       # the current top-level item is a reply
        self.in_reply = False     # a top-level item has started but not ended

    def feed(self, data):
        ends = []
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                i += take
                self._skip -= take
                if not self._skip:
                    self._element_done(i, ends)
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self._line += data[i:]
                if len(self._line) > MAX_LINE:
                    raise ProtocolError("header line too long")
                break
            self._line += data[i:j]
            i = j + 1
            line = bytes(self._line)
            self._line.clear()
            self._header(line[:-1] if line.endswith(b"\r") else line, i, ends)
        return ends

    def _header(self, line, i, ends):
        if not line:
            raise ProtocolError("empty reply line")
        t = line[:1]
        if not self.in_reply:
            self.in_reply = True
            self._counts = t not in (b">", b"|")
        if t in (b"+", b"-", b":", b"_", b",", b"#", b"("):
            self._element_done(i, ends)
        elif t in (b"$", b"!", b"="):
            n = _int(line)
            if n < 0:
                self._element_done(i, ends)
            else:
                self._skip = n + 2
        elif t in (b"*", b"%", b"~", b">", b"|"):
            n = _int(line) * (2 if t in (b"%", b"|") else 1)
            if n <= 0:
                self._element_done(i, ends)
            else:
                self._stack.append(n)
        else:
            raise ProtocolError("not a RESP reply: %r" % line[:40])

    def _element_done(self, i, ends):
        while self._stack:
            self._stack[-1] -= 1
            if self._stack[-1]:
                return
            self._stack.pop()
        self.in_reply = False
        if self._counts:
            ends.append(i)


class CommandScanner:
    """Finds the RESP commands a client sends (arrays of bulk strings, or
    inline commands), fed in arbitrary pieces. feed() returns (end, NAME)
    for each command that completed in the piece: the offset just after it
    and its first word in upper case."""

    NAME_MAX = 64

    def __init__(self):
        self._line = bytearray()
        self._args_left = 0   # bulk strings still due in the current array
        self._arg = 0         # index of the bulk string being read
        self._skip = 0        # bulk payload bytes (and CRLF) still due
        self._name_left = 0   # bytes of the command name still to keep
        self._name = bytearray()

    def feed(self, data):
        out = []
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                if self._name_left:
                    keep = min(self._name_left, take)
                    self._name += data[i:i + keep]
                    self._name_left -= keep
                i += take
                self._skip -= take
                if not self._skip:
                    self._arg += 1
                    self._args_left -= 1
                    if not self._args_left:
                        out.append((i, self._name.decode("latin-1").upper()))
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self._line += data[i:]
                if len(self._line) > MAX_LINE:
                    raise ProtocolError("command line too long")
                break
            self._line += data[i:j]
            i = j + 1
            line = bytes(self._line)
            self._line.clear()
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._args_left:
                if line[:1] != b"$":
                    raise ProtocolError("expected a bulk string, got %r" % line[:40])
                size = _int(line)
                if size < 0:
                    raise ProtocolError("negative bulk length")
                self._skip = size + 2
                self._name_left = min(size, self.NAME_MAX) if self._arg == 0 else 0
            elif line[:1] == b"*":
                count = _int(line)
                if count > 0:  # redis ignores *0 and *-1
                    self._args_left, self._arg = count, 0
                    self._name = bytearray()
            else:
                words = line.split()
                if words:  # an inline command; empty lines are ignored
                    out.append((i, words[0][:self.NAME_MAX].decode("latin-1").upper()))
        return out


class _Conn:
    """One client connection and its upstream connection."""

    def __init__(self, proxy, csock):
        self.p = proxy
        self.c = csock
        self.u = None             # connected lazily: never while blackholed
        self.u_connecting = False
        self.c_ev = self.u_ev = 0
        self.to_c = collections.deque()  # [due (monotonic), memoryview]
        self.to_c_bytes = 0
        self.to_u = collections.deque()  # memoryview
        self.to_u_bytes = 0
        self.c_eof = self.u_eof = False    # FIN received from that side
        self.c_shut = self.u_shut = False  # FIN sent to that side
        self.cmds = CommandScanner()
        self.replies = ReplyScanner()
        self.cmds_ok = self.replies_ok = True
        self.n_cmds = 0           # commands forwarded on this connection
        self.n_replies = 0        # replies received on this connection
        self.drop_at = None       # index of the command whose reply is withheld
        self.held = None          # the reply being cut by reset_mid_reply
        self.reset_when_flushed = False
        self.reset_deadline = None
        self.timer_due = None
        self.closed = False

    # events

    def on_client(self, events):
        if self.closed:
            return
        if events & READ:
            self._read_client()
        if events & WRITE and not self.closed:
            self._flush_client()
        self.update()

    def on_upstream(self, events):
        if self.closed:
            return
        if self.u_connecting:
            err = self.u.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(reset=True)  # upstream unreachable: the client is reset
                return
            self.u_connecting = False
            self._flush_upstream()
        elif events & READ:
            self._read_upstream()
        if events & WRITE and not self.closed:
            self._flush_upstream()
        self.update()

    def on_timer(self):
        self.timer_due = None
        if not self.closed:
            self._flush_client()
            self.update()

    # client -> upstream

    def _read_client(self):
        try:
            data = self.c.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(reset=True)
            return
        if not data:
            self.c_eof = True
            self._flush_upstream()
            return
        if self.drop_at is not None:
            return  # the connection is about to be reset: nothing more goes up
        if self.cmds_ok:
            try:
                cmds = self.cmds.feed(data)
            except ProtocolError:
                self.cmds_ok = False  # not RESP: forwarded as is, not counted
                cmds = []
            p = self.p
            for k, (end, name) in enumerate(cmds):
                p._count_command(name)
                if p._mode == "drop_after" and p._drop_left > 0 and name == p._drop_cmd:
                    p._drop_left -= 1
                    if not p._drop_left:
                        p._set_mode_quietly("pass")
                    self.drop_at = self.n_cmds + k
                    self.n_cmds += k + 1
                    self._send_up(data[:end])
                    return
            self.n_cmds += len(cmds)
        self._send_up(data)

    def _send_up(self, data):
        if data:
            self.to_u.append(memoryview(data))
            self.to_u_bytes += len(data)
            self._flush_upstream()

    def _flush_upstream(self):
        if self.u is None or self.u_connecting or self.p._mode == "blackhole":
            return
        while self.to_u:
            buf = self.to_u[0]
            try:
                sent = self.u.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close(reset=True)
                return
            self.to_u_bytes -= sent
            if sent < len(buf):
                self.to_u[0] = buf[sent:]
                return
            self.to_u.popleft()
        if self.c_eof and not self.u_shut:
            self.u_shut = True
            try:
                self.u.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # upstream -> client

    def _read_upstream(self):
        try:
            data = self.u.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(reset=True)
            return
        if not data:
            self.u_eof = True
            if self.drop_at is not None or self.held is not None:
                self._reset_when_flushed()  # the withheld reply never came
            else:
                self._flush_client()
            return
        self._from_upstream(data)

    def _from_upstream(self, data):
        p = self.p
        started_inside = self.replies.in_reply
        ends = []
        if self.replies_ok:
            try:
                ends = self.replies.feed(data)
            except ProtocolError:
                self.replies_ok = False
        first = self.n_replies  # the reply under way (or next) at data[0]
        self.n_replies += len(ends)

        if self.drop_at is not None:
            # Forward the replies before the dropped command's, and reset the
            # client as soon as that reply starts: the command has then run.
            k = self.drop_at - first
            if not self.replies_ok or k == 0:
                cut = 0
            elif k <= len(ends) and ends[k - 1] < len(data):
                cut = ends[k - 1]
            else:
                cut = None
            if cut is None:
                self._queue_client(data)
            else:
                self._queue_client(data[:cut])
                p._drops += 1
                self._reset_when_flushed()
            return

        if self.held is not None:  # the reply being cut goes on
            if not self.replies_ok:
                self._cut_reply(self.held + data)
            elif ends:
                self._cut_reply(self.held + data[:ends[0]])
            else:
                self.held += data
            return

        if p._mode == "reset_mid_reply" and self.replies_ok:
            start = 0 if not started_inside else (ends[0] if ends else None)
            if start is not None and start < len(data):
                p._set_mode_quietly("pass")  # one reply only
                self._queue_client(data[:start])
                end = next((e for e in ends if e > start), None)
                if end is None:
                    self.held = bytearray(data[start:])
                else:
                    self._cut_reply(data[start:end])
                return

        self._queue_client(data)

    def _cut_reply(self, reply):
        self.held = None
        self._queue_client(bytes(reply[:len(reply) // 2]))
        self.p._mid_resets += 1
        self._reset_when_flushed()

    def _queue_client(self, data):
        if not data:
            return
        due = 0.0
        if self.p._mode == "delay":
            due = time.monotonic() + self.p._delay_s
        self.to_c.append([due, memoryview(data)])
        self.to_c_bytes += len(data)
        self._flush_client()

    def _flush_client(self):
        if self.p._mode == "blackhole":
            return
        now = time.monotonic()
        while self.to_c:
            due, buf = self.to_c[0]
            if due > now:
                if self.timer_due != due:
                    self.timer_due = due
                    self.p._add_timer(due, self.on_timer)
                return
            try:
                sent = self.c.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close(reset=True)
                return
            self.to_c_bytes -= sent
            if sent < len(buf):
                self.to_c[0][1] = buf[sent:]
                return
            self.to_c.popleft()
        if self.reset_when_flushed:
            # What precedes the reset must reach the client: wait until the
            # kernel has it acknowledged (RST discards the rest).
            if _unacked(self.c) and now < self.reset_deadline:
                self.timer_due = now + 0.002
                self.p._add_timer(self.timer_due, self.on_timer)
            else:
                self.close(reset=True)
        elif self.u_eof and not self.c_shut:
            self.c_shut = True
            try:
                self.c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _reset_when_flushed(self):
        self.reset_when_flushed = True
        self.reset_deadline = time.monotonic() + RESET_WAIT
        self._flush_client()

    # registration and closing

    def _connect_upstream(self):
        u = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u.setblocking(False)
        u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = u.connect_ex(self.p.upstream)
        if err not in (0, errno.EINPROGRESS):
            u.close()
            self.close(reset=True)
            return False
        self.u, self.u_connecting = u, err != 0
        return True

    def update(self):
        """Registers for what the connection can do in the current mode."""
        if self.closed:
            return
        bh = self.p._mode == "blackhole"
        if not bh and self.u is None and not self._connect_upstream():
            return
        if self.c_shut and self.u_shut or self.c_eof and self.u is None:
            self.close(reset=False)
            return
        busy = self.drop_at is not None or self.reset_when_flushed
        c_ev = u_ev = 0
        if not bh:
            if not self.c_eof and not busy and self.to_u_bytes < HIGH_WATER:
                c_ev |= READ
            if self.to_c and self.to_c[0][0] <= time.monotonic():
                c_ev |= WRITE  # a send would have blocked
            if self.u is not None and not self.u_connecting:
                if not self.u_eof and not self.reset_when_flushed \
                        and self.to_c_bytes < HIGH_WATER:
                    u_ev |= READ
                if self.to_u:
                    u_ev |= WRITE
        if self.u_connecting:
            u_ev = WRITE
        self.c_ev = self.p._register(self.c, self.c_ev, c_ev, self.on_client)
        if self.u is not None:
            self.u_ev = self.p._register(self.u, self.u_ev, u_ev, self.on_upstream)

    def close(self, reset):
        """Closes both sides; reset=True resets the client (RST, SO_LINGER 0)."""
        if self.closed:
            return
        self.closed = True
        self.c_ev = self.p._register(self.c, self.c_ev, 0, None)
        if reset:
            try:
                self.c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            except OSError:
                pass
            self.p._resets += 1
        self.c.close()
        if self.u is not None:
            self.u_ev = self.p._register(self.u, self.u_ev, 0, None)
            self.u.close()
        self.to_c.clear()
        self.to_u.clear()
        self.p._conns.discard(self)


class FaultProxy:
    """A TCP proxy from (host, port) to (upstream_host, upstream_port) whose
    faults can be switched at any time. port=0 picks a free port; the port
    stays the same across refuse/flap. start() returns once it listens;
    stop() resets every connection, closes every socket and joins the
    thread. Also a context manager (start on enter, stop on exit)."""

    MODES = ("pass", "refuse", "blackhole", "delay", "drop_after", "reset_mid_reply", "flap")

    def __init__(self, upstream_port, upstream_host="127.0.0.1", host="127.0.0.1", port=0):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._mode = "pass"
        self._delay_s = 0.0
        self._drop_cmd, self._drop_left = None, 0
        self._flap_period, self._flap_gen, self._flap_up = 0.0, 0, True
        self._lsock = None
        self._sel = None
        self._wake_r = self._wake_w = None
        self._thread = None
        self._running = False
        self._stopping = False
        self._conns = set()
        self._timers = []  # heap of (due, seq, callback)
        self._seq = 0
        self._calls = collections.deque()
        self._lock = threading.Lock()
        self._errors = []
        self._commands = collections.Counter()
        self._accepted = self._resets = self._drops = self._mid_resets = self._flap_downs = 0

    # life cycle

    def start(self):
        if self._running:
            raise RuntimeError("already started")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, READ, self._on_wake)
        try:
            self._listen()
        except OSError:
            self._release()
            raise
        self.port = self._lsock.getsockname()[1]
        self._mode = "pass"
        self._stopping = False
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="fault-proxy:%d" % self.port,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Resets every connection, closes every socket, joins the thread.
        Raises AssertionError if the loop thread hit an unexpected error."""
        if not self._running:
            return
        self._call(self._shutdown)
        self._thread.join(10)
        if self._thread.is_alive():
            raise AssertionError("fault proxy thread did not stop")
        self._thread = None
        self._running = False
        self._release()
        if self._errors:
            raise AssertionError("fault proxy loop errors:\n" + "\n".join(self._errors))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # modes

    def set_mode(self, name, *args):
        """Switches to a mode by name: set_mode("delay", 300)."""
        if name not in self.MODES:
            raise ValueError("unknown mode %r" % (name,))
        if name == "delay":
            (ms,) = args
            if ms < 0:
                raise ValueError("delay must be >= 0 ms")
        elif name == "drop_after":
            if not 1 <= len(args) <= 2 or not isinstance(args[0], str):
                raise ValueError("drop_after(command_name, count=1)")
            if len(args) == 2 and args[1] < 1:
                raise ValueError("count must be >= 1")
        elif name == "flap":
            (period,) = args
            if period <= 0:
                raise ValueError("flap period must be > 0")
        elif args:
            raise ValueError("%s takes no arguments" % name)
        self._call(self._enter_mode, name, args)

    def passthrough(self):
        """pass: forwards both ways (held and queued bytes resume)."""
        self.set_mode("pass")

    pass_ = passthrough

    def refuse(self):
        """New connections are refused (the port is closed: ECONNREFUSED),
        existing ones are reset. pass listens on the same port again."""
        self.set_mode("refuse")

    def blackhole(self):
        """Connections are accepted and held but nothing moves either way
        (nothing is read: what was sent is forwarded if pass comes back)."""
        self.set_mode("blackhole")

    def delay(self, ms):
        """Every chunk from the server reaches the client ms later, in order."""
        self.set_mode("delay", ms)

    def drop_after(self, command, count=1):
        """The next `count` commands named `command` (any case) are forwarded,
        and their client is reset once their reply starts (the command ran)
        without seeing it; replies to earlier pipelined commands are
        delivered, later commands are not forwarded. Then back to pass."""
        self.set_mode("drop_after", command, count)

    def reset_mid_reply(self):
        """The next reply to start, on any connection, is forwarded only
        half (len // 2 bytes), then that client is reset. Then back to pass."""
        self.set_mode("reset_mid_reply")

    def flap(self, period_s):
        """pass and refuse alternately, period_s seconds each, starting with
        pass; connections are reset at each down edge."""
        self.set_mode("flap", period_s)

    def close_all(self):
        """Resets every current connection; returns how many."""
        return self._call(self._reset_all)

    # state and counters (read from any thread)

    @property
    def mode(self):
        return self._mode

    @property
    def listening(self):
        return self._lsock is not None

    @property
    def accepted(self):
        return self._accepted

    @property
    def active(self):
        return len(self._conns)

    @property
    def drops(self):
        """Clients reset by drop_after after their command ran."""
        return self._drops

    @property
    def mid_resets(self):
        """Clients reset by reset_mid_reply."""
        return self._mid_resets

    @property
    def resets(self):
        """Clients reset for any reason (refuse, flap, close_all, faults, stop)."""
        return self._resets

    @property
    def flap_downs(self):
        return self._flap_downs

    @property
    def commands(self):
        """Commands seen from clients, by upper-case name (a copy)."""
        with self._lock:
            return collections.Counter(self._commands)

    def redis_url(self, password=None, db=0):
        """A redis:// URL that goes through the proxy."""
        auth = (":%s@" % password) if password else ""
        return "redis://%s%s:%d/%d" % (auth, self.host, self.port, db)

    def stats(self):
        return {"mode": self._mode, "listening": self.listening, "accepted": self._accepted,
                "active": len(self._conns), "resets": self._resets, "drops": self._drops,
                "mid_resets": self._mid_resets, "flap_downs": self._flap_downs,
                "commands": dict(self.commands)}

    def reset_counters(self):
        def reset():
            with self._lock:
                self._commands.clear()
            self._accepted = self._resets = self._drops = self._mid_resets = 0
            self._flap_downs = 0
        self._call(reset)

    def wait_for(self, predicate, timeout=5.0):
        """Polls predicate(self) until it is true; False after timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # loop thread

    def _call(self, fn, *args):
        if not self._running:
            raise RuntimeError("the proxy is not running (start() first)")
        if threading.current_thread() is self._thread:
            return fn(*args)
        box = [None, None, threading.Event()]
        with self._lock:
            self._calls.append((fn, args, box))
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, InterruptedError):
            pass  # the loop is already woken
        if not box[2].wait(10):
            raise TimeoutError("fault proxy loop did not answer")
        if box[1] is not None:
            raise box[1]
        return box[0]

    def _on_wake(self, events):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn, args, box = self._calls.popleft()
            try:
                box[0] = fn(*args)
            except Exception as e:  # handed to the caller
                box[1] = e
            box[2].set()

    def _loop(self):
        while not self._stopping:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, events in self._sel.select(timeout):
                self._guard(key.data, events)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._guard(heapq.heappop(self._timers)[2])

    def _guard(self, fn, *args):
        try:
            fn(*args)
        except Exception:
            self._errors.append(traceback.format_exc())

    def _add_timer(self, due, fn):
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, fn))

    def _register(self, sock, old, new, handler):
        if new == old:
            return new
        if not old:
            self._sel.register(sock, new, handler)
        elif not new:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, new, handler)
        return new

    def _count_command(self, name):
        with self._lock:
            self._commands[name] += 1

    def _set_mode_quietly(self, name):
        """A one-shot mode ends: pass needs no registration change."""
        self._mode = name

    def _enter_mode(self, name, args):
        self._flap_gen += 1  # cancels a running flap
        if name == "refuse":
            self._unlisten()
            self._reset_all()
        else:
            self._listen()
        self._mode = name
        if name == "delay":
            self._delay_s = args[0] / 1000.0
        elif name == "drop_after":
            self._drop_cmd = args[0].upper()
            self._drop_left = args[1] if len(args) > 1 else 1
        elif name == "flap":
            self._flap_period, self._flap_up = float(args[0]), True
            gen = self._flap_gen
            self._add_timer(time.monotonic() + self._flap_period, lambda: self._flap_edge(gen))
        for conn in list(self._conns):  # resume or hold what is queued
            conn._flush_client()
            conn._flush_upstream()
            conn.update()

    def _flap_edge(self, gen):
        if gen != self._flap_gen:
            return
        self._flap_up = not self._flap_up
        if self._flap_up:
            self._listen()
        else:
            self._flap_downs += 1
            self._unlisten()
            self._reset_all()
        self._add_timer(time.monotonic() + self._flap_period, lambda: self._flap_edge(gen))

    def _listen(self):
        if self._lsock is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for attempt in range(50):  # the port was ours a moment ago
                try:
                    s.bind((self.host, self.port))
                    break
                except OSError as e:
                    if e.errno != errno.EADDRINUSE or attempt == 49:
                        raise
                    time.sleep(0.01)
            s.listen(1024)
            s.setblocking(False)
            self._sel.register(s, READ, self._on_accept)
        except BaseException:
            s.close()
            raise
        self._lsock = s

    def _unlisten(self):
        if self._lsock is not None:
            self._sel.unregister(self._lsock)
            self._lsock.close()
            self._lsock = None

    def _on_accept(self, events):
        for _ in range(128):
            if self._lsock is None:
                return
            try:
                s, _addr = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: try again later
                if e.errno == errno.ECONNABORTED:
                    continue
                raise
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, s)
            self._conns.add(conn)
            self._accepted += 1
            conn.update()

    def _reset_all(self):
        conns = list(self._conns)
        for conn in conns:
            conn.close(reset=True)
        return len(conns)

    def _shutdown(self):
        self._flap_gen += 1
        self._reset_all()
        self._unlisten()
        self._timers = []
        self._stopping = True

    def _release(self):
        for s in (self._wake_r, self._wake_w, self._lsock):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = self._lsock = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        with self._lock:
            for _fn, _args, box in self._calls:
                box[1] = RuntimeError("the proxy stopped")
                box[2].set()
            self._calls.clear()
