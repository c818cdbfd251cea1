/*
 * lua_middleware.c - the runtime's own middleware in C. api.cors and the
 * app-wide api.rate_limit are declared from Lua while an app loads
 * (core._cors, core._rate_limit: scripts/devloop/cors.lua and ratelimit.lua
 * check the options) and applied to every request before any Lua runs
 * (dl_vm_native_phases): a preflight answered, a request counted by its
 * address. The Lua side keeps what only Lua can do (an origin function, a
 * key function, the Redis store) and calls the primitives below per request,
 * so both report through the same fields of the answer (core/response.c).
 * Why native: docs/middleware.md.
 */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cache/rate_limit.h"
#include "cache/shared_dict.h"
#include "common/hdr_lines.h"
#include "common/log.h"
#include "common/metrics.h"
#include "core/cors.h"
#include "core/forwarded.h"
#include "core/response.h"
#include "lua/lua_error.h"
#include "lua/lua_vm_internal.h"

/* ================================================================= load */

static dl_gen_t *loading(lua_State *L, const char *what)
{
    dl_vm_t *vm = dl_vm_of(L);
    if (vm == NULL || vm->loading == NULL)
        luaL_error(L, "%s can only be declared while the app loads", what);
    return vm->loading;
}

static const char *opt_string(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the table keeps the string alive */
    return s;
}

static int opt_bool(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    int b = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

/*
 * core._cors(cfg, app) -> policy | nil, err: cfg as cors.lua's compile made it
 * ({any, by_fn, origins = {lower-case...}, credentials, methods, headers,
 * expose, max_age}); app: the app's own (api.cors), else a route's. The
 * generation loading owns the policy.
 */
int dl__cors(lua_State *L)
{
    dl_gen_t *g = loading(L, "api.cors");
    luaL_checktype(L, 1, LUA_TTABLE);
    int app = lua_toboolean(L, 2);
    if (app && g->cors)
        return dl_lua_fail(L, "api.cors is declared twice: an app has one (a route's own is "
                              "its cors option)", NULL);
    dl_cors_spec_t s = {0};
    s.any = opt_bool(L, 1, "any");
    s.by_fn = opt_bool(L, 1, "by_fn");
    s.credentials = opt_bool(L, 1, "credentials");
    s.methods = opt_string(L, 1, "methods");
    s.headers = opt_string(L, 1, "headers");
    s.expose = opt_string(L, 1, "expose");
    lua_getfield(L, 1, "max_age");
    s.max_age = (unsigned)lua_tonumber(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "origins");
    int ot = lua_gettop(L);
    int n = lua_istable(L, ot) ? (int)lua_objlen(L, ot) : 0;
    const char **origins = n ? lua_newuserdata(L, sizeof(char *) * (size_t)n) : NULL;
    size_t *lens = n ? lua_newuserdata(L, sizeof(size_t) * (size_t)n) : NULL;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, ot, i + 1);
        origins[i] = lua_tolstring(L, -1, &lens[i]);
        lua_pop(L, 1); /* the origins table keeps it */
        if (origins[i] == NULL)
            return luaL_error(L, "cors origins[%d] is not a string", i + 1);
    }
    s.origins = origins;
    s.origin_lens = lens;
    s.n_origins = n;
    dl_cors_t *p = dl_cors_new(&s);
    if (p == NULL)
        return luaL_error(L, "out of memory");
    dl_cors_set_next(p, g->policies);
    g->policies = p;
    if (app)
        g->cors = p;
    lua_pushlightuserdata(L, p);
    return 1;
}

/* The metrics a limit counts into (the Lua limiter defines the same). */
static void rate_metrics(const dl_lua_host_t *h, int *refused, int *failed)
{
    static const char *const label[] = {"limiter"};
    *refused = *failed = -1;
    if (h == NULL || h->metrics == NULL)
        return;
    *refused = dl_metric_define(h->metrics, DL_METRIC_COUNTER, "rate_limit_refused_total",
                                "Requests answered 429 by a rate limit", label, 1, NULL, 0);
    *failed = dl_metric_define(h->metrics, DL_METRIC_COUNTER, "rate_limit_store_errors_total",
                               "Rate limit checks whose store could not be reached", label, 1,
                               NULL, 0);
}

