/*
 * user_modules.h - the embedder's Lua modules written in C
 * (dl_add_lua_module() of devloop.h): a process-wide list that every VM's
 * host preloads (lua_host.h's preload), served or only checked.
 */
#ifndef DL_USER_MODULES_H
#define DL_USER_MODULES_H

#include <lua.h>

/** Adds the modules registered with dl_add_lua_module() to L's package.preload. */
void dl_user_modules_preload(lua_State *L);

#endif /* DL_USER_MODULES_H */
