/*
 * dl_http.c - the devloop.http_core Lua module: one outbound HTTP/1.1
 * exchange through the worker's client (runtime/outbound/http_client.c).
 * request(method, url, headers, body, opts) checks everything before a byte
 * is sent, parks the calling task and resumes it with
 *   status, headers, body          (buffered)
 *   status, headers, stream        (opts.stream: stream:read() per piece)
 * or nil, err, where err starts with the error's kind (timeout, connect,
 * dns, tls, protocol, too large, invalid). Header names come back lower-case;
 * repeated ones are joined with ", ", except Set-Cookie, a list. A stream
 * belongs to the task scope that opened it and is closed when that ends.
 * Options, JSON bodies, query strings and redirects are
 * scripts/devloop/http.lua's.
 */
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bindings/dl_bindings.h"
#include "common/internal.h"
#include "common/metrics.h"
#include "common/num.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "outbound/http_client.h"

#define STREAM_MT "devloop.HttpStream"
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BODY (16u * 1024 * 1024)
#define MAX_REQUEST_HEADER_BYTES (64 * 1024)
#define MAX_HOST_LABELS 200

/* One exchange, from the call to the last piece read. */
typedef struct {
    dl_task_res_t res;      /* owned by the caller's task scope while streamed */
    dl_http_x_t *x;
    dl_task_t *task;        /* parked on it, or NULL */
    const dl_lua_host_t *host;
    uint64_t start_ns;
    char label[272];        /* host:port for metrics */
    int stream, owned, counted;
    int starting;           /* inside dl_http_start(): a result is kept for later */
    int sync_done, sync_status;
    int has_ud;             /* a stream userdata points here: it frees the call */
} call_t;

typedef struct {
    call_t *call; /* NULL once closed */
} stream_ud_t;

/* ------------------------------------------------------------ metrics */

/* The pool gauges now (also set by the worker's sweep, for changes no call
 * sees: idle connections timing out, the peer closing them). */
static void pool_gauges(const dl_lua_host_t *h)
{
    if (h->http != NULL)
        dl_http_client_publish(h->http, h->metrics, h->worker_id, h->m.http_client_pool);
}

/* The host label of the metrics, bounded as the route label is: the first
 * MAX_HOST_LABELS origins a worker calls are named, later ones count as
 * "other" (an app calling URLs its users give must not grow /metrics). */
static const char *host_label(const char *label)
{
    static __thread uint32_t seen[MAX_HOST_LABELS];
    static __thread int n_seen;
    uint32_t h = dl_fnv1a(label, strlen(label)) | 1;
    for (int i = 0; i < n_seen; i++)
        if (seen[i] == h)
            return label;
    if (n_seen < MAX_HOST_LABELS) {
        seen[n_seen++] = h;
        return label;
    }
    return "other";
}

static void count(call_t *c, const char *status)
{
    const dl_lua_host_t *h = c->host;
    if (c->counted || h->metrics == NULL)
        return;
    c->counted = 1;
    const char *labels[2] = {host_label(c->label), status};
    dl_metric_add(h->metrics, h->worker_id, h->m.http_client_requests, labels, 1);
    double s = (double)(uv_hrtime() - c->start_ns) / 1e9;
    dl_metric_observe(h->metrics, h->worker_id, h->m.http_client_duration, labels, s);
    pool_gauges(h);
}

/* The kind an error text starts with ("timeout: ..." -> "timeout"). */
static void kind_of(const char *err, char *out, size_t n)
{
    size_t k = 0;
    while (err[k] && err[k] != ':' && k + 1 < n)
        k++;
    memcpy(out, err, k);
    out[k] = '\0';
}

/* ------------------------------------------------------------ results */

/* Whether a header before name (a pointer into x->hdrs) has that name; a
 * long list says yes without looking (a look each would be quadratic). */
static int seen_before(const dl_http_x_t *x, const char *name, size_t nl)
{
    if (x->n_hdrs > 32)
        return 1;
    for (const char *r = x->hdrs.data; r < name;) {
        size_t rl = strlen(r);
        if (rl == nl && memcmp(r, name, nl) == 0)
            return 1;
        r += rl + 1;
        r += strlen(r) + 1;
    }
    return 0;
}

