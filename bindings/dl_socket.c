/*
 * dl_socket.c - the devloop.socket_core Lua module: TCP cosockets in
 * OpenResty's shape over the worker's outbound connections
 * (runtime/outbound/conn.c), name cache and keep-alive pool (shared with
 * api.http through runtime/outbound/http_client.h's dl_http_client_outbound).
 *
 * A socket belongs to the task scope (request, job, start hook) that made it;
 * another scope's use is refused, and the scope's end closes what is still
 * open (dl_task_own). Each call that must wait parks only its coroutine: one
 * reader and one writer may wait at once (two coroutines of the scope, one
 * reading and one writing), never two readers or two writers. Received bytes
 * move from the connection's buffer into the socket's own (rbuf) only as far
 * as the pending read needs, and every read mode has a bound: receive(n) at
 * most MAX_N, a line or an unsized receiveuntil piece MAX_PIECE, "*a"
 * MAX_ALL; beyond it the read fails with "too large" and the socket closes.
 * A read timeout leaves the socket open (what arrived is returned as the
 * partial result); any other failure closes it. Deadlines run on two timers
 * of their own (tm_t), made at connect and closed with the connection, so a
 * socket without a connection holds no libuv handle and its memory goes in
 * its __gc.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "bindings/dl_bindings.h"
#include "common/internal.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "outbound/http_client.h"

#define SOCK_MT "devloop.TcpSocket"
#define READER_MT "devloop.TcpReader"
#define DEFAULT_TIMEOUT_MS 60000
#define MAX_TIMEOUT_MS 86400000.0
#define MAX_N (64u * 1024 * 1024)      /* receive(n) and reader(size) */
#define MAX_PIECE (1024u * 1024)       /* a line, an unsized receiveuntil piece */
#define MAX_ALL (16u * 1024 * 1024)    /* receive("*a") */
#define MAX_PATTERN 4096
#define MAX_POOL_NAME 512
#define MAX_SEND_DEPTH 16

enum { RM_N, RM_LINE, RM_ALL, RM_UNTIL };

typedef struct sock_s sock_t;

/* A receiveuntil reader's state (the closure's second upvalue). */
typedef struct {
    size_t plen;
    int inclusive;
    int mid;          /* a sized read returned pieces; the pattern is not reached yet */
    int pending_nil;  /* inclusive: the pattern went out as the last piece; nil comes next */
    unsigned gen;     /* the connection mid applies to */
    uint16_t *fail;   /* KMP failure function of pat (patterns are at most 4096 bytes) */
    char pat[];
} reader_t;

/* The deadlines of one connection (freed in their close callbacks). */
typedef struct {
    uv_timer_t r, w;
    sock_t *s;        /* NULL once the socket let go of them */
    int open;
} tm_t;

struct sock_s {
    dl_task_res_t res;
    int owned;
    uint64_t scope;        /* the scope it belongs to; 0 until it has one */
    uint64_t connect_ms, send_ms, read_ms;
    dl_outbound_t ob;      /* valid while connecting or open */
    dl_http_client_t *hc;
    dl_out_conn_t *conn;   /* open (or being made in a slot) */
    int connecting, slot;
    dl_dns_wait_t *dns_w;
    dl_out_waiter_t *pool_w;
    tm_t *tm;
    dl_out_limits_t lim;
    char key[DL_OUT_MAX_KEY + 1];
    char label[272];       /* host:port for messages */
    char host[256];
    char server_name[256];
    int port, tls, verify;
    char ca[256];
    unsigned gen;          /* counts connections, for readers' state */
    int mid_readers;       /* readers of this gen that are mid-pattern */
    /* the parked operations: connect, read, write */
    dl_task_t *ctask, *rtask, *wtask;
    int cpin, rpin, wpin;  /* registry refs holding the userdata while parked */
    int cdone, cstatus;    /* the connect finished before it parked */
    char cerr[420];
    int wdone, wstatus;
    size_t wlen;
    /* the pending read */
    int rmode;
    size_t rn;             /* RM_N: bytes; RM_UNTIL: piece size (0: none) */
    reader_t *rd;
    size_t scan;           /* unread rbuf bytes already searched (LF, pattern) */
    dl_buf_t rbuf;         /* bytes taken from the connection: rbuf.data[roff..len) unread */
    size_t roff;           /* consumed by moving this, compacted before appending: linear */
};

typedef struct {
    sock_t *s;
} sock_ud_t;

static __thread int warned_noverify;

/* The unread bytes of the socket's buffer. */
static const char *rb_data(const sock_t *s)
{
    return s->rbuf.data ? s->rbuf.data + s->roff : "";
}

static size_t rb_len(const sock_t *s)
{
    return s->rbuf.len - s->roff;
}

static void rb_consume(sock_t *s, size_t n)
{
    s->roff += n;
    if (s->roff >= s->rbuf.len) {
        s->rbuf.len = 0;
        s->roff = 0;
    }
    s->scan = 0;
}

static void rb_clear(sock_t *s)
{
    dl_buf_reset(&s->rbuf);
    s->roff = 0;
    s->scan = 0;
}

/* Appends n bytes, first moving the unread ones to the front when the
 * consumed part is at least as long (each byte moves O(1) times). */
static int rb_append(sock_t *s, const char *p, size_t n)
{
    if (s->roff && s->roff >= rb_len(s)) {
        memmove(s->rbuf.data, s->rbuf.data + s->roff, rb_len(s));
        s->rbuf.len -= s->roff;
        s->roff = 0;
    }
    return dl_buf_append(&s->rbuf, p, n);
}

/* ============================================================ helpers */

static void tm_closed(uv_handle_t *h)
{
    tm_t *tm = h->data;
    if (--tm->open == 0)
        dl_free(tm);
}

static void tm_release(sock_t *s)
{
    tm_t *tm = s->tm;
    if (tm == NULL)
        return;
    s->tm = NULL;
    tm->s = NULL;
    uv_close((uv_handle_t *)&tm->r, tm_closed);
    uv_close((uv_handle_t *)&tm->w, tm_closed);
}

