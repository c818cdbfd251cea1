/*
 * dl_pubsub.c - the devloop.pubsub_core Lua module behind api.pubsub
 * (scripts/devloop/pubsub.lua): publish on the process's hub
 * (runtime/cache/pubsub.h), and subscriptions of this worker's inbox as
 * handles whose next() parks the calling task until a message comes.
 *
 * The worker wakes its loop when the inbox has something (server/worker.c)
 * and runs the reader here, which takes the subscriptions with messages one
 * at a time (a subscriber may cancel another one meanwhile) and resumes the
 * task parked in next() with the message. A handle made in a task scope
 * (a request) is owned by it (dl_task_res_t) and cancelled when it ends; a
 * cancelled handle's parked task is resumed with nil from the reader, never
 * from inside the cancel (which may run while another task is being freed).
 *
 * Misuse (a channel or message of the wrong type) raises naming the
 * argument; a channel of 0 or more than 256 bytes, a message over
 * DEVLOOP_PUBSUB_MAX_MESSAGE, a full worker are nil, message, name
 * (runtime/lua/lua_error.h).
 */
#include <lauxlib.h>
#include <lua.h>

#include "bindings/dl_bindings.h"
#include "cache/pubsub.h"
#include "common/internal.h"
#include "common/list.h"
#include "lua/lua_error.h"
#include "lua/lua_host.h"
#include "lua/lua_state.h"

#define HANDLE_MT "devloop.pubsub.sub"

/* The VM's side of its worker's inbox: malloc'd, freed when the VM's anchor
 * and every handle have let go (lua_close frees userdata in any order). */
typedef struct {
    dl_pubsub_inbox_t *in;
    dl_list_t ending; /* handles whose parked task must be told "cancelled" */
    int refs;
} port_t;

typedef struct {
    dl_task_res_t res;   /* owned by the scope that subscribed, when owned */
    int owned;
    dl_pubsub_sub_t *sub; /* NULL once cancelled */
    port_t *port;
    dl_task_t *waiter;   /* parked in next() */
    dl_list_t ending;    /* in port->ending */
} handle_t;

static void port_unref(port_t *p)
{
    if (p && --p->refs == 0)
        dl_free(p);
}

static void resume_msg(handle_t *h, dl_task_t *t, dl_pubsub_msg_t *m)
{
    size_t chlen;
    const char *ch = dl_pubsub_channel(h->sub, &chlen);
    lua_pushlstring(t->co, m->data, m->len);
    lua_pushlstring(t->co, ch, chlen);
    dl_pubsub_msg_unref(m);
    dl_task_resume(t, 2);
}

/* The inbox's reader: first the cancelled handles' tasks, then one
 * subscription with messages at a time. */
static void on_ready(void *data)
{
    port_t *p = data;
    p->refs++; /* kept through the resumes below, whatever they let go */
    while (!dl_list_empty(&p->ending)) {
        handle_t *h = dl_list_entry(p->ending.next, handle_t, ending);
        dl_list_remove(&h->ending);
        dl_list_init(&h->ending);
        dl_task_t *t = h->waiter;
        h->waiter = NULL;
        if (t)
            dl_task_resume(t, 0); /* next() returns nothing: the loop ends */
    }
    void *user;
    while (p->in && dl_pubsub_ready(p->in, &user, 1) == 1) {
        handle_t *h = user;
        dl_task_t *t = h->waiter;
        if (t == NULL || h->sub == NULL)
            continue; /* busy running its function: next() finds the queue */
        dl_pubsub_msg_t *m;
        int rc = dl_pubsub_next(h->sub, &m);
        if (rc == DL_ENOENT)
            continue;
        h->waiter = NULL;
        if (rc == 0) {
            resume_msg(h, t, m);
        } else {
            lua_pushnil(t->co);
            lua_pushliteral(t->co, "overflow");
            dl_task_resume(t, 2);
        }
    }
    port_unref(p);
}

static void handle_cancel(handle_t *h)
{
    if (h->owned) {
        dl_task_disown(&h->res);
        h->owned = 0;
    }
    if (h->sub) {
        dl_pubsub_cancel(h->sub);
        h->sub = NULL;
    }
    if (h->waiter && h->port && h->port->in && !dl_list_linked(&h->ending)) {
        dl_list_insert_tail(&h->port->ending, &h->ending);
        dl_pubsub_inbox_kick(h->port->in);
    }
}

static void on_scope_end(dl_task_res_t *r)
{
    handle_t *h = (handle_t *)r;
    h->owned = 0; /* close_owned has unlinked it */
    handle_cancel(h);
}

static void cancel_wait(void *data)
{
    handle_t *h = data;
    h->waiter = NULL; /* the task is abandoned (shutdown) */
    if (dl_list_linked(&h->ending)) {
        dl_list_remove(&h->ending);
        dl_list_init(&h->ending);
    }
}

static handle_t *check_handle(lua_State *L)
{
    return luaL_checkudata(L, 1, HANDLE_MT);
}

