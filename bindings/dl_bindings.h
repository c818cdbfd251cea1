/*
 * dl_bindings.h - the luaopen_devloop_* entry points of the Lua modules in
 * bindings/, one per file. dl_modules.c names them for package.preload.
 */
#ifndef DL_BINDINGS_H
#define DL_BINDINGS_H

#include <lua.h>

/** devloop.codec: json_encode/json_decode, msgpack_encode/msgpack_decode,
 *  null, array(t), object(t). Returns 1 (the module table). */
int luaopen_devloop_codec(lua_State *L);
int luaopen_devloop_core(lua_State *L);
int luaopen_devloop_crypto(lua_State *L);
int luaopen_devloop_cache_core(lua_State *L);
int luaopen_devloop_redis_core(lua_State *L);
int luaopen_devloop_db_core(lua_State *L);
int luaopen_devloop_metrics_core(lua_State *L);
int luaopen_devloop_http_core(lua_State *L);
int luaopen_devloop_socket_core(lua_State *L);
int luaopen_devloop_shared_core(lua_State *L);
int luaopen_devloop_pubsub_core(lua_State *L);

#endif /* DL_BINDINGS_H */