static int tm_make(sock_t *s, uv_loop_t *loop)
{
    tm_t *tm = dl_calloc(1, sizeof(*tm));
    if (tm == NULL)
        return DL_ENOMEM;
    uv_timer_init(loop, &tm->r);
    uv_timer_init(loop, &tm->w);
    tm->r.data = tm;
    tm->w.data = tm;
    tm->open = 2;
    tm->s = s;
    s->tm = tm;
    return 0;
}

static void unpin(dl_task_t *t, int *pin)
{
    if (t && *pin != LUA_NOREF)
        luaL_unref(t->co, LUA_REGISTRYINDEX, *pin);
    *pin = LUA_NOREF;
}

/* Takes the task parked in *slot and resumes it with the n values pushed on
 * its coroutine. The socket may be gone once this returns. */
static void resume_op(dl_task_t **slot, int *pin, int n)
{
    dl_task_t *t = *slot;
    *slot = NULL;
    unpin(t, pin);
    dl_task_resume(t, n);
}

/* The connection's error as the text a caller gets. */
static const char *conn_err(const dl_out_conn_t *c, char *buf, size_t n)
{
    if (c->status == DL_ETLS) {
        snprintf(buf, n, "tls: %s", c->err);
        return buf;
    }
    return "closed";
}

static void disown(sock_t *s)
{
    if (s->owned) {
        dl_task_disown(&s->res);
        s->owned = 0;
    }
}

/* Lets go of the connection and of everything under way (no task resumed). */
static void drop(sock_t *s)
{
    if (s->dns_w) {
        dl_dns_cancel(s->dns_w);
        s->dns_w = NULL;
    }
    if (s->pool_w) {
        dl_out_pool_cancel(s->pool_w);
        s->pool_w = NULL;
    }
    dl_out_conn_t *c = s->conn;
    s->conn = NULL;
    if (c) {
        dl_out_on_read(c, NULL, NULL);
        if (s->slot) /* made in a slot, not yet the origin's */
            dl_out_close(c);
        else
            dl_out_pool_release(c, 0, &s->lim);
    }
    if (s->slot) {
        s->slot = 0;
        dl_out_pool_unslot(s->ob.pool, s->key);
    }
    s->connecting = 0;
    tm_release(s);
    dl_buf_free(&s->rbuf);
    s->roff = 0;
    s->scan = 0;
    s->mid_readers = 0;
    s->gen++;
    disown(s);
}

/*
 * Closes the socket: the connection goes (not pooled) and the tasks parked
 * on it get nil, err. The socket may be gone once this returns, when a task
 * was resumed.
 */
static void shut(sock_t *s, const char *err)
{
    dl_task_t *tasks[3] = {s->ctask, s->rtask, s->wtask};
    int pins[3] = {s->cpin, s->rpin, s->wpin};
    s->ctask = s->rtask = s->wtask = NULL;
    s->cpin = s->rpin = s->wpin = LUA_NOREF;
    drop(s);
    /* each parked task's pin keeps the userdata (and s) until its own resume */
    for (int i = 0; i < 3; i++) {
        if (tasks[i] == NULL)
            continue;
        dl_task_t *t = tasks[i];
        lua_pushnil(t->co);
        lua_pushstring(t->co, err);
        resume_op(&t, &pins[i], 2);
    }
}

/* The scope that owns the socket ended. */
static void release_res(dl_task_res_t *r)
{
    sock_t *s = (sock_t *)r;
    s->owned = 0; /* already off the scope's list */
    shut(s, "closed");
}

static sock_t *check_sock(lua_State *L)
{
    sock_ud_t *u = luaL_checkudata(L, 1, SOCK_MT);
    return u->s;
}

/* NULL, or why t may not use s. */
static const char *use_error(const sock_t *s, const dl_task_t *t)
{
    if (t == NULL)
        return "invalid: a socket can only be used inside a handler, a job or a start hook "
               "while serving";
    if (s->scope && s->scope != t->scope)
        return "invalid: the socket belongs to another request";
    return NULL;
}

