/*
 * lua_dispatch.c - from the request core into Lua and back: a routed request
 * becomes a task running its handler with the request table (lua_request.c),
 * and the handler's return values, or the error it raised, become the
 * answer. dl_vm_handler() hands these to the core (core/request.h).
 */
#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "common/num.h"
#include "lua/lua_vm.h"
#include "lua/lua_vm_internal.h"

/* ============================================================== responses */

typedef struct {
    dl_resp_t resp;
    dl_buf_t *hdrs;     /* header lines; the VM's buffer, reused across responses */
    dl_buf_t *ctype;    /* the Content-Type value, any length; also the VM's */
    char err[160];      /* why the headers were refused, naming the header */
} resp_build_t;

/* What a header name is, once judged: a token the runtime does not set. */
enum { NAME_FIELD = 1, NAME_CONTENT_TYPE, NAME_CACHE_CONTROL };

/* Names judged before on this thread (each worker has its own), by their
 * exact bytes: answers set the same few names again and again, and judging
 * one (dl_http_token_ok, dl_resp_header_reserved) costs several times
 * finding it here. Only names that passed are kept, and a hit compares
 * every byte, so the cache never lets by a name that was not judged. A
 * new name takes the slot of the old one. */
#define NAME_SLOTS 64
#define NAME_CACHED_MAX 30
typedef struct {
    uint8_t len; /* 0: empty */
    uint8_t kind;
    char name[NAME_CACHED_MAX];
} name_slot_t;
static _Thread_local name_slot_t name_cache[NAME_SLOTS];

/* name's kind, or 0 when it is not a token; -1 when the runtime sets it */
static int name_kind(const char *name, size_t nlen)
{
    name_slot_t *slot = NULL;
    if (nlen > 0 && nlen <= NAME_CACHED_MAX) {
        slot = &name_cache[dl_fnv1a(name, nlen) & (NAME_SLOTS - 1)];
        if (slot->len == nlen && memcmp(slot->name, name, nlen) == 0)
            return slot->kind;
    }
    if (!dl_http_token_ok(name, nlen))
        return 0;
    if (dl_resp_header_reserved(name, nlen))
        return -1;
    int kind = dl_strncasecmp_eq(name, nlen, "content-type", 12)    ? NAME_CONTENT_TYPE
               : dl_strncasecmp_eq(name, nlen, "cache-control", 13) ? NAME_CACHE_CONTROL
                                                                     : NAME_FIELD;
    if (slot) {
        memcpy(slot->name, name, nlen);
        slot->len = (uint8_t)nlen;
        slot->kind = (uint8_t)kind;
    }
    return kind;
}

/* Whether v may hold a byte dl_http_value_ok refuses (a control: below 0x20,
 * or 0x7f); only then is it asked. Eight bytes at a time: every value of
 * every answer passes here. */
