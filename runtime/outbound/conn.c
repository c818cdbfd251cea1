/*
 * conn.c - an outbound TCP connection, plain or TLS. Connecting walks the
 * peer's addresses in turn (a refused or unreachable one moves to the next;
 * the handle is closed and made again between attempts, as libuv requires)
 * under one deadline for the TCP connect and the TLS handshake together.
 * Bytes to send, ciphertext or plain, queue in one buffer that a single
 * uv_write drains; received bytes, decrypted when TLS, accumulate in c->in
 * for the user to consume, and reading pauses over a high-water mark so a
 * fast peer cannot grow the buffer without bound.
 */
#include "outbound/conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/internal.h"

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_FAILED };

#define READ_CHUNK (64 * 1024)
#define HIGH_WATER (256 * 1024)

static void start_reading(dl_out_conn_t *c);
static void try_next(dl_out_conn_t *c);

static void notify_read(dl_out_conn_t *c)
{
    if (c->on_read)
        c->on_read(c, c->status, c->read_arg);
}

/* The connection failed: the first error sticks, its user hears of it once. */
static void fail_text(dl_out_conn_t *c, int status, const char *text)
{
    if (c->status != 0 || c->closing)
        return;
    c->status = status;
    snprintf(c->err, sizeof(c->err), "%s", text);
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
        c->state = ST_FAILED;
        uv_timer_stop(&c->timer);
        if (c->on_connect)
            c->on_connect(c, status, c->connect_arg);
        return;
    }
    c->state = ST_FAILED;
    notify_read(c);
    if (c->writing == 0 && c->on_write && !c->closing) {
        dl_out_cb cb = c->on_write;
        c->on_write = NULL;
        cb(c, status, c->write_arg);
    }
}

/* fmt has two %s: the peer, then detail. */
static void fail(dl_out_conn_t *c, int status, const char *fmt, const char *detail)
{
    char text[sizeof(c->err)];
    snprintf(text, sizeof(text), fmt, c->peer, detail);
    fail_text(c, status, text);
}

/* ------------------------------------------------------------------ write */

static void flush(dl_out_conn_t *c);

/* What was queued is written: more queued meanwhile goes next, else the
 * writer hears of it. */
static void written(dl_out_conn_t *c, int status)
{
    if (c->closing)
        return;
    if (status < 0) {
        fail(c, DL_EIO, "write to %s: %s", uv_strerror(status)); /* tells the writer */
        return;
    }
    if (c->status == 0 && c->tls_out.len) {
        flush(c);
        return;
    }
    if (c->on_write) {
        dl_out_cb cb = c->on_write;
        c->on_write = NULL;
        cb(c, c->status, c->write_arg);
    }
}

static void on_written(uv_write_t *req, int status)
{
    dl_out_conn_t *c = req->data;
    c->writing = 0;
    c->tls_writing.len = 0;
    written(c, status);
}

/* A write the kernel took at once: its writer hears of it on the next loop
 * turn, as from uv_write, never inside dl_out_write(). */
static void on_written_at_once(uv_idle_t *h)
{
    dl_out_conn_t *c = h->data;
    uv_idle_stop(h);
    c->writing = 0;
    written(c, 0);
}

/* Writes what is queued, unless a write is already under way. The kernel
 * usually takes it whole at once (uv_try_write); uv_write would then still
 * cost an epoll_ctl for each write in libuv 1.4x. */
static void flush(dl_out_conn_t *c)
{
    if (c->writing || c->tls_out.len == 0 || c->closing || c->state == ST_FAILED)
        return;
    if (c->tls_out.oom) {
        fail(c, DL_ENOMEM, "write to %s: %s", "out of memory");
        return;
    }
    uv_buf_t b = uv_buf_init(c->tls_out.data, (unsigned)c->tls_out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->tls_out.len) {
        dl_buf_reset(&c->tls_out);
        c->writing = 1;
        uv_idle_start(&c->idle, on_written_at_once);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        fail(c, DL_EIO, "write to %s: %s", uv_strerror(n));
        return;
    }
    if (n > 0)
        dl_buf_consume(&c->tls_out, (size_t)n);
    dl_buf_t t = c->tls_writing;
    c->tls_writing = c->tls_out;
    c->tls_out = t;
    dl_buf_reset(&c->tls_out);
    b = uv_buf_init(c->tls_writing.data, (unsigned)c->tls_writing.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        c->tls_writing.len = 0;
        fail(c, DL_EIO, "write to %s: %s", uv_strerror(rc));
        return;
    }
    c->writing = 1;
}

int dl_out_write(dl_out_conn_t *c, const char *data, size_t len, dl_out_cb cb, void *arg)
{
    if (c->status != 0)
        return c->status;
    if (c->on_write != NULL || c->state != ST_OPEN)
        return DL_EINVAL;
    if (c->tls) {
        if (dl_tls_write(c->tls, data, len) != 0)
            return DL_ETLS;
    } else if (dl_buf_append(&c->tls_out, data, len) != 0) {
        return DL_ENOMEM;
    }
    c->on_write = cb;
    c->write_arg = arg;
    flush(c);
    return 0;
}