/* Holds the userdata at idx while a task is parked on it. */
static int pin(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ============================================================ connect */

static void connect_done(sock_t *s, int status, const char *err)
{
    if (s->tm)
        uv_timer_stop(&s->tm->w);
    s->connecting = 0;
    if (status != 0) {
        char e[420];
        snprintf(e, sizeof(e), "%s", err);
        if (s->ctask == NULL) { /* before it parked: l_connect returns it */
            drop(s);
            s->cdone = 1;
            s->cstatus = status;
            snprintf(s->cerr, sizeof(s->cerr), "%s", e);
            return;
        }
        shut(s, e);
        return;
    }
    if (s->ctask == NULL) {
        s->cdone = 1;
        s->cstatus = 0;
        return;
    }
    lua_pushinteger(s->ctask->co, 1);
    resume_op(&s->ctask, &s->cpin, 1);
}

static void on_connected(dl_out_conn_t *c, int status, void *arg)
{
    sock_t *s = arg;
    if (status != 0) {
        char e[300];
        snprintf(e, sizeof(e), "%s: %s",
                 status == DL_ETIMEDOUT ? "timeout" : status == DL_ETLS ? "tls" : "connect",
                 c->err);
        connect_done(s, status, e); /* drop() closes c and gives the slot back */
        return;
    }
    s->slot = 0;
    dl_out_pool_attach(s->ob.pool, s->key, c);
    connect_done(s, 0, NULL);
}

static void start_connect(sock_t *s, const dl_dns_addrs_t *addrs)
{
    char err[256], e[300];
    dl_tls_ctx_t *ctx = NULL;
    if (s->tls) {
        ctx = dl_http_client_tls(s->hc, s->verify, s->ca[0] ? s->ca : NULL, err, sizeof(err));
        if (ctx == NULL) {
            snprintf(e, sizeof(e), "tls: %s", err);
            connect_done(s, DL_ETLS, e);
            return;
        }
    }
    dl_out_target_t tg = {.addrs = addrs,
                          .port = s->port,
                          .timeout_ms = s->connect_ms,
                          .tls = ctx,
                          .server_name = s->tls ? s->server_name : NULL,
                          .alpn = NULL};
    if (dl_out_connect(s->ob.loop, &tg, s->label, on_connected, s, &s->conn) != 0) {
        s->conn = NULL;
        connect_done(s, DL_ENOMEM, "connect: out of memory");
    }
}

static void on_dns(int status, const dl_dns_addrs_t *addrs, const char *why, void *arg)
{
    sock_t *s = arg;
    s->dns_w = NULL;
    if (status != 0) {
        char e[300];
        snprintf(e, sizeof(e), "dns: %s", why);
        connect_done(s, DL_EDNS, e);
        return;
    }
    start_connect(s, addrs);
}

/* Holding a slot of the origin: look the name up, then connect. */
static void resolve(sock_t *s)
{
    dl_dns_addrs_t addrs;
    char why[256], e[300];
    int rc = dl_dns_lookup(s->ob.dns, s->host, &addrs, on_dns, s, &s->dns_w, why, sizeof(why));
    if (rc == 0) {
        start_connect(s, &addrs);
    } else if (rc < 0) {
        snprintf(e, sizeof(e), "dns: %s", why);
        connect_done(s, DL_EDNS, e);
    }
}

static void on_pool_turn(dl_out_conn_t *c, void *arg)
{
    sock_t *s = arg;
    s->pool_w = NULL;
    if (c) {
        s->conn = c;
        connect_done(s, 0, NULL);
        return;
    }
    s->slot = 1;
    resolve(s);
}

static void on_connect_timer(uv_timer_t *t)
{
    tm_t *tm = t->data;
    sock_t *s = tm->s;
    if (s == NULL || !s->connecting)
        return;
    char e[420];
    snprintf(e, sizeof(e), "timeout: connect to %s: no connection within %llu ms%s", s->label,
             (unsigned long long)s->connect_ms, s->pool_w ? " (waiting for the pool)" : "");
    connect_done(s, DL_ETIMEDOUT, e);
}

static void cancel_connect(void *data)
{
    sock_t *s = data;
    dl_task_t *t = s->ctask;
    s->ctask = NULL;
    unpin(t, &s->cpin);
    drop(s);
}

/* opts[name] as an integer in [lo, hi]; dflt when absent; -1 on a bad value. */
static int opt_int(lua_State *L, int opts, const char *name, long lo, long hi, long dflt,
                   long *out, char *why, size_t whylen)
{
    *out = dflt;
    if (opts == 0)
        return 0;
    lua_getfield(L, opts, name);
    int ty = lua_type(L, -1);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (ty == LUA_TNIL)
        return 0;
    if (ty != LUA_TNUMBER || !(v >= (double)lo && v <= (double)hi) || v != (double)(long)v) {
        snprintf(why, whylen, "invalid: opts.%s must be an integer from %ld to %ld", name, lo,
                 hi);
        return -1;
    }
    *out = (long)v;
    return 0;
}

/* A host name or IP literal a connect may use: printable, no space, no brackets' junk. */
static int host_ok(const char *h, size_t n)
{
    if (n == 0 || n > DL_DNS_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '@' || ch == '[' || ch == ']')
            return 0;
    }
    return 1;
}