/*
 * core._rate_limit(cfg) -> true when the app-wide limit cfg ({limit,
 * window, name, on_error}, checked by ratelimit.lua; counted by req.ip in
 * api.shared) is counted in C from now on; false when it cannot be (no
 * runtime dictionary, or the app has one already): the Lua hook counts it.
 */
int dl__rate_limit(lua_State *L)
{
    dl_gen_t *g = loading(L, "api.rate_limit");
    dl_vm_t *vm = dl_vm_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *name = opt_string(L, 1, "name");
    const char *on_error = opt_string(L, 1, "on_error");
    lua_getfield(L, 1, "limit");
    lua_getfield(L, 1, "window");
    double limit = lua_tonumber(L, -2), window = lua_tonumber(L, -1);
    lua_pop(L, 2);
    if (g->rate || vm->host == NULL || vm->host->shared_dict == NULL || name == NULL ||
        strlen(name) > 100 || !(limit >= 1) || !(window >= 1 && window <= 4e9)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    dl_app_rate_t *r = dl_calloc(1, sizeof(*r));
    if (r == NULL)
        return luaL_error(L, "out of memory");
    r->limit = limit;
    r->window_s = (uint32_t)window;
    r->closed = on_error && strcmp(on_error, "closed") == 0;
    snprintf(r->name, sizeof(r->name), "%s", name);
    /* the Lua limiter's counter names (ratelimit.lua): "rl:NAME:ADDRESS:" */
    r->base_len = (size_t)snprintf(r->base, sizeof(r->base), "rl:%s:", name);
    rate_metrics(vm->host, &r->refused_id, &r->failed_id);
    g->rate = r;
    lua_pushboolean(L, 1);
    return 1;
}

/* ============================================================ per request */

/* The clocks a limit reads, from the loop's time: the wall clock is read
 * at most once per loop millisecond, not per request (a clock read costs
 * as much as the rest of the count on some virtual machines). */
static void limit_clocks(dl_vm_t *vm, double *unix_s, uint64_t *mono_ms)
{
    if (vm->host->loop == NULL) {
        *unix_s = dl_clock_unix();
        *mono_ms = dl_clock_ms();
        return;
    }
    uint64_t skew = (uint64_t)__atomic_load_n(&dl_clock_skew_ms, __ATOMIC_RELAXED);
    uint64_t now = uv_now(vm->host->loop);
    if (now != vm->clock_loop_ms || vm->clock_unix == 0) {
        vm->clock_loop_ms = now;
        vm->clock_unix = dl_clock_unix() - (double)skew / 1e3;
    }
    *unix_s = vm->clock_unix + (double)skew / 1e3;
    *mono_ms = now + skew;
}

static uint32_t whole_seconds(double s)
{
    s = ceil(s);
    return s < 1 ? 1 : s > 4e9 ? 4000000000u : (uint32_t)s;
}

#define BASE_MAX (sizeof(((dl_app_rate_t *)0)->base) + DL_IP_STRLEN + 2)

/* The app limit's counter names for r: "rl:NAME:ADDRESS:" into out
 * (BASE_MAX bytes); returns the length. */
static size_t app_base(const dl_app_rate_t *rl, dl_req_t *r, char *out)
{
    const char *ip = dl_client_get(r)->ip;
    size_t iplen = strlen(ip);
    memcpy(out, rl->base, rl->base_len);
    memcpy(out + rl->base_len, ip, iplen);
    out[rl->base_len + iplen] = ':';
    return rl->base_len + iplen + 1;
}

/* The app's limit on r (its address), once per request: 0 to go on, or the
 * status to refuse it with (429; 503 when the store fails and the limit
 * fails closed) and why in msg. In-process requests (api.client) have no
 * address of their own and are not counted: the request that made them
 * was. */
int dl_vm_early_limit(dl_vm_t *vm, dl_req_t *r, char *msg, size_t msglen)
{
    dl_gen_t *g = r->gen;
    if (g == NULL || g->rate == NULL || r->rate.checked || !r->client.peer.known)
        return 0;
    r->rate.checked = 1;
    dl_app_rate_t *rl = g->rate;
    const dl_lua_host_t *h = vm->host;
    char base[BASE_MAX];
    size_t blen = app_base(rl, r, base);
    dl_rate_result_t res;
    double unix_s;
    uint64_t mono_ms;
    limit_clocks(vm, &unix_s, &mono_ms);
    int rc = dl_rate_count(h->shared_dict, base, blen, rl->limit, rl->window_s, unix_s, mono_ms,
                           &res);
    const char *labels[] = {rl->name};
    if (rc != 0) {
        if (rl->failed_id >= 0)
            dl_metric_add(h->metrics, h->worker_id, rl->failed_id, labels, 1);
        if (!rl->warned) {
            rl->warned = 1;
            dl_log(DL_LOG_WARN, "rate limit %s: its local store cannot be reached (%s); "
                   "failing %s (logged once)", rl->name, dl_strerror(rc),
                   rl->closed ? "closed" : "open");
        }
        if (!rl->closed)
            return 0;
        snprintf(msg, msglen, "rate limit store unavailable");
        return 503;
    }
    double left = floor(rl->limit - res.est);
    if (res.allowed) {
        r->rate.counted_slot = res.slot + 1;
        dl_req_rate_note(r, rl->limit, left, whole_seconds(res.to_end), 0, 0);
        return 0;
    }
    dl_req_rate_note(r, rl->limit, left, whole_seconds(res.to_end), 1,
                     dl_rate_retry_after(rl->limit, rl->window_s, res.cur, res.prev,
                                         res.covered, res.to_end));
    if (rl->refused_id >= 0)
        dl_metric_add(h->metrics, h->worker_id, rl->refused_id, labels, 1);
    snprintf(msg, msglen, "rate limit of %.0f requests per %u s reached", rl->limit,
             rl->window_s);
    return 429;
}

/* Answers r's preflight with a 204 (through the app's after hooks) when its
 * policy decides alone (no function); 1 when answered. */
static int answer_preflight(dl_req_t *r)
{
    if (dl_cors_by_fn(r->cors))
        return 0;
    dl_buf_t lines = DL_BUF_INIT;
    if (!dl_cors_preflight_lines(r, &lines) || lines.oom) {
        dl_buf_free(&lines);
        return 0;
    }
    dl_resp_t resp = {.status = 204, .headers = lines.data, .headers_len = lines.len};
    r->app = 1; /* the app's after hooks see it, as any answer it makes */
    dl_req_respond(r, &resp);
    dl_buf_free(&lines);
    return 1;
}

int dl_vm_native_phases(dl_vm_t *vm, dl_req_t *r)
{
    /* a preflight first: it carries no credentials, and one answered here
     * is not counted (one from an origin refused goes on, and is) */
    if (r->cors && r->method == DL_M_OPTIONS && answer_preflight(r))
        return 1;
    char msg[160];
    int st = dl_vm_early_limit(vm, r, msg, sizeof(msg));
    if (st == 0)
        return 0;
    r->app = 1; /* the app's after hooks see it */
    dl_req_respond_error(r, st, msg);
    return 1;
}

/* The request of the table at 1; raises when it is not one. NULL when its
 * request is done (a table kept past its answer). */
static dl_req_t *check_req(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    return dl_lua_req_of(L, 1);
}

/* core._cors_pending(req, policy) -> the Origin sent, when policy is req's
 * and its function has not judged it yet; else nil */
int dl__cors_pending(lua_State *L)
{
    dl_req_t *r = check_req(L);
    if (r == NULL || r->cors == NULL || r->cors != lua_touserdata(L, 2) ||
        r->cors_verdict != DL_CORS_UNDECIDED)
        return 0;
    size_t n;
    const char *o = dl_req_header(r, "origin", &n);
    if (o == NULL)
        return 0;
    lua_pushlstring(L, o, n);
    return 1;
}

/* core._cors_verdict(req, ok): a function's answer on req's origin */
int dl__cors_verdict(lua_State *L)
{
    dl_req_t *r = check_req(L);
    if (r && r->cors)
        dl_cors_set_verdict(r, lua_toboolean(L, 2));
    return 0;
}

/* core._cors_preflight(req, policy) -> the header table of its preflight's
 * answer, when policy is req's and req is a preflight from an origin it
 * allows; else nil */
int dl__cors_preflight(lua_State *L)
{
    dl_req_t *r = check_req(L);
    if (r == NULL || r->cors == NULL || r->cors != lua_touserdata(L, 2) ||
        r->method != DL_M_OPTIONS)
        return 0;
    dl_buf_t lines = DL_BUF_INIT;
    if (!dl_cors_preflight_lines(r, &lines) || lines.oom) {
        dl_buf_free(&lines);
        return 0;
    }
    lua_createtable(L, 0, 6);
    dl_hdr_lines_t it;
    const char *n, *v;
    size_t nl, vl;
    dl_hdr_lines_init(&it, lines.data, lines.len);
    while (dl_hdr_lines_next(&it, &n, &nl, &v, &vl)) {
        lua_pushlstring(L, n, nl);
        lua_pushlstring(L, v, vl);
        lua_rawset(L, -3);
    }
    dl_buf_free(&lines);
    return 1;
}

/*
 * core._rate_note(req, limit, window, ok, est, to_end, cur, prev, covered):
 * what a Lua-counted limit found (the Redis store, a key function, a
 * route's limit), for the answer's RateLimit-* fields and Retry-After.
 */
int dl__rate_note(lua_State *L)
{
    dl_req_t *r = check_req(L);
    double limit = luaL_checknumber(L, 2), window = luaL_checknumber(L, 3);
    int ok = lua_toboolean(L, 4);
    double est = luaL_checknumber(L, 5), to_end = luaL_checknumber(L, 6);
    if (r == NULL)
        return 0;
    uint32_t retry = 0;
    if (!ok)
        retry = dl_rate_retry_after(limit, (uint32_t)window, luaL_checknumber(L, 7),
                                    luaL_checknumber(L, 8), luaL_checknumber(L, 9), to_end);
    dl_req_rate_note(r, limit, floor(limit - est), whole_seconds(to_end), !ok, retry);
    return 0;
}

/* core._client_key(req) -> req.ip, or nil for an in-process request (no
 * address of its own): a rate limit's default key */
int dl__client_key(lua_State *L)
{
    dl_req_t *r = check_req(L);
    if (r == NULL || !r->client.peer.known)
        return 0;
    lua_pushstring(L, dl_client_get(r)->ip);
    return 1;
}

/* core._rate_undo(req): takes back the app's C-counted limit's count (a
 * later limit refused the request: refused requests are not counted) */
int dl__rate_undo(lua_State *L)
{
    dl_req_t *r = check_req(L);
    dl_vm_t *vm = dl_vm_of(L);
    if (r == NULL || r->rate.counted_slot == 0 || r->gen == NULL || r->gen->rate == NULL ||
        vm == NULL || vm->host == NULL || vm->host->shared_dict == NULL)
        return 0;
    char base[BASE_MAX];
    size_t blen = app_base(r->gen->rate, r, base);
    dl_rate_uncount(vm->host->shared_dict, base, blen, r->rate.counted_slot - 1, dl_clock_ms());
    r->rate.counted_slot = 0;
    return 0;
}
