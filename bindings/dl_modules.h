/*
 * dl_modules.h - the devloop.* modules of bindings/ as one table, for a Lua
 * host's modules (lua/lua_host.h). The VM preloads what its host lists and
 * names no binding itself: the bindings call the VM, never the other way.
 */
#ifndef DL_MODULES_H
#define DL_MODULES_H

#include "lua/lua_host.h"

/** devloop.core, .codec, .crypto, .cache_core, .redis_core, .db_core and
 *  .metrics_core, ended by {NULL, NULL}. */
extern const dl_lua_module_t dl_modules_builtin[];

#endif /* DL_MODULES_H */