static int value_suspect(const char *v, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, x;
        memcpy(&w, v + i, 8);
        x = w ^ (ones * 0x7f); /* a 0x7f byte becomes 0 */
        /* a byte below 0x20 in w, or a zero byte in x, sets a high bit */
        if ((((w - ones * 0x20) & ~w) | ((x - ones) & ~x)) & highs)
            return 1;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

/* Reads the handler's headers table at idx into rb; returns an error message or NULL. */
static const char *collect_headers(lua_State *co, int idx, resp_build_t *rb)
{
    int ht = lua_type(co, idx);
    if (ht == LUA_TNIL || ht == LUA_TNONE)
        return NULL;
    if (ht != LUA_TTABLE) {
        snprintf(rb->err, sizeof(rb->err), "headers must be a table, got %s",
                 lua_typename(co, ht));
        return rb->err;
    }
    lua_pushnil(co);
    while (lua_next(co, idx) != 0) {
        size_t nlen, vlen;
        if (lua_type(co, -2) != LUA_TSTRING) {
            lua_pop(co, 2);
            return "header names must be strings";
        }
        const char *name = lua_tolstring(co, -2, &nlen);
        int kind = name_kind(name, nlen);
        if (kind == 0) {
            lua_pop(co, 2);
            return "a header name is not a token (letters, digits and !#$%&'*+-.^_`|~)";
        }
        if (kind < 0) {
            snprintf(rb->err, sizeof(rb->err), "header %.*s is set by the runtime, not by handlers",
                     (int)DL_MIN(nlen, 40), name);
            lua_pop(co, 2);
            return rb->err;
        }
        /* one value read where lua_next left it; a list's, each pushed */
        int vt = lua_type(co, -1);
        int is_table = vt == LUA_TTABLE;
        int nvals = is_table ? (int)lua_objlen(co, -1) : 1;
        for (int i = 1; i <= nvals; i++) {
            int t = vt;
            if (is_table) {
                lua_rawgeti(co, -1, i);
                t = lua_type(co, -1);
            }
            if (t != LUA_TSTRING && t != LUA_TNUMBER) {
                snprintf(rb->err, sizeof(rb->err), "header %.*s: values must be strings or "
                         "numbers, not %s", (int)DL_MIN(nlen, 40), name, lua_typename(co, t));
                lua_pop(co, is_table ? 3 : 2);
                return rb->err;
            }
            const char *v;
            char num[24];
            lua_Number d = t == LUA_TNUMBER ? lua_tonumber(co, -1) : 0;
            /* range first: NaN and huge values never reach the cast */
            if (t == LUA_TNUMBER && d > -9e15 && d < 9e15 && d == (lua_Number)(int64_t)d) {
                /* a whole number (a count, a Retry-After): formatted here,
                 * not by Lua's "%.14g" */
                vlen = dl_num_format_i64((int64_t)d, num);
                v = num;
            } else {
                /* a number becomes a string in its slot: a value slot, never
                 * the key lua_next goes on from */
                v = lua_tolstring(co, -1, &vlen);
            }
            if (value_suspect(v, vlen) && !dl_http_value_ok(v, vlen)) {
                snprintf(rb->err, sizeof(rb->err), "header %.*s: its value contains a control "
                         "character", (int)DL_MIN(nlen, 40), name);
                lua_pop(co, is_table ? 3 : 2);
                return rb->err;
            }
            if (kind == NAME_CONTENT_TYPE) {
                /* sent in its own place; a later value replaces an earlier one */
                dl_buf_reset(rb->ctype);
                dl_buf_append(rb->ctype, v, vlen);
                rb->resp.content_type = rb->ctype->data;
                rb->resp.content_type_len = vlen;
            } else {
                if (kind == NAME_CACHE_CONTROL)
                    rb->resp.has_cache_control = 1;
                dl_buf_append(rb->hdrs, name, nlen);
                dl_buf_append(rb->hdrs, ": ", 2);
                dl_buf_append(rb->hdrs, v, vlen);
                dl_buf_append(rb->hdrs, "\r\n", 2);
            }
            if (is_table)
                lua_pop(co, 1);
        }
        lua_pop(co, 1);
    }
    if (rb->hdrs->oom || rb->ctype->oom)
        return "out of memory for the response headers";
    return NULL;
}

/* ================================================================ hooks */

/* The generation whose app-wide hooks apply to req: its route's, or the one
 * serving now for a request no route took. */
static dl_gen_t *gen_of(dl_vm_t *vm, const dl_req_t *req)
{
    return req->gen ? req->gen : vm->gen;
}

/* Whether after hooks apply to req's answer. */
static int has_after(dl_vm_t *vm, const dl_req_t *req)
{
    dl_gen_t *g = gen_of(vm, req);
    return (req->route && req->route->after_ref) || (g && g->has_after);
}

/* Whether req's next answer goes through its after hooks (which then need
 * its request table: it is kept until they are done). */
static int after_pending(dl_vm_t *vm, const dl_req_t *req)
{
    return req->app && !req->filtered && has_after(vm, req);
}

/* Lets go of the request table before an answer, unless after hooks will
 * take it. */
static void release_table(dl_vm_t *vm, dl_req_t *req)
{
    if (!after_pending(vm, req))
        dl_vm_release_request(vm, req);
}

/* Pushes hooks.run_after and its first three arguments (the app's hooks,
 * the route's after list, the request table) onto co; 0, or -1 with nothing
 * pushed when there is no table and it cannot be made. */
static int push_run_after(dl_vm_t *vm, dl_req_t *req, lua_State *co)
{
    dl_gen_t *g = gen_of(vm, req);
    int ref = g && g->hooks_ref ? g->hooks_ref : 0;
    int rref = req->route ? req->route->after_ref : 0;
    lua_checkstack(co, 12);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref ? ref : rref);
    lua_getfield(co, -1, "run_after");
    lua_remove(co, -2);
    if (g && g->has_after)
        lua_rawgeti(co, LUA_REGISTRYINDEX, g->hooks_ref);
    else
        lua_pushnil(co);
    if (rref)
        lua_rawgeti(co, LUA_REGISTRYINDEX, rref);
    else
        lua_pushnil(co);
    if (req->table_ref != LUA_NOREF && req->table_ref != 0 && req->table_ref != LUA_REFNIL) {
        lua_rawgeti(co, LUA_REGISTRYINDEX, req->table_ref);
        return 0;
    }
    char msg[260];
    if (dl_vm_push_request(vm, req, co, msg, sizeof(msg)) != 0) {
        lua_settop(co, lua_gettop(co) - 3);
        return -1;
    }
    return 0;
}