/* Pushes the response headers as a table: names lower-case, repeated ones
 * joined with ", ", set-cookie a list (its values may hold commas). */
static void push_headers(lua_State *L, const dl_http_x_t *x)
{
    lua_createtable(L, 0, x->n_hdrs);
    int t = lua_gettop(L);
    const char *q = x->hdrs.data, *end = q + x->hdrs.len;
    for (int i = 0; i < x->n_hdrs && q < end; i++) {
        size_t nl = strlen(q);
        const char *v = q + nl + 1;
        size_t vl = strlen(v);
        /* a value's spaces and tabs at the ends are not part of it */
        size_t a = 0, b = vl;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        int is_cookie = nl == 10 && memcmp(q, "set-cookie", 10) == 0;
        lua_pushlstring(L, q, nl);
        if (!is_cookie && !seen_before(x, q, nl)) {
            lua_pushlstring(L, v + a, b - a); /* the common case: a name once */
            lua_rawset(L, t);
            q = v + vl + 1;
            continue;
        }
        lua_pushvalue(L, -1);
        lua_rawget(L, t);
        if (is_cookie) {
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_createtable(L, 1, 0);
            }
            lua_pushlstring(L, v + a, b - a);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        } else if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, v + a, b - a);
        } else {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, v + a, b - a);
            lua_concat(L, 3);
        }
        lua_rawset(L, t);
        q = v + vl + 1;
    }
}

static void stream_close(call_t *c);

/* The scope that opened a stream ended: its exchange goes; the call stays
 * for the userdata to free, unless there is none yet. */
static void release_res(dl_task_res_t *r)
{
    call_t *c = (call_t *)r;
    c->owned = 0;
    if (c->task) {
        /* a task of the scope still waits on it (a function api.with_timeout
         * gave up on runs on detached): it is told from the loop, and its
         * wake-up frees the exchange (on_done, on_piece) */
        dl_http_x_abort(c->x, "the request that opened the stream has ended");
        return;
    }
    stream_close(c);
    if (!c->has_ud)
        dl_free(c);
}

/* Pushes what the exchange gave; returns the number of values. */
static int push_result(lua_State *L, call_t *c, int status)
{
    dl_http_x_t *x = c->x;
    if (status != 0) {
        char kind[24];
        kind_of(x->err, kind, sizeof(kind));
        count(c, kind);
        lua_pushnil(L);
        lua_pushstring(L, x->err);
        stream_close(c); /* the exchange, and the scope's hold on it */
        dl_free(c);
        return 2;
    }
    char code[24];
    code[dl_num_format_i64(x->code, code)] = '\0';
    lua_pushinteger(L, x->code);
    push_headers(L, x);
    if (!c->stream) {
        count(c, code);
        lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
        dl_http_x_free(x);
        c->x = NULL;
        dl_free(c);
        return 3;
    }
    count(c, code);
    stream_ud_t *u = lua_newuserdata(L, sizeof(*u));
    u->call = c;
    c->has_ud = 1;
    luaL_getmetatable(L, STREAM_MT);
    lua_setmetatable(L, -2);
    return 3;
}

static void on_done(dl_http_x_t *x, int status, void *arg)
{
    (void)x;
    call_t *c = arg;
    if (c->starting) {
        /* failed before dl_http_start() returned (a full wait queue, a
         * connect refused at once): the caller pushes it without parking */
        c->sync_done = 1;
        c->sync_status = status;
        return;
    }
    dl_task_t *t = c->task;
    c->task = NULL;
    int n = push_result(t->co, c, status);
    dl_task_resume(t, n);
}

/* The task parked on the request is going away (shutdown). */
static void cancel_call(void *data)
{
    call_t *c = data;
    c->task = NULL;
    stream_close(c); /* disowns it too: its scope will not see it again */
    dl_free(c);
}

/* ------------------------------------------------------------ request */