/* h:next() -> message, channel | nil (cancelled) | nil, "overflow" */
static int l_pubsub_next(lua_State *L)
{
    handle_t *h = check_handle(L);
    if (h->sub == NULL)
        return 0;
    dl_pubsub_msg_t *m;
    int rc = dl_pubsub_next(h->sub, &m);
    if (rc == 0) {
        size_t chlen;
        const char *ch = dl_pubsub_channel(h->sub, &chlen);
        lua_pushlstring(L, m->data, m->len);
        lua_pushlstring(L, ch, chlen);
        dl_pubsub_msg_unref(m);
        return 2;
    }
    if (rc == DL_ECANCELED) {
        lua_pushnil(L);
        lua_pushliteral(L, "overflow");
        return 2;
    }
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || h->waiter != NULL)
        return luaL_error(L, "pubsub: next() must be called by one task at a time");
    h->waiter = t;
    dl_task_park(t, cancel_wait, h);
    return lua_yield(L, 0);
}

/* h:cancel(): no more messages; a task parked in next() gets nil */
static int l_pubsub_cancel(lua_State *L)
{
    handle_cancel(check_handle(L));
    return 0;
}

/* h:queued() -> messages waiting */
static int l_pubsub_queued(lua_State *L)
{
    handle_t *h = check_handle(L);
    lua_pushnumber(L, h->sub ? (double)dl_pubsub_queued(h->sub) : 0);
    return 1;
}

static int l_pubsub_handle_gc(lua_State *L)
{
    handle_t *h = lua_touserdata(L, 1);
    if (h->owned) {
        dl_task_disown(&h->res);
        h->owned = 0;
    }
    dl_pubsub_cancel(h->sub);
    h->sub = NULL;
    if (dl_list_linked(&h->ending))
        dl_list_remove(&h->ending);
    port_unref(h->port);
    h->port = NULL;
    return 0;
}

static port_t *port_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static dl_pubsub_t *hub_of(lua_State *L)
{
    const dl_lua_host_t *host = dl_lua_host(L);
    return host ? host->pubsub : NULL;
}

static int bad_channel(lua_State *L, size_t len)
{
    return dl_lua_fail(L, len == 0 ? "empty channel" : "channel too long (more than 256 bytes)",
                       "EINVAL");
}

static const char *check_channel(lua_State *L, const char *fn, size_t *len)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_error(L, "bad argument #1 to 'api.pubsub.%s' (string expected, got %s)", fn,
                   luaL_typename(L, 1));
    return lua_tolstring(L, 1, len);
}

/* publish(channel, message) -> subscribers queued for | nil, err, name */
static int l_pubsub_publish(lua_State *L)
{
    size_t chlen, len;
    const char *ch = check_channel(L, "publish", &chlen);
    if (lua_type(L, 2) != LUA_TSTRING)
        return luaL_error(L, "bad argument #2 to 'api.pubsub.publish' (string or table "
                             "expected, got %s)", luaL_typename(L, 2));
    const char *msg = lua_tolstring(L, 2, &len);
    if (chlen == 0 || chlen > DL_PUBSUB_MAX_CHANNEL)
        return bad_channel(L, chlen);
    dl_pubsub_t *ps = hub_of(L);
    if (ps == NULL) { /* a checked load: nobody listens */
        lua_pushinteger(L, 0);
        return 1;
    }
    size_t n = 0;
    int rc = dl_pubsub_publish(ps, ch, chlen, msg, len, &n);
    if (rc == DL_ETOOBIG)
        return dl_lua_failf(L, "ETOOBIG", "message too large (%d bytes, more than "
                            "DEVLOOP_PUBSUB_MAX_MESSAGE: %d)", (int)DL_MIN(len, (size_t)INT32_MAX),
                            (int)DL_MIN(dl_pubsub_limits(ps)->max_message, (size_t)INT32_MAX));
    if (rc != 0)
        return dl_lua_fail_status(L, rc, NULL);
    lua_pushnumber(L, (double)n);
    return 1;
}

/* subscribe(channel, close_on_overflow, scoped) -> handle, owned | nil, err,
 * name; scoped and called for a request: owned by the request's task scope
 * (it ends with the request), owned true */