/* ------------------------------------------------------------------- read */

static __thread char tls_rbuf[READ_CHUNK]; /* ciphertext, decrypted at once */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    dl_out_conn_t *c = h->data;
    if (c->tls) {
        *buf = uv_buf_init(tls_rbuf, sizeof(tls_rbuf));
        return;
    }
    if (dl_buf_reserve(&c->in, READ_CHUNK) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv answers UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_plain(void *arg, const char *data, size_t len)
{
    dl_out_conn_t *c = arg;
    dl_buf_append(&c->in, data, len);
}

static void handshake_done(dl_out_conn_t *c)
{
    c->state = ST_OPEN;
    uv_timer_stop(&c->timer);
    if (c->on_connect)
        c->on_connect(c, 0, c->connect_arg);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    dl_out_conn_t *c = s->data;
    (void)buf;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            if (c->state == ST_HANDSHAKE) {
                fail(c, DL_ETLS, "TLS handshake with %s: %s", "the peer closed the connection");
                return;
            }
            c->eof = 1;
            uv_read_stop(s);
            c->reading = 0;
            notify_read(c);
        } else {
            fail(c, c->state == ST_HANDSHAKE ? DL_ETLS : DL_EIO, "read from %s: %s",
                 uv_strerror((int)nread));
        }
        return;
    }
    if (c->tls) {
        int rc = dl_tls_read(c->tls, tls_rbuf, (size_t)nread, on_plain, c);
        flush(c);
        if (rc == DL_EOF) {
            c->eof = 1;
        } else if (rc != 0) {
            fail(c, DL_ETLS, "TLS with %s: %s", dl_tls_error(c->tls));
            return;
        }
        if (c->state == ST_HANDSHAKE) {
            if (!dl_tls_ready(c->tls))
                return;
            handshake_done(c);
            if (c->closing || c->in.len == 0)
                return;
        }
    } else {
        c->in.len += (size_t)nread;
    }
    if (c->in.oom) {
        fail(c, DL_ENOMEM, "read from %s: %s", "out of memory");
        return;
    }
    if (c->in.len >= HIGH_WATER && c->reading) {
        uv_read_stop(s);
        c->reading = 0;
    }
    notify_read(c);
}

static void start_reading(dl_out_conn_t *c)
{
    if (c->reading || c->eof || c->closing || c->status != 0)
        return;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        fail(c, DL_EIO, "read from %s: %s", uv_strerror(rc));
        return;
    }
    c->reading = 1;
}

void dl_out_on_read(dl_out_conn_t *c, dl_out_cb cb, void *arg)
{
    c->on_read = cb;
    c->read_arg = arg;
}

void dl_out_consume(dl_out_conn_t *c, size_t n)
{
    dl_buf_consume(&c->in, DL_MIN(n, c->in.len));
    if (c->in.len < HIGH_WATER && c->state == ST_OPEN)
        start_reading(c);
}

/* ---------------------------------------------------------------- connect */

static void on_connect_timeout(uv_timer_t *t)
{
    dl_out_conn_t *c = t->data;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
        char d[48];
        snprintf(d, sizeof(d), "no answer within %llu ms",
                 (unsigned long long)(c->connect_deadline));
        fail(c, DL_ETIMEDOUT, c->state == ST_HANDSHAKE ? "TLS handshake with %s: %s"
                                                      : "connect to %s: %s", d);
        return;
    }
    if (c->on_timer)
        c->on_timer(c, DL_ETIMEDOUT, c->timer_arg);
}

