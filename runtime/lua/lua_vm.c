/*
 * lua_vm.c - one LuaJIT state per worker: its creation (the standard
 * libraries, the devloop modules, the runtime's Lua library) and its end, and
 * its generations: the routes of one load, current or retired, each pinned by
 * the requests routed in it until the last one ends.
 *
 * The rest of the layer: lua_load.c loads an app folder into a generation,
 * lua_dispatch.c turns a request into a task and its return values into a
 * response, lua_task.c runs and resumes tasks, lua_request.c is the request
 * table, lua_routes.c declares routes, lua_errtext.c shows a raised value and
 * lua_state.c finds a state's VM (lua_state.h: what they all share).
 */
#include "lua/lua_vm.h"

#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "core/cors.h"
#include "core/request.h"
#include "lua/embedded.h"
#include "lua/lua_error.h"
#include "common/internal.h"
#include "core/upload.h"
#include "lua/lua_vm_internal.h"

/* ======================================================= module loading */

/* package.preload loader for the embedded Lua library (or DEVLOOP_SCRIPTS_DIR). */
static int load_embedded(lua_State *L)
{
    const dl_embedded_t *e = lua_touserdata(L, lua_upvalueindex(1));
    const char *dir = getenv("DEVLOOP_SCRIPTS_DIR");
    if (dir && *dir) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->file);
        if (luaL_loadfile(L, path) != 0)
            return lua_error(L);
    } else {
        char name[256];
        snprintf(name, sizeof(name), "=[devloop]/%s", e->file);
        if (luaL_loadbuffer(L, e->data, e->len, name) != 0)
            return lua_error(L);
    }
    lua_pushstring(L, e->module);
    lua_call(L, 1, 1);
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

extern int luaopen_cjson(lua_State *L);