static int l_pubsub_subscribe(lua_State *L)
{
    size_t chlen;
    const char *ch = check_channel(L, "subscribe", &chlen);
    int close = lua_toboolean(L, 2), scoped = lua_toboolean(L, 3);
    if (chlen == 0 || chlen > DL_PUBSUB_MAX_CHANNEL)
        return bad_channel(L, chlen);
    port_t *p = port_of(L);
    if (p == NULL || p->in == NULL || dl_lua_host(L) == NULL)
        return dl_lua_fail(L, "pub/sub is not available here (no worker)", "ENOTSUP");
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || t->req == NULL)
        scoped = 0; /* a background run's belongs to the generation (pubsub.lua) */
    if (scoped && !dl_task_scope_alive(t))
        return dl_lua_fail(L, "the request has ended", "ECANCELED");
    handle_t *h = lua_newuserdata(L, sizeof(*h));
    memset(h, 0, sizeof(*h));
    dl_list_init(&h->ending);
    luaL_getmetatable(L, HANDLE_MT);
    lua_setmetatable(L, -2);
    int rc = dl_pubsub_subscribe(p->in, ch, chlen, close ? DL_PUBSUB_CLOSE_ON_OVERFLOW : 0, h,
                                 &h->sub);
    if (rc == DL_ETOOBIG)
        return dl_lua_failf(L, "ETOOMANY", "too many subscriptions on this worker (more than "
                            "DEVLOOP_PUBSUB_MAX_SUBS: %d)",
                            (int)DL_MIN(dl_pubsub_limits(hub_of(L))->max_subs, (size_t)INT32_MAX));
    if (rc == DL_ECANCELED)
        return dl_lua_fail(L, "the worker is stopping", "ECANCELED");
    if (rc != 0)
        return dl_lua_fail_status(L, rc, NULL);
    h->port = p;
    p->refs++;
    if (scoped) {
        h->res.close = on_scope_end;
        dl_task_own(t, &h->res);
        h->owned = 1;
    }
    lua_pushboolean(L, scoped);
    return 2;
}

/* limits() -> {max_message, queue, max_subs} (nil outside a worker) */
static int l_pubsub_limits(lua_State *L)
{
    dl_pubsub_t *ps = hub_of(L);
    if (ps == NULL)
        return 0;
    const dl_pubsub_limits_t *lim = dl_pubsub_limits(ps);
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (double)lim->max_message);
    lua_setfield(L, -2, "max_message");
    lua_pushnumber(L, (double)lim->queue);
    lua_setfield(L, -2, "queue");
    lua_pushnumber(L, (double)lim->max_subs);
    lua_setfield(L, -2, "max_subs");
    return 1;
}

/* stats() -> the hub's figures (nil outside a worker) */
static int l_pubsub_stats(lua_State *L)
{
    dl_pubsub_t *ps = hub_of(L);
    if (ps == NULL)
        return 0;
    dl_pubsub_stats_t st;
    dl_pubsub_stats(ps, &st);
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, (double)st.published);
    lua_setfield(L, -2, "published");
    lua_pushnumber(L, (double)st.delivered);
    lua_setfield(L, -2, "delivered");
    lua_pushnumber(L, (double)st.dropped);
    lua_setfield(L, -2, "dropped");
    lua_pushnumber(L, (double)st.closed);
    lua_setfield(L, -2, "closed");
    lua_pushnumber(L, (double)st.subscriptions);
    lua_setfield(L, -2, "subscriptions");
    lua_pushnumber(L, (double)st.channels);
    lua_setfield(L, -2, "channels");
    return 1;
}

static int l_pubsub_port_gc(lua_State *L)
{
    port_t **pp = lua_touserdata(L, 1);
    port_t *p = *pp;
    *pp = NULL;
    if (p == NULL)
        return 0;
    if (p->in)
        dl_pubsub_inbox_set_reader(p->in, NULL, NULL);
    p->in = NULL;
    /* handles still linked for their end are being collected with the VM */
    while (!dl_list_empty(&p->ending)) {
        dl_list_t *n = p->ending.next;
        dl_list_remove(n);
        dl_list_init(n);
    }
    port_unref(p);
    return 0;
}

static const luaL_Reg funcs[] = {
    {"publish", l_pubsub_publish}, {"subscribe", l_pubsub_subscribe}, {"limits", l_pubsub_limits},
    {"stats", l_pubsub_stats},     {NULL, NULL},
};

int luaopen_devloop_pubsub_core(lua_State *L)
{
    if (luaL_newmetatable(L, HANDLE_MT)) {
        lua_pushcfunction(L, l_pubsub_handle_gc);
        lua_setfield(L, -2, "__gc");
        lua_createtable(L, 0, 3);
        lua_pushcfunction(L, l_pubsub_next);
        lua_setfield(L, -2, "next");
        lua_pushcfunction(L, l_pubsub_cancel);
        lua_setfield(L, -2, "cancel");
        lua_pushcfunction(L, l_pubsub_queued);
        lua_setfield(L, -2, "queued");
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    /* the port: an anchor userdata each function keeps as an upvalue */
    const dl_lua_host_t *host = dl_lua_host(L);
    port_t **anchor = lua_newuserdata(L, sizeof(*anchor));
    *anchor = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_pubsub_port_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    port_t *p = NULL;
    if (host && host->pubsub_inbox) {
        p = dl_calloc(1, sizeof(*p));
        if (p == NULL)
            return luaL_error(L, "out of memory");
        p->in = host->pubsub_inbox;
        p->refs = 1;
        dl_list_init(&p->ending);
        dl_pubsub_inbox_set_reader(p->in, on_ready, p);
        *anchor = p;
    }
    int keep = lua_gettop(L);
    lua_createtable(L, 0, DL_ARRAY_SIZE(funcs) - 1);
    for (const luaL_Reg *f = funcs; f->name; f++) {
        lua_pushlightuserdata(L, p);
        lua_pushvalue(L, keep);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
