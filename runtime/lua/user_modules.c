/*
 * user_modules.c - the embedder's Lua modules written in C: dl_add_lua_module()
 * (devloop.h) fills a process-wide list before the first runtime starts, and
 * dl_user_modules_preload() puts it in each new VM's package.preload.
 */
#include "lua/user_modules.h"

#include <lauxlib.h>
#include <string.h>

#include "common/internal.h"

#define MAX_MODULES 32

static struct {
    char name[128];
    int (*open)(lua_State *L);
} modules[MAX_MODULES];
static int n_modules;

int dl_add_lua_module(const char *name, int (*open)(lua_State *L))
{
    if (name == NULL || open == NULL || name[0] == '\0' || strlen(name) >= sizeof(modules[0].name))
        return DL_EINVAL;
    for (int i = 0; i < n_modules; i++)
        if (strcmp(modules[i].name, name) == 0) {
            modules[i].open = open;
            return 0;
        }
    if (n_modules == MAX_MODULES)
        return DL_ENOMEM;
    snprintf(modules[n_modules].name, sizeof(modules[0].name), "%s", name);
    modules[n_modules].open = open;
    n_modules++;
    return 0;
}

void dl_user_modules_preload(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (int i = 0; i < n_modules; i++) {
        lua_pushcfunction(L, modules[i].open);
        lua_setfield(L, -2, modules[i].name);
    }
    lua_pop(L, 2);
}