static void on_connected(uv_connect_t *req, int status)
{
    dl_out_conn_t *c = req->data;
    if (c->closing || c->state != ST_CONNECTING)
        return;
    if (status < 0) {
        snprintf(c->err, sizeof(c->err), "connect to %s: %s", c->peer, uv_strerror(status));
        try_next(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->tls_ctx == NULL) {
        c->state = ST_OPEN;
        uv_timer_stop(&c->timer);
        start_reading(c);
        if (c->state == ST_OPEN && c->on_connect)
            c->on_connect(c, 0, c->connect_arg);
        return;
    }
    c->state = ST_HANDSHAKE;
    c->tls = dl_tls_client_new(c->tls_ctx, &c->tls_out, c->server_name, c->alpn);
    if (c->tls == NULL) {
        fail(c, DL_ENOMEM, "TLS with %s: %s", "out of memory");
        return;
    }
    if (c->tls_out.len == 0) {
        /* a name TLS cannot use: the client refused to start */
        fail(c, DL_ETLS, "TLS with %s: %s", dl_tls_error(c->tls));
        return;
    }
    start_reading(c);
    flush(c); /* the ClientHello */
}

static void on_retry_closed(uv_handle_t *h)
{
    dl_out_conn_t *c = h->data;
    c->tcp_closing = 0;
    if (c->closing) {
        dl_out_close(c); /* closed meanwhile: finish it now the handle is back */
        return;
    }
    int rc = uv_tcp_init(c->loop, &c->tcp);
    if (rc < 0) {
        fail(c, DL_ECONNECT, "connect to %s: %s", uv_strerror(rc));
        return;
    }
    c->tcp.data = c;
    try_next(c);
}

/* Connects to the next address; after the last, fails with the last error. */
static void try_next(dl_out_conn_t *c)
{
    if (c->next_addr >= c->addrs.n) {
        char last[sizeof(c->err)];
        snprintf(last, sizeof(last), "%s", c->err);
        if (last[0] == '\0')
            snprintf(last, sizeof(last), "connect to %s: no address", c->peer);
        fail_text(c, DL_ECONNECT, last);
        return;
    }
    if (c->tried_one) {
        /* libuv cannot reuse a handle whose connect failed: close, make again */
        c->tried_one = 0;
        c->tcp_closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
        return;
    }
    struct sockaddr_storage *a = &c->addrs.a[c->next_addr++];
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)c->port);
    else
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)c->port);
    c->creq.data = c;
    c->tried_one = 1;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)a, on_connected);
    if (rc < 0) {
        snprintf(c->err, sizeof(c->err), "connect to %s: %s", c->peer, uv_strerror(rc));
        try_next(c);
    }
}

int dl_out_connect(uv_loop_t *loop, const dl_out_target_t *t, const char *peer_label,
                   dl_out_cb cb, void *arg, dl_out_conn_t **out)
{
    dl_out_conn_t *c = dl_calloc(1, sizeof(*c));
    if (c == NULL)
        return DL_ENOMEM;
    c->loop = loop;
    c->addrs = *t->addrs;
    c->port = t->port;
    c->tls_ctx = t->tls;
    c->alpn = t->alpn;
    snprintf(c->peer, sizeof(c->peer), "%s", peer_label);
    if (t->server_name && (c->server_name = dl_strdup(t->server_name)) == NULL) {
        dl_free(c);
        return DL_ENOMEM;
    }
    dl_list_init(&c->link);
    dl_buf_init(&c->in);
    dl_buf_init(&c->tls_out);
    dl_buf_init(&c->tls_writing);
    uv_timer_init(loop, &c->timer);
    uv_tcp_init(loop, &c->tcp);
    uv_idle_init(loop, &c->idle);
    c->timer.data = c;
    c->tcp.data = c;
    c->idle.data = c;
    c->open_handles = 3;
    c->on_connect = cb;
    c->connect_arg = arg;
    c->state = ST_CONNECTING;
    c->connect_deadline = t->timeout_ms;
    if (t->timeout_ms > 0)
        uv_timer_start(&c->timer, on_connect_timeout, t->timeout_ms, 0);
    *out = c;
    try_next(c);
    return 0;
}

/* ------------------------------------------------------------ the rest */

static void on_user_timer(uv_timer_t *t)
{
    dl_out_conn_t *c = t->data;
    dl_out_cb cb = c->on_timer;
    c->on_timer = NULL;
    if (cb && !c->closing)
        cb(c, DL_ETIMEDOUT, c->timer_arg);
}

void dl_out_timer(dl_out_conn_t *c, uint64_t ms, dl_out_cb cb, void *arg)
{
    if (c->closing || c->state == ST_CONNECTING || c->state == ST_HANDSHAKE)
        return;
    uv_timer_stop(&c->timer);
    c->on_timer = cb;
    c->timer_arg = arg;
    if (cb && ms > 0)
        uv_timer_start(&c->timer, on_user_timer, ms, 0);
}

int dl_out_alive(dl_out_conn_t *c, int peek)
{
    if (c->state != ST_OPEN || c->status != 0 || c->eof || c->in.len || c->closing || c->writing)
        return 0;
    if (!peek)
        return 1;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return 0;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    /* nothing to read is the only healthy answer: bytes nobody asked for, or
     * the peer's FIN, not yet seen by the loop, make it unusable */
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void on_closed(uv_handle_t *h)
{
    dl_out_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    dl_buf_free(&c->in);
    dl_buf_free(&c->tls_out);
    dl_buf_free(&c->tls_writing);
    dl_free(c->server_name);
    dl_free(c);
}

void dl_out_close(dl_out_conn_t *c)
{
    if (c == NULL)
        return;
    if (c->closing && c->handles_closing)
        return;
    c->closing = 1;
    if (c->tcp_closing)
        return; /* on_retry_closed comes back here */
    c->handles_closing = 1;
    dl_list_remove(&c->link);
    if (c->tls) {
        dl_tls_free(c->tls);
        c->tls = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->idle, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}