/* The headers table at idx as "Name: value\r\n" lines in out; NULL or why not. */
static const char *header_lines(lua_State *L, int idx, dl_buf_t *out, char *why, size_t whylen)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    if (!lua_istable(L, idx))
        return "invalid: headers must be a table";
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t nl;
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return "invalid: header names must be strings";
        }
        const char *name = lua_tolstring(L, -2, &nl);
        if (!dl_http_token_ok(name, nl)) {
            lua_pop(L, 2);
            snprintf(why, whylen, "invalid: header name \"%.40s\" is not a token", name);
            return why;
        }
        if (dl_strncasecmp_eq(name, nl, "content-length", 14) ||
            dl_strncasecmp_eq(name, nl, "transfer-encoding", 17)) {
            lua_pop(L, 2);
            snprintf(why, whylen, "invalid: header %.40s is set by the client from the body",
                     name);
            return why;
        }
        int is_table = lua_istable(L, -1);
        int n = is_table ? (int)lua_objlen(L, -1) : 1;
        if (n != 1 && dl_strncasecmp_eq(name, nl, "host", 4)) {
            lua_pop(L, 2);
            snprintf(why, whylen, "invalid: header Host must have one value");
            return why;
        }
        for (int i = 1; i <= n; i++) {
            if (is_table)
                lua_rawgeti(L, -1, i);
            else
                lua_pushvalue(L, -1);
            int ty = lua_type(L, -1);
            if (ty != LUA_TSTRING && ty != LUA_TNUMBER) {
                lua_pop(L, 3);
                snprintf(why, whylen, "invalid: header %.40s must be a string or a number",
                         name);
                return why;
            }
            size_t vl;
            const char *v = lua_tolstring(L, -1, &vl);
            if (!dl_http_value_ok(v, vl)) {
                lua_pop(L, 3);
                snprintf(why, whylen, "invalid: header %.40s holds CR, LF, NUL or another "
                         "control character", name);
                return why;
            }
            dl_buf_append(out, name, nl);
            dl_buf_append(out, ": ", 2);
            dl_buf_append(out, v, vl);
            dl_buf_append(out, "\r\n", 2);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (out->len > MAX_REQUEST_HEADER_BYTES) {
        snprintf(why, whylen, "invalid: request headers over %d bytes", MAX_REQUEST_HEADER_BYTES);
        return why;
    }
    return out->oom ? "invalid: out of memory for the headers" : NULL;
}

/* The last URL parsed on this worker's thread: a handler calling one
 * service again and again parses its URL once (the parts depend on the
 * bytes alone). */
static __thread struct {
    size_t len, target_off;
    int target_in_url; /* else target is a constant ("/") */
    dl_http_url_t u;
    char url[256];
} last_url;

static int parse_url(const char *url, size_t ul, dl_http_url_t *u, char *why, size_t whylen)
{
    if (ul > 0 && ul == last_url.len && memcmp(url, last_url.url, ul) == 0) {
        *u = last_url.u;
        if (last_url.target_in_url)
            u->target = url + last_url.target_off;
        return 0;
    }
    if (dl_http_url_parse(url, ul, u, why, whylen) != 0)
        return -1;
    if (ul <= sizeof(last_url.url)) {
        memcpy(last_url.url, url, ul);
        last_url.len = ul;
        last_url.u = *u;
        uintptr_t t = (uintptr_t)u->target, b = (uintptr_t)url;
        last_url.target_in_url = t >= b && t <= b + ul;
        last_url.target_off = last_url.target_in_url ? (size_t)(u->target - url) : 0;
    }
    return 0;
}