/* sock:connect(host, port, [opts]) -> 1 | nil, err */
static int l_connect(lua_State *L)
{
    sock_t *s = check_sock(L);
    dl_task_t *t = dl_task_current(L);
    const char *bad = use_error(s, t);
    if (bad)
        return dl_lua_fail(L, bad, NULL);
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h == NULL || h->http == NULL)
        return dl_lua_fail(L, "invalid: sockets can only connect while serving", NULL);
    if (s->ctask || s->rtask || s->wtask)
        return dl_lua_fail(L, "invalid: the socket is busy (another coroutine is using it)",
                           NULL);
    if (!dl_task_scope_alive(t))
        return dl_lua_fail(L, "invalid: the request (job, start hook) this code ran for has "
                              "ended", NULL);
    if (lua_type(L, 2) != LUA_TSTRING)
        return dl_lua_fail(L, "invalid: the host must be a string", NULL);
    size_t hl;
    const char *host = lua_tolstring(L, 2, &hl);
    if (!host_ok(host, hl) || strlen(host) != hl)
        return dl_lua_fail(L, "invalid: the host must be a name or an IP address of 1 to 253 "
                              "printable characters", NULL);
    double pv = lua_tonumber(L, 3);
    if (lua_type(L, 3) != LUA_TNUMBER || !(pv >= 1 && pv <= 65535) || pv != (double)(int)pv)
        return dl_lua_fail(L, "invalid: the port must be an integer from 1 to 65535", NULL);
    int opts = lua_istable(L, 4) ? 4 : 0;
    if (!lua_isnoneornil(L, 4) && opts == 0)
        return dl_lua_fail(L, "invalid: connect's options must be a table", NULL);
    char why[320];
    int tls = 0, verify = 1;
    const char *ca = NULL, *sni = NULL, *pool = NULL;
    size_t cal = 0, snl = 0, pl = 0;
    long pool_size, backlog;
    dl_outbound_t ob;
    dl_http_client_outbound(h->http, &ob);
    if (opts) {
        lua_getfield(L, opts, "tls"); /* stays on the stack: its strings are borrowed */
        int tt = lua_gettop(L);
        if (lua_istable(L, tt)) {
            tls = 1;
            lua_getfield(L, tt, "verify");
            if (!lua_isnil(L, -1))
                verify = lua_toboolean(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, tt, "ca");
            lua_getfield(L, tt, "server_name");
            if ((!lua_isnil(L, -2) && lua_type(L, -2) != LUA_TSTRING) ||
                (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING))
                return dl_lua_fail(L, "invalid: tls.ca and tls.server_name must be strings",
                                   NULL);
            ca = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &cal) : NULL;
            sni = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &snl) : NULL;
            if (cal > 255 || (ca && (cal == 0 || strlen(ca) != cal)) || snl > 253 ||
                (sni && (!host_ok(sni, snl) || strlen(sni) != snl)))
                return dl_lua_fail(L, "invalid: tls.ca must be a file name of at most 255 bytes "
                                      "and tls.server_name a host name of at most 253", NULL);
        } else if (lua_type(L, tt) == LUA_TBOOLEAN) {
            tls = lua_toboolean(L, tt);
        } else if (!lua_isnil(L, tt)) {
            return dl_lua_fail(L, "invalid: opts.tls must be a table or a boolean", NULL);
        }
        lua_getfield(L, opts, "pool");
        if (lua_type(L, -1) == LUA_TSTRING) {
            pool = lua_tolstring(L, -1, &pl);
            if (pl == 0 || pl > MAX_POOL_NAME)
                return dl_lua_fail(L, "invalid: opts.pool must be a name of 1 to 512 bytes",
                                   NULL);
        } else if (!lua_isnil(L, -1)) {
            return dl_lua_fail(L, "invalid: opts.pool must be a string", NULL);
        }
    }
    if (opt_int(L, opts, "pool_size", 1, 100000, ob.limits.max_idle > 0 ? ob.limits.max_idle : 32,
                &pool_size, why, sizeof(why)) ||
        opt_int(L, opts, "backlog", 0, 100000, -1, &backlog, why, sizeof(why)))
        return dl_lua_fail(L, why, NULL);

    /* a connection still open goes first (OpenResty closes it too) */
    if (s->conn || s->connecting)
        drop(s);
    s->hc = h->http;
    s->ob = ob;
    s->tls = tls;
    s->verify = verify;
    s->port = (int)pv;
    memcpy(s->host, host, hl + 1);
    snprintf(s->ca, sizeof(s->ca), "%s", ca ? ca : "");
    snprintf(s->server_name, sizeof(s->server_name), "%s", sni ? sni : host);
    int v6 = strchr(host, ':') != NULL;
    snprintf(s->label, sizeof(s->label), "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
             s->port);
    /* the pool's key: a name of the app's, or everything that makes two connections differ */
    if (pool)
        snprintf(s->key, sizeof(s->key), "tcp:%s", pool);
    else
        snprintf(s->key, sizeof(s->key), "tcp:%s|%d|%d|%s|%s", s->label, tls, verify, s->ca,
                 tls ? s->server_name : "");
    s->lim = ob.limits;
    s->lim.max_idle = (int)pool_size;
    s->lim.max_conns = backlog >= 0 ? (int)pool_size : 0;
    s->lim.max_waiting = backlog >= 0 ? (int)backlog : 0;
    if (tls && !verify && !warned_noverify) {
        warned_noverify = 1;
        dl_log(DL_LOG_WARN, "api.socket: a connect with tls.verify = false: the server's "
                            "certificate is not checked (%s)", s->label);
    }
    if (tm_make(s, ob.loop) != 0)
        return dl_lua_fail(L, "connect: out of memory", NULL);
    if (s->scope == 0)
        s->scope = t->scope;
    s->res.close = release_res;
    dl_task_own(t, &s->res);
    s->owned = 1;
    s->connecting = 1;
    s->cdone = 0;

    dl_out_conn_t *c;
    int rc = dl_out_pool_acquire(ob.pool, s->key, &s->lim, on_pool_turn, s, &c, &s->pool_w);
    if (rc == 0) {
        s->conn = c;
        connect_done(s, 0, NULL);
    } else if (rc == 1) {
        s->slot = 1;
        resolve(s);
    } else if (rc != 2) {
        s->pool_w = NULL;
        char e[400];
        if (rc == DL_ECONNECT || rc == DL_EBUSY)
            snprintf(e, sizeof(e), "connect: %d callers already wait for a connection of pool "
                     "%.120s (pool_size %ld, backlog %ld)", s->lim.max_waiting, s->key + 4,
                     pool_size, backlog < 0 ? 0 : backlog);
        else
            snprintf(e, sizeof(e), "connect: %s", dl_strerror(rc));
        connect_done(s, rc, e);
    }
    if (s->cdone) {
        s->cdone = 0;
        if (s->cstatus != 0)
            return dl_lua_fail(L, s->cerr, NULL);
        lua_pushinteger(L, 1);
        return 1;
    }
    s->ctask = t;
    s->cpin = pin(L, 1);
    if (s->connect_ms)
        uv_timer_start(&s->tm->w, on_connect_timer, s->connect_ms, 0);
    dl_task_park(t, cancel_connect, s);
    return lua_yield(L, 0);
}

/* ============================================================ reading */

/* Pushes nil, err, partial (the socket's buffered bytes, consumed). */
static int push_fail(lua_State *L, sock_t *s, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushlstring(L, rb_data(s), rb_len(s));
    rb_clear(s);
    if (s->rd) {
        if (s->rd->mid && s->rd->gen == s->gen)
            s->mid_readers--;
        s->rd->mid = 0;
        s->rd->pending_nil = 0;
    }
    return 3;
}

/* Returns the first n bytes of rbuf as a string and drops them. */
static int push_take(lua_State *L, sock_t *s, size_t n, size_t drop_extra, size_t keep)
{
    lua_pushlstring(L, rb_data(s), keep);
    rb_consume(s, n + drop_extra);
    return 1;
}

/* The longest suffix of b[0..n) that is a proper prefix of p. */
/* The longest end of b[0..n) that begins the pattern (it may continue in
 * bytes not here yet): the KMP automaton over the last plen - 1 bytes,
 * linear in the pattern whatever the data. */
static size_t prefix_tail(const char *b, size_t n, const reader_t *rd)
{
    size_t pl = rd->plen, st = 0;
    for (size_t i = n > pl - 1 ? n - (pl - 1) : 0; i < n; i++) {
        while (st > 0 && b[i] != rd->pat[st])
            st = rd->fail[st - 1];
        if (b[i] == rd->pat[st])
            st++;
        if (st == pl)
            st = rd->fail[st - 1]; /* a whole match is not a tail (none is here) */
    }
    return st;
}