/* __newindex of a module's environment: modules may not create globals. */
static int env_newindex(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    luaL_where(L, 1);
    lua_pushfstring(L, "assignment to undeclared global '%s' (declare it local)",
                    k ? k : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

dl_vm_t *dl_vm_new(const dl_lua_host_t *host)
{
    dl_vm_t *vm = dl_calloc(1, sizeof(*vm));
    if (vm == NULL)
        return NULL;
    vm->host = host;
    dl_list_init(&vm->tasks);
    dl_list_init(&vm->owned);
    dl_list_init(&vm->spare_tasks);
    vm->co_pool = dl_calloc(DL_CO_POOL_MAX, sizeof(lua_State *));
    vm->co_pool_refs = dl_calloc(DL_CO_POOL_MAX, sizeof(int));
    lua_State *L = vm->L = luaL_newstate();
    if (L == NULL || vm->co_pool == NULL || vm->co_pool_refs == NULL) {
        if (L)
            lua_close(L);
        dl_free(vm->co_pool);
        dl_free(vm->co_pool_refs);
        dl_free(vm);
        return NULL;
    }
    luaL_openlibs(L);
    dl_vm_attach(L, vm);
    dl_json_init_markers(L);

    preload(L, "cjson", luaopen_cjson);
    for (const dl_lua_module_t *m = host ? host->modules : NULL; m && m->name; m++)
        preload(L, m->name, m->open); /* the devloop.* bindings, by the host's table */
    if (host && host->preload)
        host->preload(L); /* the embedder's (dl_add_lua_module) */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (const dl_embedded_t *e = dl_embedded_scripts; e->module; e++) {
        lua_pushlightuserdata(L, (void *)e);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, e->module);
    }
    lua_pop(L, 2);

    /* the request metatable: lazy fields come from devloop.core */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, dl__req_index);
    lua_setfield(L, -2, "__index");
    vm->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, 0, 2);
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, env_newindex);
    lua_setfield(L, -2, "__newindex");
    vm->env_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* math.random differs per process and worker (LuaJIT's default seed is
     * fixed: two processes would draw the same "random" ids) */
    {
        uint64_t seed[4];
        dl_prng_seed(seed);
        lua_getglobal(L, "math");
        lua_getfield(L, -1, "randomseed");
        lua_pushnumber(L, (lua_Number)(seed[0] % 4294967291ULL));
        lua_call(L, 1, 0);
        lua_pop(L, 1);
    }
    /* the runtime's Lua library loads once per VM, before any app module, so
     * its state (coalescing tables, TTL presets) outlives reloads */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "devloop");
    if (lua_pcall(L, 1, 0, 0) != 0) {
        dl_log(DL_LOG_ERROR, "cannot load the devloop Lua library: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return vm;
}

/* =========================================================== generations */

void dl_gen_free(dl_vm_t *vm, dl_gen_t *g)
{
    if (g == NULL)
        return;
    dl_route_t *r = g->routes;
    while (r) {
        dl_route_t *next = r->next;
        if (vm->L) {
            luaL_unref(vm->L, LUA_REGISTRYINDEX, r->handler_ref);
            if (r->precheck_ref)
                luaL_unref(vm->L, LUA_REGISTRYINDEX, r->precheck_ref);
            if (r->after_ref)
                luaL_unref(vm->L, LUA_REGISTRYINDEX, r->after_ref);
        }
        dl_free(r->pattern);
        dl_free(r);
        r = next;
    }
    if (g->hooks_ref && vm->L)
        luaL_unref(vm->L, LUA_REGISTRYINDEX, g->hooks_ref);
    while (g->policies) {
        dl_cors_t *next = dl_cors_next(g->policies);
        dl_cors_free(g->policies);
        g->policies = next;
    }
    dl_free(g->rate);
    dl_router_free(g->router);
    dl_free(g);
}


void dl_vm_reap_generations(dl_vm_t *vm)
{
    dl_gen_t **pp = &vm->old;
    int freed = 0;
    while (*pp) {
        dl_gen_t *g = *pp;
        if (g->refs == 0) {
            *pp = g->next_old;
            dl_gen_free(vm, g);
            freed = 1;
        } else {
            pp = &g->next_old;
        }
    }
    /* the old handlers' closures are garbage now: collect them while idle */
    if (freed && vm->L)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
}

void dl_vm_unpin(dl_vm_t *vm, dl_req_t *req)
{
    dl_gen_t *g = req->gen;
    if (g == NULL)
        return;
    req->gen = NULL;
    req->route = NULL;
    g->refs--;
    if (g->refs == 0 && g != vm->gen)
        dl_vm_reap_generations(vm);
}

void dl_vm_free(dl_vm_t *vm)
{
    if (vm == NULL)
        return;
    dl_vm_cancel_tasks(vm);
    dl_gen_free(vm, vm->gen);
    dl_gen_free(vm, vm->loading);
    while (vm->old) {
        dl_gen_t *g = vm->old;
        vm->old = g->next_old;
        dl_gen_free(vm, g);
    }
    lua_close(vm->L);
    vm->L = NULL;
    while (!dl_list_empty(&vm->spare_tasks)) {
        dl_task_t *t = dl_list_entry(vm->spare_tasks.next, dl_task_t, link);
        dl_list_remove(&t->link);
        dl_free(t);
    }
    dl_buf_free(&vm->scratch);
    dl_buf_free(&vm->resp_hdrs);
    dl_buf_free(&vm->resp_ctype);
    dl_free(vm->co_pool);
    dl_free(vm->co_pool_refs);
    dl_free(vm);
}

/* ================================================================ routing */

void dl_vm_route(dl_vm_t *vm, dl_req_t *req)
{
    req->body_limit = vm->host->cfg->max_body;
    if (vm->gen == NULL) {
        req->route_status = DL_ROUTE_NOT_FOUND;
        return;
    }
    req->route_status = dl_router_match(vm->gen->router, req->method, req->head.data,
                                        req->path_len, &req->match);
    /* pinned, routed or not: the app's hooks, CORS policy and limit apply
     * to a 404 too, and live as long as the generation */
    req->gen = vm->gen;
    vm->gen->refs++;
    req->cors = vm->gen->cors;
    if (req->route_status == DL_ROUTE_FOUND) {
        req->route = req->match.data;
        if (req->route->cors)
            req->cors = req->route->cors; /* a route's own replaces the app's */
        if (req->route->body_limit)
            req->body_limit = req->route->body_limit;
        req->upload_limit = req->route->upload_limit;
    }
}

int dl_vm_precheck(dl_vm_t *vm, dl_req_t *req, char *msg, size_t msglen)
{
    if (req->route == NULL || req->route->precheck_ref == 0)
        return 0;
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->route->precheck_ref);
    size_t alen;
    const char *authz = dl_req_header(req, "authorization", &alen);
    if (authz)
        lua_pushlstring(L, authz, alen);
    else
        lua_pushnil(L);
    int status = 0;
    if (lua_pcall(L, 1, 2, 0) != 0) {
        dl_log_req(DL_LOG_ERROR, req->id, "%s: check before the body failed: %s",
                   req->route->pattern, lua_tostring(L, -1));
    } else if (lua_type(L, -2) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, -2);
        if (v >= 400 && v <= 599)
            status = (int)v;
        snprintf(msg, msglen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "refused");
    }
    lua_settop(L, top);
    return status;
}

