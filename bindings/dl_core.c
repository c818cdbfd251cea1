/*
 * dl_core.c - the devloop.core Lua module: the primitives scripts/devloop/
 * builds the public API on. Route declaration, sleeping, parallel joins and
 * the logger. No policy lives here (STYLE.md section 6).
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <string.h>
#include <uv.h>

#include "../runtime/buf.h"
#include "../runtime/codec_json.h"
#include "../runtime/internal.h"
#include "../runtime/lua_vm.h"
#include "../runtime/worker.h"

/* ================================================================== sleep */

typedef struct {
    uv_timer_t timer;
    dl_task_t *task; /* NULL once detached */
} sleep_t;

static void on_sleep_closed(uv_handle_t *h)
{
    dl_free(h->data);
}

static void on_sleep(uv_timer_t *h)
{
    sleep_t *s = h->data;
    dl_task_t *t = s->task;
    uv_close((uv_handle_t *)h, on_sleep_closed);
    if (t)
        dl_task_resume(t, 0);
}

static void cancel_sleep(void *data)
{
    sleep_t *s = data;
    s->task = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_sleep_closed);
}

/* core.sleep(ms): parks the calling handler, never the loop. */
static int l_core_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    if (!(ms >= 0) || ms > 86400000.0)
        return luaL_argerror(L, 1, "milliseconds between 0 and 86400000 expected");
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || t->vm->worker == NULL)
        return luaL_error(L, "sleep can only be called inside a handler");
    sleep_t *s = dl_malloc(sizeof(*s));
    if (s == NULL)
        return luaL_error(L, "out of memory");
    uv_timer_init(&t->vm->worker->loop, &s->timer);
    s->timer.data = s;
    s->task = t;
    uv_timer_start(&s->timer, on_sleep, (uint64_t)ceil(ms), 0);
    dl_task_park(t, cancel_sleep, s);
    return lua_yield(L, 0);
}

/* ================================================================ logging */

/* core.log(level, msg, fields): one line, fields as JSON, tagged with the request id. */
static int l_core_log(lua_State *L)
{
    int level = (int)luaL_checkinteger(L, 1);
    size_t mlen;
    const char *msg = luaL_checklstring(L, 2, &mlen);
    if (level < dl_log_min_level)
        return 0;
    dl_task_t *t = dl_task_current(L);
    const char *id = (t && t->req) ? t->req->id : NULL;
    if (lua_isnoneornil(L, 3)) {
        dl_log_write(level, id, "%s", msg);
        return 0;
    }
    dl_buf_t b = DL_BUF_INIT;
    char err[128];
    if (dl_json_encode(L, 3, &b, err, sizeof(err)) != 0) {
        dl_buf_free(&b);
        dl_log_write(level, id, "%s (fields not encodable: %s)", msg, err);
        return 0;
    }
    dl_log_write(level, id, "%s %.*s", msg, (int)b.len, b.data ? b.data : "");
    dl_buf_free(&b);
    return 0;
}

static int l_core_log_level(lua_State *L)
{
    lua_pushinteger(L, dl_log_min_level);
    return 1;
}

/* core.now(): wall-clock seconds with millisecond precision. */
static int l_core_now(lua_State *L)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    lua_pushnumber(L, (double)tv.tv_sec + (double)(tv.tv_usec / 1000) / 1000.0);
    return 1;
}

/* core.worker_id(): 0-based worker index (-1 outside a worker). */
static int l_core_worker_id(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    lua_pushinteger(L, vm && vm->worker ? vm->worker->id : -1);
    return 1;
}

static const luaL_Reg core_funcs[] = {
    {"_route", dl__route},
    {"_parallel", dl__parallel},
    {"_parallel_done", dl__parallel_done},
    {"sleep", l_core_sleep},
    {"log", l_core_log},
    {"log_level", l_core_log_level},
    {"now", l_core_now},
    {"worker_id", l_core_worker_id},
    {NULL, NULL},
};

int luaopen_devloop_core(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(core_funcs));
    luaL_register(L, NULL, core_funcs);
    static const struct {
        const char *name;
        int mask;
    } methods[] = {{"GET", DL_M_GET},   {"HEAD", DL_M_HEAD},     {"POST", DL_M_POST},
                   {"PUT", DL_M_PUT},   {"PATCH", DL_M_PATCH},   {"DELETE", DL_M_DELETE},
                   {"OPTIONS", DL_M_OPTIONS}, {"ALL", DL_M_ALL}};
    lua_createtable(L, 0, DL_ARRAY_SIZE(methods));
    for (size_t i = 0; i < DL_ARRAY_SIZE(methods); i++) {
        lua_pushinteger(L, methods[i].mask);
        lua_setfield(L, -2, methods[i].name);
    }
    lua_setfield(L, -2, "methods");
    return 1;
}