/* fail[i]: the longest proper prefix of pat[0..i] that is also its suffix. */
static void kmp_table(const char *p, size_t pl, uint16_t *fail)
{
    fail[0] = 0;
    for (size_t i = 1, k = 0; i < pl; i++) {
        while (k > 0 && p[i] != p[k])
            k = fail[k - 1];
        if (p[i] == p[k])
            k++;
        fail[i] = (uint16_t)k;
    }
}

static void set_mid(sock_t *s, reader_t *rd, int mid)
{
    int was = rd->mid && rd->gen == s->gen;
    if (was && !mid)
        s->mid_readers--;
    if (!was && mid)
        s->mid_readers++;
    rd->mid = mid;
    rd->gen = s->gen;
}

/*
 * Tries the pending read on rbuf alone: the number of values pushed on L
 * when it is answered (or fails, *fatal set when the socket must close), 0
 * when it needs more bytes.
 */
static int try_read(lua_State *L, sock_t *s, int *fatal)
{
    const char *data = rb_data(s);
    size_t len = rb_len(s);
    switch (s->rmode) {
    case RM_N:
        if (len >= s->rn)
            return push_take(L, s, s->rn, 0, s->rn);
        return 0;
    case RM_ALL:
        if (len > MAX_ALL) {
            *fatal = 1;
            return push_fail(L, s, "too large: receive(\"*a\") over 16 MiB");
        }
        return 0;
    case RM_LINE: {
        const char *lf = len > s->scan ? memchr(data + s->scan, '\n', len - s->scan)
                                          : NULL;
        if (lf) {
            size_t n = (size_t)(lf - data), keep = n;
            if (keep > 0 && data[keep - 1] == '\r')
                keep--;
            if (keep > MAX_PIECE) {
                *fatal = 1;
                return push_fail(L, s, "too large: a line over 1 MiB");
            }
            return push_take(L, s, n, 1, keep);
        }
        s->scan = len;
        if (len > MAX_PIECE) {
            *fatal = 1;
            return push_fail(L, s, "too large: a line over 1 MiB");
        }
        return 0;
    }
    default: { /* RM_UNTIL */
        reader_t *rd = s->rd;
        size_t pl = rd->plen, size = s->rn;
        if (rd->pending_nil) {
            rd->pending_nil = 0;
            set_mid(s, rd, 0);
            lua_pushnil(L);
            return 1;
        }
        const char *hit = NULL;
        if (len >= pl) {
            /* glibc's memmem is linear whatever the data (two-way): a naive
             * scan costs len x pattern on data that nearly matches */
            size_t from = s->scan;
            hit = from < len ? memmem(data + from, len - from, rd->pat, pl) : NULL;
            if (hit == NULL)
                s->scan = len - pl + 1;
        }
        if (hit) {
            size_t p = (size_t)(hit - data);
            if (size == 0) {
                if (p > MAX_PIECE) {
                    *fatal = 1;
                    return push_fail(L, s, "too large: a receiveuntil piece over 1 MiB");
                }
                set_mid(s, rd, 0);
                return push_take(L, s, p, pl, rd->inclusive ? p + pl : p);
            }
            if (p > 0) {
                size_t k = p < size ? p : size;
                set_mid(s, rd, 1);
                return push_take(L, s, k, 0, k);
            }
            /* at the pattern: the end of this part */
            rb_consume(s, pl);
            if (rd->inclusive) {
                rd->pending_nil = 1;
                set_mid(s, rd, 1);
                lua_pushlstring(L, rd->pat, pl);
                return 1;
            }
            set_mid(s, rd, 0);
            lua_pushnil(L);
            return 1;
        }
        if (size) {
            size_t safe = len - prefix_tail(data, len, rd);
            if (safe >= size) {
                set_mid(s, rd, 1);
                return push_take(L, s, size, 0, size);
            }
            return 0;
        }
        if (len > MAX_PIECE + pl) {
            *fatal = 1;
            return push_fail(L, s, "too large: a receiveuntil piece over 1 MiB (read it in "
                                   "pieces: reader(size))");
        }
        return 0;
    }
    }
}

/* How many bytes rbuf may hold for the pending read. */
static size_t read_cap(const sock_t *s)
{
    switch (s->rmode) {
    case RM_N:
        return s->rn;
    case RM_ALL:
        return MAX_ALL + 1;
    case RM_LINE:
        return MAX_PIECE + 2;
    default:
        return (s->rn ? s->rn : MAX_PIECE + 1) + s->rd->plen;
    }
}

/*
 * Answers the pending read from what has arrived: values pushed on L, or 0
 * to wait. *fatal: the socket must close once the values are delivered.
 */
static int eval(lua_State *L, sock_t *s, int *fatal)
{
    dl_out_conn_t *c = s->conn;
    *fatal = 0;
    for (;;) {
        int n = try_read(L, s, fatal);
        if (n)
            return n;
        size_t cap = read_cap(s);
        if (c->in.len == 0 || rb_len(s) >= cap)
            break;
        /* all of it: taking less would move the connection's buffer each
         * time; rbuf stays under cap plus the connection's high-water mark */
        size_t take = c->in.len;
        if (rb_append(s, c->in.data, take) != 0) {
            *fatal = 1;
            return push_fail(L, s, "closed: out of memory");
        }
        dl_out_consume(c, take);
        if (s->conn != c) { /* resuming reading failed, and a writer's close followed */
            *fatal = 1;
            return push_fail(L, s, "closed");
        }
    }
    if (c->status != 0) {
        char e[260];
        *fatal = 1;
        return push_fail(L, s, conn_err(c, e, sizeof(e)));
    }
    if (c->eof && c->in.len == 0) {
        *fatal = 1;
        if (s->rmode == RM_ALL) {
            lua_pushlstring(L, rb_data(s), rb_len(s));
            rb_clear(s);
            return 1;
        }
        return push_fail(L, s, "closed");
    }
    return 0;
}

static void on_sock_read(dl_out_conn_t *c, int status, void *arg);

