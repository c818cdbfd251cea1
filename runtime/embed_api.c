/*
 * embed_api.c - what embedders add to the runtime: Lua modules written in C
 * (a process-wide list preloaded into every Lua state) and suspended calls
 * completed from any thread. A dl_pending_t holds a uv_async_t on the
 * worker's loop: dl_pending_complete() stores the result and sends the async,
 * and the worker resumes the coroutine from the async callback, never from
 * the completing thread. If the task dies first (request gone, shutdown) its
 * cancel hook only forgets the task; the handle stays until completion so a
 * late dl_pending_complete() is still safe.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <uv.h>

#include "internal.h"
#include "lua_vm.h"
#include "worker.h"

/* ============================================================ C modules */

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

void dl__preload_user_modules(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (int i = 0; i < n_modules; i++) {
        lua_pushcfunction(L, modules[i].open);
        lua_setfield(L, -2, modules[i].name);
    }
    lua_pop(L, 2);
}

/* ======================================================= pending calls */

struct dl_pending_s {
    uv_async_t async;
    dl_task_t *task;  /* NULL once the task is gone */
    int done;         /* completed: ok/data are set (written before uv_async_send) */
    int ok;
    char *data;
    size_t len;
};

static void on_pending_closed(uv_handle_t *h)
{
    dl_pending_t *p = h->data;
    dl_free(p->data);
    dl_free(p);
}

static void on_pending_async(uv_async_t *h)
{
    dl_pending_t *p = h->data;
    dl_task_t *t = p->task;
    p->task = NULL;
    uv_close((uv_handle_t *)h, on_pending_closed);
    if (t == NULL)
        return;
    if (p->ok) {
        lua_pushlstring(t->co, p->data ? p->data : "", p->len);
        dl_task_resume(t, 1);
    } else {
        lua_pushnil(t->co);
        lua_pushlstring(t->co, p->data ? p->data : "failed", p->data ? p->len : 6);
        dl_task_resume(t, 2);
    }
}

static void cancel_pending(void *data)
{
    dl_pending_t *p = data;
    p->task = NULL; /* the handle stays until dl_pending_complete() */
}

dl_pending_t *dl_pending_new(lua_State *L)
{
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || t->vm->worker == NULL)
        return NULL;
    dl_pending_t *p = dl_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    if (uv_async_init(&t->vm->worker->loop, &p->async, on_pending_async) != 0) {
        dl_free(p);
        return NULL;
    }
    p->async.data = p;
    p->task = t;
    dl_task_park(t, cancel_pending, p);
    return p;
}

int dl_pending_complete(dl_pending_t *p, int ok, const char *data, size_t len)
{
    char *copy = NULL;
    if (data != NULL && len > 0) {
        copy = dl_malloc(len);
        if (copy == NULL)
            return DL_ENOMEM;
        memcpy(copy, data, len);
    }
    p->data = copy;
    p->len = len;
    p->ok = ok;
    __atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
    uv_async_send(&p->async); /* a full barrier: the worker sees the fields */
    return 0;
}
