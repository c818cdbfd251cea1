/*
 * dl_shared.c - the devloop.shared_core Lua module behind api.shared
 * (scripts/devloop/shared.lua): get, set, add, incr, delete and ttl on the
 * process's shared dictionary (runtime/cache/shared_dict.h), which the host
 * hands every worker's VM. Every call finishes at once (memory, one shard's
 * mutex), so it never yields and works wherever Lua runs: routes, jobs,
 * start hooks, timers. The dictionary is taken from the host when the module
 * is opened and kept as an upvalue, so a call costs no registry lookup; a VM
 * that is only checked gets a small one of its own. Misuse (a key that
 * is not a string, a table value, a bad ttl or increment) raises naming the
 * argument ("bad argument #2 to 'api.shared.set' (...)"); a failure the caller may meet in normal use (absent, exists, not
 * a number, too large, a key of 0 or more than 65535 bytes) is nil, message,
 * name (runtime/lua/lua_error.h).
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <uv.h>

#include "bindings/dl_bindings.h"
#include "cache/rate_limit.h"
#include "cache/shared_dict.h"
#include "common/internal.h"
#include "lua/lua_error.h"
#include "lua/lua_host.h"

/* ten years, as api.cache (bindings/dl_cache.c) */
#define MAX_TTL_S (10.0 * 365 * 86400)

/* Raises "bad argument #idx to 'api.shared.NAME' (msg)": named from the
 * closure, not the call site, which a tail call (return api.shared.set(...))
 * would hide. */
static int arg_error(lua_State *L, int idx, const char *msg)
{
    return luaL_error(L, "bad argument #%d to 'api.shared.%s' (%s)", idx,
                      lua_tostring(L, lua_upvalueindex(2)), msg);
}

static int type_error(lua_State *L, int idx, const char *want)
{
    return arg_error(L, idx,
                     lua_pushfstring(L, "%s expected, got %s", want, luaL_typename(L, idx)));
}

static dl_shdict_t *dict_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* The key at 1: a string (numbers are not turned into strings: "1" and 1
 * would be one key). NULL after pushing nil, message, name when its length
 * is outside 1..65535. */
static const char *check_key(lua_State *L, size_t *len)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        type_error(L, 1, "string");
    return lua_tolstring(L, 1, len);
}

static int bad_key(lua_State *L, size_t len)
{
    return dl_lua_fail(L, len == 0 ? "empty key" : "key too long (more than 65535 bytes)",
                       "EINVAL");
}

/* A ttl in seconds at idx (none or nil: 0, no expiry) in milliseconds; a
 * positive one below 1 ms is 1 ms, never "no expiry". */
static uint64_t check_ttl(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TNUMBER)
        type_error(L, idx, "number of seconds");
    lua_Number s = lua_tonumber(L, idx);
    if (!(s >= 0) || s > MAX_TTL_S)
        arg_error(L, idx, "ttl must be 0 (no expiry) or a number of seconds up to ten years");
    uint64_t ms = (uint64_t)ceil(s * 1000.0);
    return ms;
}

static double check_finite_or_inf(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        type_error(L, idx, "number");
    lua_Number n = lua_tonumber(L, idx);
    if (n != n)
        arg_error(L, idx, what);
    return n;
}

static int fail_status(lua_State *L, int rc)
{
    switch (rc) {
    case DL_ENOENT:
        return dl_lua_fail(L, "not found", "ENOENT");
    case DL_EDUPKEY:
        return dl_lua_fail(L, "exists", "EEXIST");
    case DL_ETOOBIG:
        return dl_lua_fail(L, "too large (larger than one shard's part of DEVLOOP_SHARED_MAX)",
                           "ETOOBIG");
    default:
        return dl_lua_fail_status(L, rc, NULL);
    }
}