/* The read's outcome goes to its parked task; a fatal one closes the socket. */
static void read_progress(sock_t *s)
{
    /* the task is ours while eval runs: a close under it (a failed write
     * resumes the writer, which may close) must not resume it too */
    dl_task_t *t = s->rtask;
    int rp = s->rpin;
    s->rtask = NULL;
    s->rpin = LUA_NOREF;
    dl_out_conn_t *c = s->conn;
    int fatal;
    dl_out_on_read(c, NULL, NULL); /* no notice re-enters while eval consumes */
    int n = eval(t->co, s, &fatal);
    if (n == 0) {
        s->rtask = t;
        s->rpin = rp;
        dl_out_on_read(c, on_sock_read, s);
        return;
    }
    if (s->tm)
        uv_timer_stop(&s->tm->r);
    if (fatal)
        shut(s, "closed"); /* a parked writer hears of it too */
    resume_op(&t, &rp, n); /* the values are on t's stack already */
}

static void on_sock_read(dl_out_conn_t *c, int status, void *arg)
{
    (void)c;
    (void)status;
    sock_t *s = arg;
    if (s->rtask)
        read_progress(s);
}

static void on_read_timer(uv_timer_t *tmr)
{
    tm_t *tm = tmr->data;
    sock_t *s = tm->s;
    if (s == NULL || s->rtask == NULL)
        return;
    dl_out_on_read(s->conn, NULL, NULL);
    push_fail(s->rtask->co, s, "timeout"); /* the socket stays open (OpenResty) */
    resume_op(&s->rtask, &s->rpin, 3);
}

static void cancel_read(void *data)
{
    sock_t *s = data;
    dl_task_t *t = s->rtask;
    s->rtask = NULL;
    unpin(t, &s->rpin);
    if (s->tm)
        uv_timer_stop(&s->tm->r);
    if (s->conn)
        dl_out_on_read(s->conn, NULL, NULL);
}

/* Starts the read described by s->rmode/rn/rd for the calling task. */
static int start_read(lua_State *L, sock_t *s, dl_task_t *t, int self)
{
    int fatal;
    int n = eval(L, s, &fatal);
    if (n) {
        if (fatal) {
            /* the values sit on top of L; closing pushes nothing */
            shut(s, "closed");
        }
        return n;
    }
    s->rtask = t;
    s->rpin = pin(L, self);
    uv_timer_start(&s->tm->r, on_read_timer, s->read_ms, 0);
    dl_out_on_read(s->conn, on_sock_read, s);
    dl_task_park(t, cancel_read, s);
    return lua_yield(L, 0);
}

/* NULL when t may read s now, else why not. */
static const char *read_error(const sock_t *s, const dl_task_t *t)
{
    const char *bad = use_error(s, t);
    if (bad)
        return bad;
    if (s->conn == NULL || s->connecting)
        return "closed";
    if (s->rtask)
        return "invalid: the socket is already being read by another coroutine";
    return NULL;
}

/* sock:receive([n | "*l" | "*a"]) -> data | nil, err, partial */
static int l_receive(lua_State *L)
{
    sock_t *s = check_sock(L);
    dl_task_t *t = dl_task_current(L);
    int ty = lua_type(L, 2);
    if (ty == LUA_TNUMBER) {
        double v = lua_tonumber(L, 2);
        if (!(v >= 0 && v <= MAX_N) || v != (double)(size_t)v)
            return dl_lua_fail(L, "invalid: receive(n) takes an integer from 0 to 67108864",
                               NULL);
        s->rmode = RM_N;
        s->rn = (size_t)v;
    } else if (ty == LUA_TNONE || ty == LUA_TNIL) {
        s->rmode = RM_LINE;
    } else if (ty == LUA_TSTRING) {
        const char *p = lua_tostring(L, 2);
        if (strcmp(p, "*l") == 0 || strcmp(p, "l") == 0)
            s->rmode = RM_LINE;
        else if (strcmp(p, "*a") == 0 || strcmp(p, "a") == 0)
            s->rmode = RM_ALL;
        else
            return dl_lua_fail(L, "invalid: receive takes a byte count, \"*l\" or \"*a\"", NULL);
    } else {
        return dl_lua_fail(L, "invalid: receive takes a byte count, \"*l\" or \"*a\"", NULL);
    }
    const char *bad = read_error(s, t);
    if (bad)
        return dl_lua_fail(L, bad, NULL);
    if (s->rmode == RM_N && s->rn == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    s->rd = NULL;
    s->scan = 0;
    return start_read(L, s, t, 1);
}

/* reader([size]): upvalue 1 the socket, upvalue 2 the reader's state */
static int l_reader(lua_State *L)
{
    sock_t *s = ((sock_ud_t *)lua_touserdata(L, lua_upvalueindex(1)))->s;
    reader_t *rd = lua_touserdata(L, lua_upvalueindex(2));
    dl_task_t *t = dl_task_current(L);
    size_t size = 0;
    if (!lua_isnoneornil(L, 1)) {
        double v = lua_tonumber(L, 1);
        if (lua_type(L, 1) != LUA_TNUMBER || !(v >= 1 && v <= MAX_N) ||
            v != (double)(size_t)v)
            return dl_lua_fail(L, "invalid: a reader's size must be an integer from 1 to "
                                  "67108864", NULL);
        size = (size_t)v;
    }
    const char *bad = read_error(s, t);
    if (bad)
        return dl_lua_fail(L, bad, NULL);
    if (rd->gen != s->gen) { /* a new connection: the reader starts afresh */
        rd->mid = 0;
        rd->pending_nil = 0;
        rd->gen = s->gen;
    }
    s->rmode = RM_UNTIL;
    s->rn = size;
    s->rd = rd;
    s->scan = 0;
    return start_read(L, s, t, lua_upvalueindex(1));
}

/* sock:receiveuntil(pattern, [{inclusive = bool}]) -> reader */
static int l_receiveuntil(lua_State *L)
{
    sock_t *s = check_sock(L);
    size_t pl;
    if (lua_type(L, 2) != LUA_TSTRING)
        return dl_lua_fail(L, "invalid: receiveuntil's pattern must be a string", NULL);
    const char *p = lua_tolstring(L, 2, &pl);
    if (pl == 0 || pl > MAX_PATTERN)
        return dl_lua_fail(L, "invalid: receiveuntil's pattern must be 1 to 4096 bytes", NULL);
    int inclusive = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "inclusive");
        inclusive = lua_toboolean(L, -1);
        lua_pop(L, 1);
    } else if (!lua_isnoneornil(L, 3)) {
        return dl_lua_fail(L, "invalid: receiveuntil's options must be a table", NULL);
    }
    lua_pushvalue(L, 1);
    /* the pattern, then its failure table, 2-byte aligned */
    size_t fail_at = (sizeof(reader_t) + pl + 1) & ~(size_t)1;
    reader_t *rd = lua_newuserdata(L, fail_at + pl * sizeof(uint16_t));
    memset(rd, 0, sizeof(*rd));
    rd->fail = (uint16_t *)((char *)rd + fail_at);
    kmp_table(p, pl, rd->fail);
    rd->plen = pl;
    rd->inclusive = inclusive;
    rd->gen = s->gen;
    memcpy(rd->pat, p, pl);
    luaL_getmetatable(L, READER_MT);
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_reader, 2);
    return 1;
}

