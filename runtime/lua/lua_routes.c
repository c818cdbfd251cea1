/*
 * lua_routes.c - core._route: a route declared while an app loads (api.get,
 * api.post, ...) goes into the router of the generation being loaded, with
 * its options (body_limit, upload, the head-only check of its auth).
 */
#include <lauxlib.h>

#include "core/upload.h"
#include "lua/lua_error.h"
#include "lua/lua_state.h"

/* Keeps the pipeline function of the hooks table at idx for the VM's
 * dispatch (one registry read per request instead of a field lookup). */
static void keep_pipeline(lua_State *L, dl_vm_t *vm, int idx)
{
    if (vm->pipeline_ref != 0)
        return;
    lua_getfield(L, idx, "pipeline");
    if (lua_isfunction(L, -1))
        vm->pipeline_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
}

/* core._route(methods_mask, pattern, opts, handler) -> true | nil, err */
int dl__route(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    unsigned methods = (unsigned)luaL_checkinteger(L, 1);
    const char *pattern = luaL_checkstring(L, 2);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    if (vm == NULL || vm->loading == NULL) {
        return dl_lua_fail(L, "routes can only be declared while the app loads", NULL);
    }
    size_t body_limit = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "body_limit");
        if (!lua_isnil(L, -1)) {
            lua_Number v = lua_tonumber(L, -1);
            if (v <= 0) {
                return dl_lua_fail(L, "body_limit must be a positive number of bytes", NULL);
            }
            body_limit = (size_t)v;
        }
        lua_pop(L, 1);
    }
    /* upload = true | {max_bytes = N}: multipart bodies streamed to files */
    size_t upload_limit = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "upload");
        if (lua_toboolean(L, -1)) {
            upload_limit = DL_UPLOAD_DEFAULT_MAX;
            if (lua_istable(L, -1)) {
                lua_getfield(L, -1, "max_bytes");
                if (!lua_isnil(L, -1)) {
                    lua_Number v = lua_tonumber(L, -1);
                    if (v <= 0) {
                        return dl_lua_fail(
                            L, "upload.max_bytes must be a positive number of bytes", NULL);
                    }
                    upload_limit = (size_t)v;
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    dl_route_t *r = dl_calloc(1, sizeof(*r));
    if (r == NULL || (r->pattern = dl_strdup(pattern)) == NULL) {
        dl_free(r);
        return luaL_error(L, "out of memory");
    }
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "_precheck"); /* set by scripts/devloop/routing.lua for auth */
        if (lua_isfunction(L, -1))
            r->precheck_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "_after"); /* {fn...; run_after = fn}: routing.lua */
        if (lua_istable(L, -1)) {
            keep_pipeline(L, vm, lua_gettop(L));
            r->after_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        } else {
            lua_pop(L, 1);
        }
    }
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "_cors"); /* core._cors's policy: routing.lua */
        r->cors = lua_touserdata(L, -1);
        lua_pop(L, 1);
    }
    r->body_limit = body_limit;
    r->upload_limit = upload_limit;
    char err[256];
    int rc = dl_router_add(vm->loading->router, methods, pattern, r, err, sizeof(err));
    if (rc != 0) {
        if (r->precheck_ref)
            luaL_unref(L, LUA_REGISTRYINDEX, r->precheck_ref);
        if (r->after_ref)
            luaL_unref(L, LUA_REGISTRYINDEX, r->after_ref);
        dl_free(r->pattern);
        dl_free(r);
        return dl_lua_fail(L, err, NULL);
    }
    lua_pushvalue(L, 4);
    r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    r->next = vm->loading->routes;
    vm->loading->routes = r;
    lua_pushboolean(L, 1);
    return 1;
}

/*
 * core._hooks() -> the hooks table of the generation loading, or nil;
 * core._hooks(tbl) makes tbl ({before = {...}, after = {...}, pipeline,
 * run_after}: hooks.lua) that table and notes which lists have hooks.
 */
int dl__hooks(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    if (vm == NULL || vm->loading == NULL)
        return luaL_error(L, "hooks (api.before, api.after, api.cors, api.rate_limit) can only be "
                             "declared while the app loads");
    dl_gen_t *g = vm->loading;
    if (lua_isnoneornil(L, 1)) {
        if (g->hooks_ref)
            lua_rawgeti(L, LUA_REGISTRYINDEX, g->hooks_ref);
        else
            lua_pushnil(L);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    keep_pipeline(L, vm, 1);
    if (g->hooks_ref == 0) {
        lua_pushvalue(L, 1);
        g->hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_getfield(L, 1, "before");
    g->has_before = lua_istable(L, -1) && lua_objlen(L, -1) > 0;
    lua_getfield(L, 1, "after");
    g->has_after = lua_istable(L, -1) && lua_objlen(L, -1) > 0;
    lua_pop(L, 2);
    return 0;
}