/* opts[name] as a number of milliseconds or bytes; dflt when absent. */
static int opt_number(lua_State *L, int opts, const char *name, double dflt, double max,
                      double *out, char *why, size_t whylen)
{
    *out = dflt;
    if (opts == 0)
        return 0;
    lua_getfield(L, opts, name);
    int ty = lua_type(L, -1);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (ty != LUA_TNUMBER || !(v >= 0) || v > max) {
        snprintf(why, whylen, "invalid: opts.%s must be a number from 0 to %.0f", name, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int opt_bool(lua_State *L, int opts, const char *name, int dflt)
{
    if (opts == 0)
        return dflt;
    lua_getfield(L, opts, name);
    int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* An idempotent method (RFC 9110 9.2.2): sent again on a dead kept connection. */
static int idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0 || strcmp(m, "TRACE") == 0;
}

/* http_core.request(method, url, headers, body, opts) */
static int l_http_request(lua_State *L)
{
    size_t ml, ul, bl = 0;
    const char *method = luaL_checklstring(L, 1, &ml);
    const char *url = luaL_checklstring(L, 2, &ul);
    const char *body = lua_isnoneornil(L, 4) ? NULL : luaL_checklstring(L, 4, &bl);
    int opts = lua_istable(L, 5) ? 5 : 0;
    if (!lua_isnoneornil(L, 5) && opts == 0)
        return luaL_argerror(L, 5, "opts must be a table");
    const dl_lua_host_t *h = dl_lua_host(L);
    dl_task_t *t = dl_task_current(L);
    if (h == NULL || h->http == NULL || t == NULL)
        return dl_lua_fail(L, "invalid: api.http can only run inside a handler, a job or a "
                              "start hook while serving", NULL);
    char why[320];
    if (ml == 0 || ml > 20 || !dl_http_token_ok(method, ml))
        return dl_lua_fail(L, "invalid: the method must be a token of 1 to 20 characters", NULL);
    if (ml == 7 && memcmp(method, "CONNECT", 7) == 0)
        /* its 2xx answer has no end: the connection becomes a tunnel */
        return dl_lua_fail(L, "invalid: CONNECT is not an HTTP exchange (a tunnel is a socket)",
                           NULL);
    dl_http_url_t u;
    if (parse_url(url, ul, &u, why, sizeof(why)) != 0)
        return dl_lua_fail(L, why, NULL);
    double timeout, connect_timeout, max_body;
    if (opt_number(L, opts, "timeout", DEFAULT_TIMEOUT_MS, 86400000, &timeout, why,
                   sizeof(why)) ||
        opt_number(L, opts, "connect_timeout", 0, 86400000, &connect_timeout, why,
                   sizeof(why)) ||
        opt_number(L, opts, "max_body", DEFAULT_MAX_BODY, 1e15, &max_body, why, sizeof(why)))
        return dl_lua_fail(L, why, NULL);
    if (timeout < 1)
        /* no deadline at all would let a silent peer hold the call for ever */
        return dl_lua_fail(L, "invalid: opts.timeout must be a number from 1 to 86400000", NULL);
    int stream = opt_bool(L, opts, "stream", 0);
    if (stream && !dl_task_scope_alive(t))
        return dl_lua_fail(L, "invalid: the request (job, start hook) this code ran for has "
                              "ended: a stream opened now would belong to nothing", NULL);
    dl_http_req_t r;
    memset(&r, 0, sizeof(r));
    r.body_fd = -1;
    r.method = method;
    r.url = &u;
    r.body = body;
    r.body_len = bl;
    r.timeout_ms = (uint64_t)timeout;
    r.connect_timeout_ms = (uint64_t)connect_timeout;
    r.max_body = (size_t)max_body;
    r.stream = stream;
    if (r.stream) {
        /* a streamed body is read piece by piece: only a max_body given bounds it */
        int given = 0;
        if (opts) {
            lua_getfield(L, opts, "max_body");
            given = !lua_isnil(L, -1);
            lua_pop(L, 1);
        }
        if (!given)
            r.max_body = SIZE_MAX;
    }
    r.decode = opt_bool(L, opts, "decode", 1);
    r.head_only = strcmp(method, "HEAD") == 0;
    r.idempotent = idempotent(method);
    r.tls_verify = 1;
    if (opts) {
        lua_getfield(L, opts, "tls");
        if (lua_istable(L, -1)) {
            int tt = lua_gettop(L);
            lua_getfield(L, tt, "verify");
            if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
                return dl_lua_fail(L, "invalid: tls.verify must be true or false", NULL);
            if (!lua_isnil(L, -1))
                r.tls_verify = lua_toboolean(L, -1);
            lua_getfield(L, tt, "ca");
            lua_getfield(L, tt, "server_name");
            if (!lua_isnil(L, -2) && lua_type(L, -2) != LUA_TSTRING)
                return dl_lua_fail(L, "invalid: tls.ca must be a file name (a string)", NULL);
            if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
                return dl_lua_fail(L, "invalid: tls.server_name must be a string", NULL);
            size_t cl = 0, sl = 0;
            r.tls_ca = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &cl) : NULL;
            r.tls_server_name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &sl) : NULL;
            /* the strings stay on the stack (tls table and its fields) until the call returns */
            if (cl > 255 || sl > 253)
                return dl_lua_fail(L, "invalid: tls.ca must be at most 255 bytes and "
                                      "tls.server_name 253", NULL);
            for (size_t i = 0; r.tls_server_name && i < sl; i++)
                if ((unsigned char)r.tls_server_name[i] <= 0x20 ||
                    (unsigned char)r.tls_server_name[i] >= 0x7f)
                    return dl_lua_fail(L, "invalid: tls.server_name holds a space, a control "
                                          "character or a byte over 0x7e", NULL);
        } else if (!lua_isnil(L, -1)) {
            return dl_lua_fail(L, "invalid: opts.tls must be a table", NULL);
        }
    }
    dl_buf_t lines = DL_BUF_INIT;
    const char *bad = header_lines(L, 3, &lines, why, sizeof(why));
    if (bad) {
        dl_buf_free(&lines);
        return dl_lua_fail(L, bad, NULL);
    }
    if (opts) {
        /* a body sent from disk a piece at a time (uploads of any size) */
        lua_getfield(L, opts, "body_file");
        if (!lua_isnil(L, -1)) {
            size_t pl;
            const char *path = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &pl) : NULL;
            const char *no = path == NULL ? "invalid: opts.body_file must be a path"
                             : body ? "invalid: opts.body_file and a body together"
                             : strlen(path) != pl ? "invalid: opts.body_file holds a NUL"
                                                  : NULL;
            struct stat st;
            /* O_NONBLOCK: opening a FIFO would wait for a writer, on the loop */
            int fd = no ? -1 : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            if (!no && (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
                if (fd >= 0)
                    close(fd);
                snprintf(why, sizeof(why), "invalid: opts.body_file %.200s is not a readable "
                         "file", path);
                no = why;
            }
            if (no) {
                dl_buf_free(&lines);
                return dl_lua_fail(L, no, NULL);
            }
            r.body_fd = fd;
            r.body_file_size = (uint64_t)st.st_size;
        }
        lua_pop(L, 1);
    }
    r.headers = lines.data;
    r.headers_len = lines.len;
    call_t *c = dl_calloc(1, sizeof(*c));
    if (c == NULL) {
        dl_buf_free(&lines);
        if (r.body_fd >= 0)
            close(r.body_fd);
        return dl_lua_fail(L, "invalid: out of memory", NULL);
    }
    c->host = h;
    c->stream = r.stream;
    c->start_ns = uv_hrtime();
    memcpy(c->label, u.label, u.label_len + 1);
    c->starting = 1;
    int rc = dl_http_start(h->http, &r, on_done, c, &c->x);
    c->starting = 0;
    dl_buf_free(&lines);
    if (rc != 0) {
        if (r.body_fd >= 0)
            close(r.body_fd);
        dl_free(c);
        return dl_lua_fail(L, "invalid: out of memory", NULL);
    }
    if (c->stream) {
        /* the scope owns the exchange until the stream is closed */
        c->res.close = release_res;
        dl_task_own(t, &c->res);
        c->owned = 1;
    }
    if (c->sync_done)
        return push_result(L, c, c->sync_status);
    c->task = t;
    dl_task_park(t, cancel_call, c);
    return lua_yield(L, 0);
}

/* ------------------------------------------------------------ streams */

static void stream_close(call_t *c)
{
    if (c == NULL)
        return;
    if (c->owned) {
        dl_task_disown(&c->res);
        c->owned = 0;
    }
    if (c->task) /* still parked on it: the task is going away */
        c->task = NULL;
    int had = c->x != NULL;
    dl_http_x_free(c->x);
    c->x = NULL;
    if (had && c->stream)
        pool_gauges(c->host); /* a streamed connection went back or away */
    /* the userdata, if any, still points here: it is told by x == NULL */
}

static call_t *check_stream(lua_State *L)
{
    stream_ud_t *u = luaL_checkudata(L, 1, STREAM_MT);
    return u->call;
}

static void on_piece(dl_http_x_t *x, int status, void *arg)
{
    (void)x;
    call_t *c = arg;
    dl_task_t *t = c->task;
    c->task = NULL;
    lua_State *co = t->co;
    if (status != 0) {
        lua_pushnil(co);
        lua_pushstring(co, c->x->err);
        if (!c->owned)
            stream_close(c); /* its scope is gone: nothing else would free it */
        dl_task_resume(t, 2);
        return;
    }
    if (c->x->body.len) {
        lua_pushlstring(co, c->x->body.data, c->x->body.len);
        dl_buf_reset(&c->x->body);
        dl_task_resume(t, 1);
        return;
    }
    lua_pushnil(co); /* the end */
    dl_task_resume(t, 1);
}

static void cancel_read(void *data)
{
    call_t *c = data;
    c->task = NULL;
    stream_close(c); /* the exchange now, while the client exists; the userdata frees c */
}

/* stream:read() -> piece | nil (the end) | nil, err */
static int l_stream_read(lua_State *L)
{
    call_t *c = check_stream(L);
    if (c == NULL || c->x == NULL)
        return dl_lua_fail(L, "invalid: the stream is closed", NULL);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || !dl_task_in_scope(t, c->res.scope))
        return dl_lua_fail(L, "invalid: the stream belongs to another request", NULL);
    if (c->task)
        return dl_lua_fail(L, "invalid: the stream is already being read", NULL);
    int rc = dl_http_x_read(c->x, on_piece, c);
    if (rc < 0)
        return dl_lua_fail(L, c->x->err, NULL);
    if (rc == 1) {
        if (c->x->body.len) {
            lua_pushlstring(L, c->x->body.data, c->x->body.len);
            dl_buf_reset(&c->x->body);
            return 1;
        }
        lua_pushnil(L);
        return 1;
    }
    c->task = t;
    dl_task_park(t, cancel_read, c);
    return lua_yield(L, 0);
}