/* ============================================================ writing */

/* Appends the send data at idx (a string, a number or an array of them, nested). */
static const char *flatten(lua_State *L, int idx, dl_buf_t *out, int depth)
{
    int ty = lua_type(L, idx);
    if (ty == LUA_TSTRING || ty == LUA_TNUMBER) {
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        dl_buf_append(out, p, n);
        return NULL;
    }
    if (ty != LUA_TTABLE)
        return "invalid: send takes a string or an array of strings";
    if (depth >= MAX_SEND_DEPTH)
        return "invalid: send's array nests too deep";
    int n = (int)lua_objlen(L, idx);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        const char *bad = flatten(L, lua_gettop(L), out, depth + 1);
        lua_pop(L, 1);
        if (bad)
            return bad;
    }
    return NULL;
}

static void on_written(dl_out_conn_t *c, int status, void *arg)
{
    (void)c;
    sock_t *s = arg;
    if (s->wtask == NULL) { /* before it parked: l_send returns it */
        s->wdone = 1;
        s->wstatus = status;
        return;
    }
    uv_timer_stop(&s->tm->w);
    if (status != 0) {
        shut(s, "closed");
        return;
    }
    lua_pushinteger(s->wtask->co, (lua_Integer)s->wlen);
    resume_op(&s->wtask, &s->wpin, 1);
}

static void on_write_timer(uv_timer_t *tmr)
{
    tm_t *tm = tmr->data;
    sock_t *s = tm->s;
    if (s == NULL || s->wtask == NULL)
        return;
    shut(s, "timeout"); /* a send cut short leaves the stream unusable */
}

static void cancel_write(void *data)
{
    sock_t *s = data;
    dl_task_t *t = s->wtask;
    s->wtask = NULL;
    unpin(t, &s->wpin);
    /* the write cannot be taken back: the connection goes */
    drop(s);
}

/* sock:send(data) -> bytes | nil, err */
static int l_send(lua_State *L)
{
    sock_t *s = check_sock(L);
    dl_task_t *t = dl_task_current(L);
    dl_buf_t out = DL_BUF_INIT;
    const char *bad = flatten(L, 2, &out, 0);
    if (bad == NULL && out.oom)
        bad = "invalid: out of memory for the data";
    if (bad) {
        dl_buf_free(&out);
        return dl_lua_fail(L, bad, NULL);
    }
    bad = use_error(s, t);
    if (bad == NULL && (s->conn == NULL || s->connecting))
        bad = "closed";
    if (bad == NULL && s->wtask)
        bad = "invalid: the socket is already being written by another coroutine";
    if (bad) {
        dl_buf_free(&out);
        return dl_lua_fail(L, bad, NULL);
    }
    if (out.len == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    s->wdone = 0;
    s->wlen = out.len;
    int rc = dl_out_write(s->conn, out.data, out.len, on_written, s);
    dl_buf_free(&out);
    if (s->conn == NULL) /* the failure closed it already (a parked reader heard of it) */
        return dl_lua_fail(L, "closed", NULL);
    if (rc != 0 || (s->wdone && s->wstatus != 0)) {
        char e[260], msg[260];
        snprintf(msg, sizeof(msg), "%s", conn_err(s->conn, e, sizeof(e)));
        lua_pushvalue(L, 1); /* holds the userdata while a parked reader is resumed */
        shut(s, "closed");
        return dl_lua_fail(L, msg, NULL);
    }
    if (s->wdone) {
        lua_pushinteger(L, (lua_Integer)s->wlen);
        return 1;
    }
    s->wtask = t;
    s->wpin = pin(L, 1);
    uv_timer_start(&s->tm->w, on_write_timer, s->send_ms, 0);
    dl_task_park(t, cancel_write, s);
    return lua_yield(L, 0);
}

/* ============================================================ the rest */

/* sock:settimeouts(connect_ms, send_ms, read_ms): nil keeps a value */
static int l_settimeouts(lua_State *L)
{
    sock_t *s = check_sock(L);
    uint64_t *slots[3] = {&s->connect_ms, &s->send_ms, &s->read_ms};
    double v[3];
    for (int i = 0; i < 3; i++) {
        int ty = lua_type(L, 2 + i);
        v[i] = -1;
        if (ty == LUA_TNIL || ty == LUA_TNONE)
            continue;
        v[i] = lua_tonumber(L, 2 + i);
        if (ty != LUA_TNUMBER || !(v[i] >= 1 && v[i] <= MAX_TIMEOUT_MS))
            return dl_lua_fail(L, "invalid: timeouts must be numbers of milliseconds from 1 to "
                                  "86400000", NULL);
    }
    for (int i = 0; i < 3; i++)
        if (v[i] >= 0)
            *slots[i] = (uint64_t)v[i];
    lua_pushinteger(L, 1);
    return 1;
}

/* sock:settimeout(ms): all three */
static int l_settimeout(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 2);
    return l_settimeouts(L);
}