static void respond_500(dl_task_t *t, const char *log_msg)
{
    dl_req_t *req = t->req;
    dl_log_req(DL_LOG_ERROR, req->id, "%s %.*s: %s", req->method_name, (int)req->path_len,
               req->head.data, log_msg);
    release_table(t->vm, req);
    req->task = NULL;
    dl_req_respond_error(req, 500, NULL);
}

/* "routes/x.lua:12": the app line that raised the error in co (library
 * frames, api.fail's own, skipped); "" when there is none. */
static void raise_site(dl_vm_t *vm, lua_State *co, char *out, size_t len)
{
    lua_Debug d;
    out[0] = '\0';
    for (int level = 0; level < 20 && lua_getstack(co, level, &d); level++) {
        if (!lua_getinfo(co, "Sl", &d) || d.currentline <= 0)
            continue;
        if (strncmp(d.source, "=[devloop]/", 11) == 0)
            continue;
        const char *src = d.source[0] == '=' || d.source[0] == '@' ? d.source + 1 : d.source;
        snprintf(out, len, " at %s:%d", dl_vm_app_relative(vm, src), d.currentline);
        return;
    }
}

/*
 * A handler raised a table with a number status (api.fail(status, message,
 * details) or error({status = 404, message = "..."})): status 400-599
 * answers with it, in the runtime's error shape {"error": status text,
 * "message", "details"?, "requestId"}; the message is the app's own, shown for
 * 5xx too. Any other status is a 500 whose log line says why. 5xx are logged
 * as errors, 4xx at debug level (a refusal, not a fault).
 */
static void respond_status_error(dl_task_t *t)
{
    dl_req_t *req = t->req;
    lua_State *co = t->co;
    int e = lua_gettop(co);
    char where[320];
    raise_site(t->vm, co, where, sizeof(where));
    lua_pushliteral(co, "status");
    lua_rawget(co, e);
    lua_Number st = lua_tonumber(co, -1);
    lua_pop(co, 1);
    lua_pushliteral(co, "message");
    lua_rawget(co, e);
    if (lua_type(co, -1) != LUA_TSTRING) {
        lua_pop(co, 1);
        lua_pushliteral(co, "error");
        lua_rawget(co, e);
    }
    size_t msg_len = 0; /* the message's bytes, NULs included (api.fail(400, "a\0b")) */
    const char *msg = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &msg_len) : NULL;
    if (st != floor(st) || st < 400 || st > 599) {
        char m[1200], text[600];
        lua_pushvalue(co, e);
        dl_lua_errtext_of(t->vm->L, co, text, sizeof(text));
        snprintf(m, sizeof(m), "handler of route %s raised status %.14g, outside 400-599%s: %s",
                 req->route ? req->route->pattern : "?", (double)st, where, text);
        respond_500(t, m);
        return;
    }
    int status = (int)st;
    dl_log_req(status >= 500 ? DL_LOG_ERROR : DL_LOG_DEBUG, req->id, "%s %.*s: %d%s: %s",
               req->method_name, (int)req->path_len, req->head.data, status, where,
               msg ? msg : "(no message)");
    lua_pushliteral(co, "details");
    lua_rawget(co, e);
    dl_buf_t body = DL_BUF_INIT, d = DL_BUF_INIT;
    int with_details = 0;
    if (!lua_isnil(co, -1)) {
        char err[160];
        with_details = dl_json_encode(co, lua_gettop(co), &d, err, sizeof(err)) == 0;
        if (!with_details)
            dl_log_req(DL_LOG_ERROR, req->id, "%s %.*s: the details of a %d cannot be encoded "
                       "(sent without them): %s", req->method_name, (int)req->path_len,
                       req->head.data, status, err);
    }
    dl_resp_error_body(&body, status, msg, msg_len, req->id, with_details ? d.data : NULL, d.len);
    dl_buf_free(&d);
    dl_resp_t resp = {.status = status,
                      .content_type = "application/json",
                      .content_type_len = 16,
                      .body = body.data,
                      .body_len = body.len};
    release_table(t->vm, req);
    req->task = NULL;
    dl_req_respond(req, &resp);
    dl_buf_free(&body);
}

