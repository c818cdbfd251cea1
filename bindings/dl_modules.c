/*
 * dl_modules.c - the table of the devloop.* modules (dl_modules.h), which
 * runtime/server/worker.c gives every VM it runs or checks.
 */
#include "bindings/dl_modules.h"

#include "bindings/dl_bindings.h"

const dl_lua_module_t dl_modules_builtin[] = {
    {"devloop.core", luaopen_devloop_core},
    {"devloop.codec", luaopen_devloop_codec},
    {"devloop.crypto", luaopen_devloop_crypto},
    {"devloop.cache_core", luaopen_devloop_cache_core},
    {"devloop.redis_core", luaopen_devloop_redis_core},
    {"devloop.db_core", luaopen_devloop_db_core},
    {"devloop.metrics_core", luaopen_devloop_metrics_core},
    {"devloop.http_core", luaopen_devloop_http_core},
    {"devloop.socket_core", luaopen_devloop_socket_core},
    {"devloop.shared_core", luaopen_devloop_shared_core},
    {"devloop.pubsub_core", luaopen_devloop_pubsub_core},
    {NULL, NULL},
};