/* sock:setkeepalive([idle_ms, [pool_size]]) -> 1 | nil, err; the socket is closed after */
static int l_setkeepalive(lua_State *L)
{
    sock_t *s = check_sock(L);
    dl_task_t *t = dl_task_current(L);
    const char *bad = use_error(s, t);
    if (bad)
        return dl_lua_fail(L, bad, NULL);
    if (s->conn == NULL || s->connecting)
        return dl_lua_fail(L, "closed", NULL);
    if (s->ctask || s->rtask || s->wtask)
        return dl_lua_fail(L, "invalid: the socket is busy (another coroutine is using it)",
                           NULL);
    dl_out_limits_t lim = s->lim;
    for (int i = 0; i < 2; i++) {
        int ty = lua_type(L, 2 + i);
        if (ty == LUA_TNIL || ty == LUA_TNONE)
            continue;
        double v = lua_tonumber(L, 2 + i);
        double hi = i == 0 ? MAX_TIMEOUT_MS : 100000;
        if (ty != LUA_TNUMBER || !(v >= 0 && v <= hi) || v != (double)(long)v ||
            (i == 1 && v < 1))
            return dl_lua_fail(L, i == 0 ? "invalid: setkeepalive's idle time must be an "
                                           "integer of milliseconds from 0 to 86400000"
                                         : "invalid: setkeepalive's pool size must be an "
                                           "integer from 1 to 100000", NULL);
        if (i == 0)
            lim.idle_ms = (uint64_t)v; /* 0: kept until the pool's own limits */
        else
            lim.max_idle = (int)v;
    }
    if (rb_len(s) || s->conn->in.len || s->mid_readers > 0 || s->conn->status != 0 ||
        s->conn->eof) {
        const char *why = s->conn->status != 0 || s->conn->eof
                              ? "closed"
                              : s->mid_readers > 0
                                    ? "invalid: a receiveuntil reader is inside a part (not "
                                      "kept; closed)"
                                    : "invalid: unread data on the connection (not kept; "
                                      "closed)";
        drop(s);
        return dl_lua_fail(L, why, NULL);
    }
    dl_out_conn_t *c = s->conn;
    s->conn = NULL;
    dl_out_on_read(c, NULL, NULL);
    drop(s);
    dl_out_pool_release(c, 1, &lim); /* last: a waiter may take it and run at once */
    lua_pushinteger(L, 1);
    return 1;
}

/* sock:close() -> 1 | nil, "closed" */
static int l_close(lua_State *L)
{
    sock_t *s = check_sock(L);
    dl_task_t *t = dl_task_current(L);
    const char *bad = use_error(s, t);
    if (bad && s->owned)
        return dl_lua_fail(L, bad, NULL);
    if (s->conn == NULL && !s->connecting)
        return dl_lua_fail(L, "closed", NULL);
    lua_pushvalue(L, 1); /* holds the userdata while parked tasks are resumed */
    shut(s, "closed");
    lua_pushinteger(L, 1);
    return 1;
}

/* sock:getreusedtimes() -> count | nil, "closed" */
static int l_getreusedtimes(lua_State *L)
{
    sock_t *s = check_sock(L);
    if (s->conn == NULL || s->connecting)
        return dl_lua_fail(L, "closed", NULL);
    lua_pushinteger(L, s->conn->reused);
    return 1;
}

static int l_gc(lua_State *L)
{
    sock_ud_t *u = luaL_checkudata(L, 1, SOCK_MT);
    sock_t *s = u->s;
    if (s == NULL)
        return 0;
    u->s = NULL;
    /* a parked task pins the userdata: none is left by now */
    s->ctask = s->rtask = s->wtask = NULL;
    drop(s);
    dl_buf_free(&s->rbuf);
    dl_free(s);
    return 0;
}

static int l_tostring(lua_State *L)
{
    sock_ud_t *u = luaL_checkudata(L, 1, SOCK_MT);
    sock_t *s = u->s;
    const char *st = s == NULL              ? "freed"
                     : s->connecting       ? "connecting"
                     : s->conn             ? "open"
                                           : "closed";
    if (s && s->conn)
        lua_pushfstring(L, "devloop.TcpSocket (%s %s)", st, s->label);
    else
        lua_pushfstring(L, "devloop.TcpSocket (%s)", st);
    return 1;
}

/* socket_core.tcp() -> a new socket */
static int l_tcp(lua_State *L)
{
    sock_ud_t *u = lua_newuserdata(L, sizeof(*u));
    u->s = NULL;
    luaL_getmetatable(L, SOCK_MT);
    lua_setmetatable(L, -2);
    sock_t *s = dl_calloc(1, sizeof(*s));
    if (s == NULL)
        return luaL_error(L, "out of memory");
    s->connect_ms = s->send_ms = s->read_ms = DEFAULT_TIMEOUT_MS;
    s->cpin = s->rpin = s->wpin = LUA_NOREF;
    dl_buf_init(&s->rbuf);
    dl_list_init(&s->res.link);
    dl_task_t *t = dl_task_current(L);
    if (t)
        s->scope = t->scope;
    u->s = s;
    return 1;
}

static const luaL_Reg sock_methods[] = {
    {"connect", l_connect},
    {"send", l_send},
    {"receive", l_receive},
    {"receiveuntil", l_receiveuntil},
    {"settimeouts", l_settimeouts},
    {"settimeout", l_settimeout},
    {"setkeepalive", l_setkeepalive},
    {"close", l_close},
    {"getreusedtimes", l_getreusedtimes},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"tcp", l_tcp},
    {NULL, NULL},
};

int luaopen_devloop_socket_core(lua_State *L)
{
    if (luaL_newmetatable(L, SOCK_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, sock_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newmetatable(L, READER_MT);
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