/* Opens the file a handler returned with api.file() and fills in its range;
 * returns an error message or NULL. Values from bi: path, marker, offset,
 * length, temporary. */
static const char *file_body(lua_State *co, int n, int bi, dl_resp_t *resp)
{
    const char *path = lua_tostring(co, bi);
    /* O_NONBLOCK: opening a FIFO would wait for a writer, on the loop */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    /* a 7th value true: a temporary copy, gone once open (the fd keeps it),
     * whether or not it can be sent */
    if (fd >= 0 && n >= bi + 5 && lua_toboolean(co, bi + 5))
        unlink(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return "cannot open the file to send";
    }
    uint64_t size = (uint64_t)st.st_size;
    /* read once, as doubles: NaN or a value past 2^63 must not reach an
     * integer cast (undefined); those and negative ones are outside any file */
    double doff = n >= bi + 3 ? lua_tonumber(co, bi + 3) : 0;
    int has_len = n >= bi + 4 && !lua_isnil(co, bi + 4);
    double dlen = has_len ? lua_tonumber(co, bi + 4) : 0;
    int bad = !(doff >= 0 && doff < 9.2e18) || !(dlen >= 0 && dlen < 9.2e18);
    uint64_t off = bad ? 0 : (uint64_t)doff;
    uint64_t len = bad ? 0 : has_len ? (uint64_t)dlen : size - DL_MIN(off, size);
    if (bad || off > size || len > size - off) {
        close(fd);
        return "file range outside the file";
    }
    resp->has_file = 1;
    resp->file_fd = fd;
    resp->file_off = off;
    resp->file_len = len;
    if (resp->content_type == NULL) {
        resp->content_type = "application/octet-stream";
        resp->content_type_len = 24;
    }
    resp->body = NULL;
    return NULL;
}

/* Why the handler's return values are not an answer, or NULL when they are
 * one. Writes the message to m. */
static const char *refused_returns(lua_State *co, int n, const char *pattern, char *m, size_t ml)
{
    /* `return false [, why]`: not an answer; a 200 "false" would hide the mistake */
    if (n >= 1 && lua_type(co, 1) == LUA_TBOOLEAN && !lua_toboolean(co, 1)) {
        if (n >= 2 && lua_type(co, 2) == LUA_TSTRING)
            snprintf(m, ml, "a handler returned false: route %s, with \"%.300s\"", pattern,
                     lua_tostring(co, 2));
        else
            snprintf(m, ml, "a handler returned false: route %s (return a body, a status "
                     "and a body, or nothing for a 204)", pattern);
        return m;
    }
    /* `return "404", "x"`: a status given as a string would be sent as the
     * body, with the next value read as headers */
    if (n >= 2 && lua_type(co, 1) == LUA_TSTRING && lua_isnumber(co, 1) && !lua_isnil(co, 2) &&
        !lua_istable(co, 2)) {
        snprintf(m, ml, "handler of route %s: status must be a number, got string \"%.40s\"",
                 pattern, lua_tostring(co, 1));
        return m;
    }
    /* `return nil, err` (Lua's failure idiom, as every api call returns it):
     * a 500 whose log line carries err */
    if (n >= 2 && lua_isnil(co, 1) && !lua_isnil(co, 2)) {
        snprintf(m, ml, "handler of route %s returned nil, %s", pattern,
                 lua_type(co, 2) == LUA_TSTRING ? lua_tostring(co, 2) : luaL_typename(co, 2));
        return m;
    }
    /* 1xx are interim answers the runtime sends itself: one given as a
     * final answer would make the next pipelined answer this one's */
    if (n >= 1 && lua_type(co, 1) == LUA_TNUMBER) {
        lua_Number s = lua_tonumber(co, 1);
        if (s != floor(s) || s < 200 || s > 599) {
            snprintf(m, ml, "handler of route %s returned status %.14g, outside 200-599",
                     pattern, (double)s);
            return m;
        }
    }
    return NULL;
}