/* The userdata's call, ended and freed. */
static void let_go(stream_ud_t *u)
{
    if (u->call == NULL)
        return;
    stream_close(u->call);
    dl_free(u->call);
    u->call = NULL;
}

/* stream:close(): the connection is not kept (the body was not read whole). */
static int l_stream_close(lua_State *L)
{
    stream_ud_t *u = luaL_checkudata(L, 1, STREAM_MT);
    if (u->call && u->call->task)
        return luaL_error(L, "the stream is being read");
    let_go(u);
    return 0;
}

static int l_stream_gc(lua_State *L)
{
    stream_ud_t *u = luaL_checkudata(L, 1, STREAM_MT);
    if (u->call && u->call->task == NULL)
        let_go(u);
    return 0;
}

static int l_stream_tostring(lua_State *L)
{
    stream_ud_t *u = luaL_checkudata(L, 1, STREAM_MT);
    lua_pushfstring(L, "devloop.HttpStream (%s)", u->call && u->call->x ? "open" : "closed");
    return 1;
}

static const luaL_Reg stream_methods[] = {
    {"read", l_stream_read},
    {"close", l_stream_close},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"request", l_http_request},
    {NULL, NULL},
};

int luaopen_devloop_http_core(lua_State *L)
{
    if (luaL_newmetatable(L, STREAM_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, stream_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_stream_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_stream_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