/* shared.get(key) -> value | nil */
static int l_get(lua_State *L)
{
    dl_shdict_t *d = dict_of(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    if (klen == 0 || klen > DL_SHDICT_MAX_KEY)
        return bad_key(L, klen);
    dl_buf_t out = DL_BUF_INIT;
    dl_shdict_value_t v;
    int rc = dl_shdict_get(d, key, klen, dl_clock_ms(), &v, &out);
    if (rc == DL_ENOENT) {
        lua_pushnil(L);
        return 1;
    }
    if (rc == 0) {
        if (v.type == DL_SHV_NUMBER)
            lua_pushnumber(L, v.num);
        else if (v.type == DL_SHV_BOOLEAN)
            lua_pushboolean(L, v.b);
        else
            lua_pushlstring(L, out.data ? out.data : "", out.len);
    }
    dl_buf_free(&out);
    return rc == 0 ? 1 : fail_status(L, rc);
}

/* set and add: key, value (string, number, boolean), ttl seconds */
static int store(lua_State *L, int flags)
{
    dl_shdict_t *d = dict_of(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    dl_shdict_value_t v = {0, 0, 0, NULL, 0};
    switch (lua_type(L, 2)) {
    case LUA_TSTRING:
        v.type = DL_SHV_STRING;
        v.str = lua_tolstring(L, 2, &v.len);
        break;
    case LUA_TNUMBER:
        v.type = DL_SHV_NUMBER;
        v.num = lua_tonumber(L, 2);
        break;
    case LUA_TBOOLEAN:
        v.type = DL_SHV_BOOLEAN;
        v.b = lua_toboolean(L, 2);
        break;
    default:
        return type_error(L, 2, "string, number or boolean");
    }
    uint64_t ttl = check_ttl(L, 3);
    if (klen == 0 || klen > DL_SHDICT_MAX_KEY)
        return bad_key(L, klen);
    int rc = dl_shdict_set(d, key, klen, &v, ttl, flags, dl_clock_ms());
    if (rc != 0)
        return fail_status(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* shared.set(key, value, ttl?) -> true | nil, err, name */
static int l_set(lua_State *L)
{
    return store(L, 0);
}

/* shared.add(key, value, ttl?) -> true | nil, "exists", "EEXIST" */
static int l_add(lua_State *L)
{
    return store(L, DL_SHDICT_ADD);
}

/* shared.incr(key, n, init?, init_ttl?) -> new value | nil, err, name */
static int l_incr(lua_State *L)
{
    dl_shdict_t *d = dict_of(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    double delta = check_finite_or_inf(L, 2, "increment is NaN");
    double init = 0;
    int has_init = !lua_isnoneornil(L, 3);
    if (has_init)
        init = check_finite_or_inf(L, 3, "init is NaN");
    uint64_t ttl = check_ttl(L, 4);
    if (!has_init && ttl != 0)
        arg_error(L, 4, "init_ttl needs init");
    if (klen == 0 || klen > DL_SHDICT_MAX_KEY)
        return bad_key(L, klen);
    double out;
    int rc = dl_shdict_incr(d, key, klen, delta, has_init ? &init : NULL, ttl, dl_clock_ms(), &out);
    if (rc == DL_EINVAL)
        return dl_lua_fail(L, "not a number", "EINVAL");
    if (rc != 0)
        return fail_status(L, rc);
    lua_pushnumber(L, out);
    return 1;
}

/* shared.delete(key) -> true (whether or not it was there) */
static int l_delete(lua_State *L)
{
    dl_shdict_t *d = dict_of(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    if (klen == 0 || klen > DL_SHDICT_MAX_KEY)
        return bad_key(L, klen);
    dl_shdict_delete(d, key, klen, dl_clock_ms());
    lua_pushboolean(L, 1);
    return 1;
}

/* shared.ttl(key) -> seconds left (0: no expiry) | nil, "not found", "ENOENT" */
static int l_ttl(lua_State *L)
{
    dl_shdict_t *d = dict_of(L);
    size_t klen;
    const char *key = check_key(L, &klen);
    if (klen == 0 || klen > DL_SHDICT_MAX_KEY)
        return bad_key(L, klen);
    uint64_t left;
    int rc = dl_shdict_ttl(d, key, klen, dl_clock_ms(), &left);
    if (rc != 0)
        return fail_status(L, rc);
    lua_pushnumber(L, (double)left / 1000.0);
    return 1;
}

/* shared.stats() -> {bytes, entries, max_bytes, evictions, shards} */
static int l_stats(lua_State *L)
{
    dl_shdict_t *d = dict_of(L);
    dl_shdict_stats_t st;
    dl_shdict_stats(d, &st);
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (double)st.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushnumber(L, (double)st.entries);
    lua_setfield(L, -2, "entries");
    lua_pushnumber(L, (double)st.max_bytes);
    lua_setfield(L, -2, "max_bytes");
    lua_pushnumber(L, (double)st.evictions);
    lua_setfield(L, -2, "evictions");
    lua_pushnumber(L, (double)st.shards);
    lua_setfield(L, -2, "shards");
    return 1;
}

/* shared._rate_count(base, limit, window) -> allowed, est, to_end, cur,
 * prev, covered, slot | nil, err, name: one request counted by
 * runtime/cache/rate_limit.h's sliding window (ratelimit.lua's local store) */
static int l_rate_count(lua_State *L)
{
    size_t blen;
    const char *base = luaL_checklstring(L, 1, &blen);
    double limit = luaL_checknumber(L, 2), window = luaL_checknumber(L, 3);
    luaL_argcheck(L, limit >= 1, 2, "a limit from 1");
    luaL_argcheck(L, window >= 1 && window <= 4e9, 3, "a window of 1 s or more");
    dl_rate_result_t r;
    int rc = dl_rate_count(dict_of(L), base, blen, limit, (uint32_t)window, dl_clock_unix(),
                           dl_clock_ms(), &r);
    if (rc != 0)
        return fail_status(L, rc);
    lua_pushboolean(L, r.allowed);
    lua_pushnumber(L, r.est);
    lua_pushnumber(L, r.to_end);
    lua_pushnumber(L, r.cur);
    lua_pushnumber(L, r.prev);
    lua_pushnumber(L, r.covered);
    lua_pushnumber(L, (double)r.slot);
    return 7;
}

/* shared._rate_uncount(base, slot): a count taken back */
static int l_rate_uncount(lua_State *L)
{
    size_t blen;
    const char *base = luaL_checklstring(L, 1, &blen);
    dl_rate_uncount(dict_of(L), base, blen, (int64_t)luaL_checknumber(L, 2), dl_clock_ms());
    return 0;
}

static const luaL_Reg funcs[] = {
    {"get", l_get},       {"set", l_set}, {"add", l_add},     {"incr", l_incr},
    {"delete", l_delete}, {"ttl", l_ttl}, {"stats", l_stats},
    {"_rate_count", l_rate_count}, {"_rate_uncount", l_rate_uncount}, {NULL, NULL},
};

/* A VM without the runtime's dictionary (`devloop check`, the check before
 * a reload) gets a small one of its own, freed with the VM: an app may seed
 * values while it loads (as init_by_lua does with lua_shared_dict), and a
 * check runs that code too. */
#define CHECK_DICT_MAX (1u << 20)

static int private_gc(lua_State *L)
{
    dl_shdict_t **p = lua_touserdata(L, 1);
    dl_shdict_free(*p);
    *p = NULL;
    return 0;
}

static dl_shdict_t *private_dict(lua_State *L)
{
    dl_shdict_t **p = lua_newuserdata(L, sizeof(*p));
    *p = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, private_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    *p = dl_shdict_new(CHECK_DICT_MAX);
    if (*p == NULL)
        luaL_error(L, "out of memory");
    return *p;
}

int luaopen_devloop_shared_core(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    dl_shdict_t *d = h ? h->shared_dict : NULL;
    if (d == NULL)
        d = private_dict(L); /* on the stack: each function keeps it alive */
    else
        lua_pushnil(L);
    int keep = lua_gettop(L);
    lua_createtable(L, 0, DL_ARRAY_SIZE(funcs) - 1);
    for (const luaL_Reg *f = funcs; f->name; f++) {
        lua_pushlightuserdata(L, d);
        lua_pushstring(L, f->name);
        lua_pushvalue(L, keep);
        lua_pushcclosure(L, f->func, 3);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