static void answer(dl_task_t *t);

/* The main task ended: its return values become the response. */
static void finish_main(dl_task_t *t, int ok)
{
    dl_req_t *req = t->req;
    lua_State *co = t->co;
    if (!ok) {
        if (dl_lua_is_status_error(co, -1))
            respond_status_error(t);
        else
            respond_500(t, lua_tostring(co, -1));
        dl_task_free(t, 0);
        return;
    }
    if (lua_gettop(co) >= 1 && lua_touserdata(co, 1) == &dl__not_routed_marker) {
        /* no route, and no before hook answered: the runtime's 404 or 405 */
        lua_settop(co, 0);
        release_table(t->vm, req);
        req->task = NULL;
        dl_req_respond_unrouted(req);
        dl_task_free(t, 1);
        return;
    }
    answer(t);
}

/* The after hooks ended: what they return is the answer; an error in one is
 * a 500 (logged with its traceback: the hook's file and line). */
static void finish_after(dl_task_t *t, int ok)
{
    if (!ok) {
        respond_500(t, lua_tostring(t->co, -1));
        dl_task_free(t, 0);
        return;
    }
    answer(t);
}

/* The task's values become the response. After hooks have seen them in
 * the pipeline (hooks.lua marks them), or see the runtime's error answer
 * through handler_filter. */
static void answer(dl_task_t *t)
{
    dl_vm_t *vm = t->vm;
    dl_req_t *req = t->req;
    lua_State *co = t->co;
    if (lua_gettop(co) >= 1 && lua_touserdata(co, 1) == &dl__after_done_marker) {
        lua_remove(co, 1); /* the after hooks have seen it, in the pipeline */
        req->filtered = 1;
    }
    int n = lua_gettop(co);
    /* `return nil, { status = 404, message = "..." }`: the failure idiom with
     * an error table answers as api.fail would (as batch operations do) */
    if (n >= 2 && lua_isnil(co, 1) && dl_lua_is_status_error(co, 2)) {
        lua_settop(co, 2);
        respond_status_error(t);
        dl_task_free(t, 0);
        return;
    }
    char m[512];
    const char *why = refused_returns(co, n, req->route ? req->route->pattern : "?", m, sizeof(m));
    if (why)
        goto fail;
    /* api.stream: (status, fn, headers, marker); the request table stays
     * for fn, which runs once the head is sent (lua_stream.c) */
    int stream = n >= 4 && lua_type(co, 1) == LUA_TNUMBER && lua_type(co, 2) == LUA_TFUNCTION &&
                 lua_touserdata(co, 4) == &dl__stream_marker;
    if (!stream)
        release_table(vm, req);

    resp_build_t rb;
    memset(&rb.resp, 0, sizeof(rb.resp));
    rb.hdrs = &vm->resp_hdrs;
    rb.ctype = &vm->resp_ctype;
    dl_buf_reset(rb.hdrs);
    rb.resp.status = 200;
    int bi = 1;
    if (n >= 1 && lua_type(co, 1) == LUA_TNUMBER) {
        rb.resp.status = (int)lua_tonumber(co, 1);
        bi = 2;
    }
    if ((why = collect_headers(co, bi + 1, &rb)) != NULL)
        goto fail;
    rb.resp.headers = rb.hdrs->data;
    rb.resp.headers_len = rb.hdrs->len;
    if (stream) {
        if (rb.resp.content_type == NULL) {
            rb.resp.content_type = "text/plain; charset=utf-8";
            rb.resp.content_type_len = 25;
        }
        req->task = NULL;
        dl_vm_stream_start(vm, req, &rb.resp, co, 2);
        dl_task_free(t, 1);
        return;
    }
    void *marker = n >= bi + 2 && lua_type(co, bi) == LUA_TSTRING ? lua_touserdata(co, bi + 2)
                                                                   : NULL;
    if (marker == &dl__gzip_body_marker)
        rb.resp.body_gzip = 1;
    if (marker == &dl__file_body_marker) {
        if ((why = file_body(co, n, bi, &rb.resp)) != NULL)
            goto fail;
        req->task = NULL;
        dl_req_respond(req, &rb.resp);
        dl_task_free(t, 0);
        return;
    }

    dl_buf_t *out = &vm->scratch;
    dl_buf_reset(out);
    int bt = n >= bi ? lua_type(co, bi) : LUA_TNIL;
    if (bt == LUA_TNIL) {
        /* nothing, `return nil` or `return nil, nil[, headers]`: no content;
         * an explicit status with no body keeps its status */
        if (bi == 1)
            rb.resp.status = 204;
    } else if (bt == LUA_TSTRING) {
        rb.resp.body = lua_tolstring(co, bi, &rb.resp.body_len);
        if (rb.resp.content_type == NULL) {
            rb.resp.content_type = "text/plain; charset=utf-8";
            rb.resp.content_type_len = 25;
        }
    } else {
        char err[160];
        const char *ct;
        size_t ctlen;
        int rc = dl_resp_codec(req, &ct, &ctlen) == DL_CODEC_MSGPACK
                     ? dl_msgpack_encode(co, bi, out, err, sizeof(err))
                     : dl_json_encode(co, bi, out, err, sizeof(err));
        if (rb.resp.content_type == NULL) {
            rb.resp.content_type = ct;
            rb.resp.content_type_len = ctlen;
        }
        if (rc != 0) {
            snprintf(m, sizeof(m), "cannot encode the response: %s", err);
            why = m;
            goto fail;
        }
        rb.resp.body = out->data;
        rb.resp.body_len = out->len;
    }
    req->task = NULL;
    dl_req_respond(req, &rb.resp);
    /* keep the buffers unless one huge response grew them */
    if (out->cap > (1u << 20))
        dl_buf_free(out);
    if (rb.hdrs->cap > (64u << 10))
        dl_buf_free(rb.hdrs);
    if (rb.ctype->cap > (64u << 10))
        dl_buf_free(rb.ctype);
    dl_task_free(t, 1);
    return;

fail:
    respond_500(t, why);
    dl_task_free(t, 0);
}

