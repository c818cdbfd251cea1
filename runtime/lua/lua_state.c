/*
 * lua_state.c - how a Lua state finds its VM, its host and the task running
 * on it, and the markers a handler's return values may carry. Everything in
 * the Lua layer and the bindings reaches the VM this way.
 */
#include "lua/lua_state.h"

#include <string.h>

char dl__gzip_body_marker;
char dl__not_routed_marker;
char dl__after_done_marker;
char dl__file_body_marker;
char dl__stream_marker;
static char vm_key; /* registry: lightuserdata(&vm_key) -> lightuserdata(vm) */

void dl_vm_attach(lua_State *L, dl_vm_t *vm)
{
    lua_pushlightuserdata(L, &vm_key);
    lua_pushlightuserdata(L, vm);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

dl_vm_t *dl_vm_of(lua_State *L)
{
    lua_pushlightuserdata(L, &vm_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    dl_vm_t *vm = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return vm;
}

const dl_lua_host_t *dl_lua_host(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    return vm && vm->host && vm->host->loop ? vm->host : NULL;
}

dl_task_t *dl_task_current(lua_State *L)
{
    dl_task_t *t = lua_getexdata(L);
    return (t && t->co == L) ? t : NULL;
}

const char *dl_vm_app_relative(const dl_vm_t *vm, const char *path)
{
    size_t n = strlen(vm->app_dir);
    if (n > 0 && strncmp(path, vm->app_dir, n) == 0 && path[n] == '/')
        return path + n + 1;
    return path;
}