/* =============================================================== dispatch */

static void handler_route(void *arg, dl_req_t *r)
{
    dl_vm_route(arg, r);
}

/* A request with a body, on its head: the app's limit first (a refused
 * guess at a token is counted too), then the route's check (auth). */
static int handler_precheck(void *arg, dl_req_t *r, char *msg, size_t msglen)
{
    int st = dl_vm_early_limit(arg, r, msg, msglen);
    return st ? st : dl_vm_precheck(arg, r, msg, msglen);
}

static void handler_dispatch(void *arg, dl_req_t *r)
{
    dl_vm_dispatch(arg, r);
}

static void handler_unpin(void *arg, dl_req_t *r)
{
    dl_vm_unpin(arg, r);
}

/* Pushes hooks.pipeline(handler, the app's hooks, the route's after hooks)
 * without the request: route NULL for a request no route took. */
static void push_pipeline(dl_vm_t *vm, lua_State *co, const dl_gen_t *g,
                          const dl_route_t *route)
{
    int app = g && (g->has_before || g->has_after);
    int after = route ? route->after_ref : 0;
    lua_checkstack(co, 8);
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->pipeline_ref); /* kept by lua_routes.c */
    if (route)
        lua_rawgeti(co, LUA_REGISTRYINDEX, route->handler_ref);
    else
        lua_pushnil(co);
    if (app)
        lua_rawgeti(co, LUA_REGISTRYINDEX, g->hooks_ref);
    else
        lua_pushnil(co);
    if (after)
        lua_rawgeti(co, LUA_REGISTRYINDEX, after);
    else
        lua_pushnil(co);
}

/* A request no route took: the app's CORS preflight and limit, then its
 * before hooks, then the runtime's 404 or 405. */
static int handler_unrouted(void *arg, dl_req_t *r)
{
    dl_vm_t *vm = arg;
    dl_gen_t *g = r->gen; /* pinned by the routing: its hooks run on if a reload comes */
    if (dl_vm_native_phases(vm, r))
        return 1;
    if (g == NULL || !g->has_before)
        return 0;
    dl_task_t *t = dl_task_new(vm, r);
    if (t == NULL)
        return 0;
    r->task = t;
    t->finish = finish_main;
    lua_State *co = t->co;
    push_pipeline(vm, co, g, NULL);
    char msg[260];
    int st = dl_vm_push_request(vm, r, co, msg, sizeof(msg));
    if (st != 0) {
        lua_settop(co, 0);
        r->task = NULL;
        dl_task_free(t, 1);
        dl_req_respond_error(r, st, msg);
        return 1;
    }
    dl_task_resume(t, 4);
    return 1;
}

/* Pushes a C-made answer's header lines, Content-Type and Allow as a table
 * of lower-case names (a repeated name becomes a list). */
static void push_resp_headers(lua_State *co, const dl_resp_t *resp)
{
    lua_createtable(co, 0, 4);
    int t = lua_gettop(co);
    if (resp->content_type) {
        lua_pushlstring(co, resp->content_type, resp->content_type_len);
        lua_setfield(co, t, "content-type");
    }
    if (resp->allow) {
        lua_pushstring(co, resp->allow);
        lua_setfield(co, t, "allow");
    }
    const char *n, *v;
    size_t nl, vl;
    dl_hdr_lines_t it;
    dl_hdr_lines_init(&it, resp->headers, resp->headers_len);
    while (dl_hdr_lines_next(&it, &n, &nl, &v, &vl)) {
        char name[64]; /* the runtime's own fields: short names */
        nl = DL_MIN(nl, sizeof(name));
        for (size_t i = 0; i < nl; i++)
            name[i] = (char)dl_tolower((unsigned char)n[i]);
        lua_pushlstring(co, name, nl);
        lua_pushvalue(co, -1);
        lua_rawget(co, t);
        if (lua_isnil(co, -1)) {
            lua_pop(co, 1);
            lua_pushlstring(co, v, vl);
        } else {
            if (!lua_istable(co, -1)) {
                lua_createtable(co, 2, 0);
                lua_insert(co, -2);
                lua_rawseti(co, -2, 1);
            }
            lua_pushlstring(co, v, vl);
            lua_rawseti(co, -2, (int)lua_objlen(co, -2) + 1);
        }
        lua_rawset(co, t);
    }
}

/* An answer the runtime made for the app (an error, a 404 or 405) goes
 * through the app's after hooks in a task of its own. Files and answers
 * that end the connection are sent as they are. */
static int handler_filter(void *arg, dl_req_t *r, const dl_resp_t *resp)
{
    dl_vm_t *vm = arg;
    if (!has_after(vm, r))
        return 0;
    if (resp->has_file || resp->close || resp->body_gzip) {
        dl_vm_release_request(vm, r);
        return 0;
    }
    dl_task_t *t = dl_task_new(vm, r);
    if (t == NULL) {
        dl_vm_release_request(vm, r);
        return 0;
    }
    lua_State *co = t->co;
    if (push_run_after(vm, r, co) != 0) {
        dl_task_free(t, 1);
        dl_vm_release_request(vm, r);
        return 0;
    }
    lua_pushinteger(co, resp->status);
    if (resp->body_len > 0)
        lua_pushlstring(co, resp->body, resp->body_len);
    else
        lua_pushnil(co);
    push_resp_headers(co, resp);
    r->task = t;
    t->finish = finish_after;
    dl_task_resume(t, 6);
    return 1;
}

static void handler_drained(void *arg, dl_req_t *r)
{
    dl_vm_stream_drained(arg, r);
}

void dl_vm_handler(dl_vm_t *vm, dl_handler_t *h)
{
    h->arg = vm;
    h->route = handler_route;
    h->precheck = handler_precheck;
    h->dispatch = handler_dispatch;
    h->unpin = handler_unpin;
    h->unrouted = handler_unrouted;
    h->filter = handler_filter;
    h->drained = handler_drained;
}

void dl_vm_dispatch(dl_vm_t *vm, dl_req_t *req)
{
    dl_route_t *route = req->route;
    if (dl_vm_native_phases(vm, req))
        return;
    dl_task_t *t = dl_task_new(vm, req);
    if (t == NULL) {
        dl_req_respond_error(req, 503, "out of memory");
        return;
    }
    req->task = t;
    t->finish = finish_main;
    lua_State *co = t->co;
    dl_gen_t *g = req->gen;
    int nargs = 1;
    if ((g && (g->has_before || g->has_after)) || route->after_ref) {
        push_pipeline(vm, co, g, route);
        nargs = 4;
    } else {
        lua_checkstack(co, 8);
        lua_rawgeti(co, LUA_REGISTRYINDEX, route->handler_ref);
    }
    char msg[260];
    int st = dl_vm_push_request(vm, req, co, msg, sizeof(msg));
    if (st != 0) {
        lua_settop(co, 0);
        req->task = NULL;
        dl_task_free(t, 1);
        dl_req_respond_error(req, st, msg);
        return;
    }
    dl_task_resume(t, nargs);
}
