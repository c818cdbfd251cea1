/*
 * lua_task.c - tasks: coroutines that run a handler, a start hook, a job or
 * a function of api.parallel and api.with_timeout, parked on I/O and resumed
 * from its callback. One function resumes, dl_task_resume(), and it handles
 * yield, return and error in one place;
 * a request's own task ends through its finish callback (lua_dispatch.c),
 * the others here. The start-hook limit (core._guard) lives here too: it is
 * set and lifted around each resume.
 */
#include <lauxlib.h>
#include <luajit.h>
#include <stdio.h>
#include <string.h>

#include "lua/lua_error.h"
#include "lua/lua_state.h"
#include "lua/lua_vm_internal.h"

/* ================================================================== tasks */

void dl_task_park(dl_task_t *t, void (*cancel)(void *), void *data)
{
    t->cancel = cancel;
    t->cancel_data = data;
}

dl_task_t *dl_task_new(dl_vm_t *vm, dl_req_t *req)
{
    dl_task_t *t = NULL;
    if (!dl_list_empty(&vm->spare_tasks)) {
        t = dl_list_entry(vm->spare_tasks.next, dl_task_t, link);
        dl_list_remove(&t->link);
        memset(t, 0, sizeof(*t));
    } else if ((t = dl_calloc(1, sizeof(*t))) == NULL) {
        return NULL;
    }
    lua_State *L = vm->L;
    if (vm->n_co_pool > 0) {
        vm->n_co_pool--;
        t->co = vm->co_pool[vm->n_co_pool];
        t->co_ref = vm->co_pool_refs[vm->n_co_pool];
    } else {
        t->co = lua_newthread(L);
        t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_setexdata(t->co, t);
    t->vm = vm;
    t->req = req;
    t->scope = ++vm->scopes; /* a scope of its own unless a parent shares its own */
    t->scope_root = 1;
    t->results_ref = LUA_NOREF;
    t->error_ref = LUA_NOREF;
    dl_list_insert_head(&vm->tasks, &t->link);
    return t;
}

static void guard_leave(dl_task_t *t);

/* A task of parent's scope (api.parallel, with_timeout). */
static void share_scope(dl_task_t *c, const dl_task_t *parent)
{
    c->scope = parent->scope;
    c->scope_root = 0;
}

/*
 * 1 while t's scope has not ended: its first task still runs. A with_timeout
 * child given up on runs on after its request may have ended, and a socket it
 * opened then would belong to no live scope: nothing would close it.
 */
int dl_task_scope_alive(dl_task_t *t)
{
    for (dl_task_t *u = t; u; u = u->parent)
        if (u->scope_root)
            return 1;
    dl_list_t *h = &t->vm->tasks;
    for (dl_list_t *n = h->next; n != h; n = n->next) {
        dl_task_t *u = dl_list_entry(n, dl_task_t, link);
        if (u->scope == t->scope && u->scope_root)
            return 1;
    }
    return 0;
}

void dl_task_own(dl_task_t *t, dl_task_res_t *r)
{
    r->scope = t->scope;
    dl_list_insert_tail(&t->vm->owned, &r->link);
}

void dl_task_disown(dl_task_res_t *r)
{
    dl_list_remove(&r->link);
}

/* The scope of t ends: what it holds is closed. */
static void close_owned(dl_task_t *t)
{
    dl_list_t *h = &t->vm->owned;
    for (dl_list_t *n = h->next; n != h;) {
        dl_task_res_t *r = dl_list_entry(n, dl_task_res_t, link);
        n = n->next;
        if (r->scope == t->scope) {
            dl_list_remove(&r->link);
            r->close(r);
            n = h->next; /* a close may have let others go: start again */
        }
    }
}

void dl_task_free(dl_task_t *t, int reuse)
{
    dl_vm_t *vm = t->vm;
    lua_State *L = vm->L;
    if (t->scope_root && !dl_list_empty(&vm->owned))
        close_owned(t);
    guard_leave(t);
    dl_list_remove(&t->link);
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->error_ref);
        lua_setexdata(t->co, NULL);
        /* a coroutine that returned normally can run another function */
        if (reuse && vm->n_co_pool < DL_CO_POOL_MAX && lua_status(t->co) == 0) {
            lua_settop(t->co, 0);
            vm->co_pool[vm->n_co_pool] = t->co;
            vm->co_pool_refs[vm->n_co_pool] = t->co_ref;
            vm->n_co_pool++;
        } else {
            luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        }
    }
    /* Not freed: a coroutine the app created inside this task inherited its
     * exdata (lua_newthread copies it) and may be kept and resumed after the
     * task ended, when dl_task_current() and the guard read this memory. A
     * spare stays valid until the VM goes, and its co no longer matches. */
    memset(t, 0, sizeof(*t));
    t->vm = vm;
    dl_list_insert_head(&vm->spare_tasks, &t->link);
}

void dl_vm_cancel_tasks(dl_vm_t *vm)
{
    if (vm == NULL)
        return;
    while (!dl_list_empty(&vm->tasks)) {
        dl_task_t *t = dl_list_entry(vm->tasks.next, dl_task_t, link);
        if (t->cancel)
            t->cancel(t->cancel_data);
        if (t->req && t->parent == NULL && !t->detached) {
            t->req->task = NULL;
            t->req->ctx->release(t->req->ctx, t->req);
        }
        dl_task_free(t, 0);
    }
}

/* ====================================================== start-hook limit */

/*
 * An on_start hook runs under a time limit (cfg->start_timeout_ms). A hook
 * that yields (db, sleep) lets the loop run, so a timer can end the wait for
 * it (scripts/devloop/lifecycle.lua races it under `devloop test`). A hook
 * that never yields (`while true do end`) holds the loop, and no timer fires:
 * while its task runs, an instruction-count hook looks at the clock and, past the limit,
 * yields the task from inside the hook (LuaJIT allows it), where no pcall in
 * the hook's code can catch it; dl_task_resume() then ends the task with the
 * message. Compiled code does not call count hooks, so the traces are
 * flushed when the limit is set and the JIT is off while a guarded task runs.
 * The limit counts the hook's whole run under `devloop test` (the tests wait
 * for it) and each stretch without yielding under `serve` (a long seed that
 * yields is fine; a hook that holds the worker is not).
 *
 * The limit (a dl_guard_t) covers the hook's task and every task it starts,
 * directly or not (api.parallel children, api.with_timeout's function, also
 * once detached, core._spawn): each holds a reference, so a loop in any of
 * them is stopped the same way. Tasks started otherwise (requests, jobs) have
 * none: no count hook is set for them and they keep the JIT.
 */
#define GUARD_COUNT 1000 /* instructions between clock checks */

static void format_ms(char *out, size_t len, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, len, "%llums", (unsigned long long)ms);
}

static void guard_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    /* the task whose coroutine (or a coroutine it created) is running; tasks
     * with no guard that run meanwhile (woken by a guarded one) run on */
    dl_task_t *t = lua_getexdata(L);
    if (t == NULL) {
        /* a coroutine made outside any task (at load time: app.lua, a lib/
         * module) and resumed by the guarded task: it runs under its limit */
        dl_vm_t *owner = dl_vm_of(L);
        t = owner ? owner->guard.running : NULL;
    }
    if (t == NULL || t->guard == NULL)
        return;
    dl_vm_t *vm = t->vm;
    dl_guard_t *g = t->guard;
    uint64_t from = g->whole ? g->start_ns : vm->guard.armed_ns;
    if (uv_hrtime() - from < g->limit_ns)
        return;
    char lim[32], where[300] = "";
    format_ms(lim, sizeof(lim), g->limit_ns / 1000000);
    lua_Debug d;
    if (lua_getstack(L, 0, &d) && lua_getinfo(L, "Sl", &d) && d.currentline > 0) {
        const char *src = d.source[0] == '=' || d.source[0] == '@' ? d.source + 1 : d.source;
        snprintf(where, sizeof(where), " (stopped at %s:%d)", dl_vm_app_relative(vm, src),
                 d.currentline);
    }
    if (g->whole)
        snprintf(g->msg, sizeof(g->msg), "%.200s: on_start hook did not finish within %s%.200s",
                 g->label, lim, where);
    else
        snprintf(g->msg, sizeof(g->msg),
                 "%.200s: on_start hook ran %s without yielding and was stopped: this worker "
                 "served nothing meanwhile (DEVLOOP_START_TIMEOUT_MS)%.200s",
                 g->label, lim, where);
    if (g->first[0] == '\0')
        snprintf(g->first, sizeof(g->first), "%s", g->msg);
    if (t->co == L && lua_isyieldable(L)) {
        g->tripped = 1;
        lua_yield(L, 0);
        return;
    }
    /* in a coroutine of the task's own, or inside a C call (a gsub callback):
     * raise instead, again at each count until the task's coroutine is reached */
    luaL_error(L, "%s", g->msg);
}

static void guard_arm(dl_vm_t *vm)
{
    vm->guard.armed = 1;
    vm->guard.armed_ns = uv_hrtime();
    luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_sethook(vm->L, guard_hook, LUA_MASKCOUNT, GUARD_COUNT);
}

static void guard_disarm(dl_vm_t *vm)
{
    vm->guard.armed = 0;
    vm->guard.running = NULL;
    lua_sethook(vm->L, NULL, 0, 0);
    if (vm->guard.jit_on)
        luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
}

/* c, a task that t (the caller, or NULL) starts, runs under t's limit */
static void guard_inherit(dl_task_t *c, const dl_task_t *t)
{
    if (t == NULL || t->guard == NULL)
        return;
    c->guard = t->guard;
    c->guard->refs++;
}

static void guard_leave(dl_task_t *t)
{
    dl_guard_t *g = t->guard;
    t->guard = NULL;
    if (g && g->root == t)
        g->root = NULL;
    if (g && --g->refs == 0)
        dl_free(g);
}

/* 1 when the JIT compiler is on (jit.status()) */
static int jit_is_on(lua_State *L)
{
    int on = 0;
    lua_getglobal(L, "jit");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "status");
        if (lua_isfunction(L, -1) && lua_pcall(L, 0, 1, 0) == 0)
            on = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return on;
}

/*
 * core._guard(): the start-hook limit in ms (0: none).
 * core._guard(label, whole): puts the calling task, and every task it starts
 * from now on, under that limit (see above); label ("app.lua:12") starts the
 * message.
 */
int dl__guard(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    uint64_t ms = vm && vm->host && vm->host->cfg ? vm->host->cfg->start_timeout_ms : 0;
    if (lua_gettop(L) == 0) {
        lua_pushnumber(L, (lua_Number)ms);
        return 1;
    }
    const char *label = luaL_checkstring(L, 1);
    int whole = lua_toboolean(L, 2);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL)
        return luaL_error(L, "core._guard: not in a task");
    if (ms == 0)
        return 0;
    dl_guard_t *g = dl_calloc(1, sizeof(*g));
    if (g == NULL)
        return luaL_error(L, "out of memory");
    g->refs = 1;
    g->whole = whole;
    g->limit_ns = ms * 1000000;
    g->start_ns = uv_hrtime();
    snprintf(g->label, sizeof(g->label), "%s", label);
    guard_leave(t);
    t->guard = g;
    g->root = t;
    /* traces compiled before now would run without calling the hook */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
    if (!vm->guard.armed) {
        vm->guard.jit_on = jit_is_on(L);
        guard_arm(vm); /* the task is running: this resume counts */
        vm->guard.running = t;
    }
    return 0;
}

/* ============================================================== resuming */

/* api.with_timeout's race (below): its timer and the two tasks in it */
typedef struct {
    uv_timer_t timer;
    dl_task_t *parent; /* NULL once the race is decided */
    dl_task_t *child;  /* NULL once the child ended */
} race_t;

static void on_race_closed(uv_handle_t *h)
{
    dl_free(h->data);
}

static void race_decided(race_t *r)
{
    r->parent = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_race_closed);
}

static void finish_child(dl_task_t *t, int ok);

/* A task with no request (start hooks, jobs): errors go to the log. */
static void finish_background(dl_task_t *t, int ok)
{
    if (!ok) {
        char text[1024];
        dl_lua_errtext_of(t->vm->L, t->co, text, sizeof(text));
        dl_log(DL_LOG_ERROR, "background task failed: %s", text);
    }
    dl_task_free(t, ok);
}

int dl_vm_spawn(dl_vm_t *vm, int nargs)
{
    /* the function and its nargs arguments are on top of vm->L */
    dl_task_t *t = dl_task_new(vm, NULL);
    if (t == NULL) {
        lua_pop(vm->L, nargs + 1);
        return DL_ENOMEM;
    }
    lua_xmove(vm->L, t->co, nargs + 1);
    dl_task_resume(t, nargs);
    return 0;
}

/* core._spawn(fn, ...): runs fn(...) now in a task of its own with no
 * request (background work: job runs); returns at fn's first yield. */
int dl__spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    dl_vm_t *vm = dl_vm_of(L);
    if (vm == NULL || dl_lua_host(L) == NULL)
        return luaL_error(L, "spawn is only available while serving");
    int nargs = lua_gettop(L) - 1;
    dl_task_t *t = dl_task_new(vm, NULL);
    if (t == NULL)
        return luaL_error(L, "out of memory");
    /* started by a start hook (from any coroutine of its task): its limit */
    guard_inherit(t, lua_getexdata(L));
    lua_checkstack(t->co, nargs + 2);
    lua_xmove(L, t->co, nargs + 1);
    dl_task_resume(t, nargs);
    return 0;
}

void dl_task_resume_string(dl_task_t *t, const char *s, size_t len, const char *err)
{
    if (err == NULL) {
        lua_pushlstring(t->co, s ? s : "", len);
        dl_task_resume(t, 1);
    } else {
        dl_task_resume(t, dl_lua_fail(t->co, err, NULL));
    }
}

void dl_task_resume(dl_task_t *t, int nargs)
{
    dl_vm_t *vm = t->vm;
    t->cancel = NULL;
    t->cancel_data = NULL;
    /* the outermost resume sets the count hook (when its task has a guard, or
     * gets one: core._guard) and lifts it; resumes nested in it (api.parallel
     * children, joins) run under it */
    int outer = !vm->guard.armed;
    if (outer && t->guard) {
        guard_arm(vm);
        vm->guard.running = t;
    }
    int rc = lua_resume(t->co, nargs);
    if (outer && vm->guard.armed)
        guard_disarm(vm);
    if (rc == LUA_YIELD && t->guard && t->guard->tripped) {
        /* the count hook stopped a start hook's task that ran past its limit */
        t->guard->tripped = 0;
        lua_settop(t->co, 0);
        lua_pushstring(t->co, t->guard->msg);
        rc = LUA_ERRRUN;
    } else if (rc == 0 && t->guard && t->guard->root == t && t->guard->first[0]) {
        /* a task the hook started was stopped (the hook may have caught its
         * error, or not waited for it): the hook did not keep to its limit */
        lua_settop(t->co, 0);
        lua_pushstring(t->co, t->guard->first);
        rc = LUA_ERRRUN;
    } else if (rc == LUA_YIELD) {
        if (t->cancel == NULL && !t->joining) {
            /* a plain coroutine.yield() from the handler: nothing will wake it */
            lua_settop(t->co, 0);
            lua_pushliteral(t->co, "attempt to yield from a handler outside an I/O call");
            rc = LUA_ERRRUN;
        } else {
            return;
        }
    }
    int ok = rc == 0;
    if (!ok && !dl_lua_is_status_error(t->co, -1)) {
        /* message + the coroutine's traceback, for the log; a value that is
         * not a string is shown as text (dl__error_text) */
        lua_State *L = vm->L;
        lua_pushvalue(t->co, -1);
        lua_xmove(t->co, L, 1);
        luaL_traceback(L, t->co, dl_lua_errtext(L), 0);
        lua_remove(L, -2);
        lua_xmove(L, t->co, 1);
    }
    if (t->parent)
        finish_child(t, ok);
    else if (t->req == NULL || t->detached || t->finish == NULL)
        finish_background(t, ok);
    else
        t->finish(t, ok);
}

/* ======================================================= api.parallel */

/*
 * Pushes a join's outcome onto `to`: (false, first error) or (true, results)
 * where results is the table of a parallel join or, with single, slot 0 of it
 * (a race). The refs are let go here, in one place: the values are on the
 * stack now.
 */
static void release_join(lua_State *L, dl_task_t *p)
{
    luaL_unref(L, LUA_REGISTRYINDEX, p->results_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, p->error_ref);
    p->results_ref = p->error_ref = LUA_NOREF;
}

static void push_outcome(lua_State *to, dl_task_t *p, int single)
{
    if (p->error_ref != LUA_NOREF) {
        lua_pushboolean(to, 0);
        lua_rawgeti(to, LUA_REGISTRYINDEX, p->error_ref);
    } else {
        lua_pushboolean(to, 1);
        lua_rawgeti(to, LUA_REGISTRYINDEX, p->results_ref);
        if (single) {
            lua_rawgeti(to, -1, 0);
            lua_remove(to, -2);
        }
    }
    release_join(to, p);
}

/* A child task ended: record its first result (or error); wake the parent. */
static void finish_child(dl_task_t *t, int ok)
{
    dl_task_t *p = t->parent;
    lua_State *L = t->vm->L;
    lua_State *co = t->co;
    if (ok) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->results_ref);
        if (lua_gettop(co) > 0)
            lua_xmove(co, L, 1);
        else
            lua_pushnil(L);
        lua_rawseti(L, -2, t->index);
        lua_pop(L, 1);
    } else if (p->error_ref == LUA_NOREF) {
        lua_xmove(co, L, 1);
        p->error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    race_t *race = t->race;
    dl_task_free(t, ok);
    p->waiting--;
    if (race) {
        /* a race the child won: hand (ok, value) to the parent */
        race->child = NULL;
        if (race->parent == NULL || !p->joining)
            return;
        p->joining = 0;
        race_decided(race);
        push_outcome(p->co, p, 1);
        dl_task_resume(p, 2);
        return;
    }
    if (p->waiting == 0 && p->joining) {
        p->joining = 0;
        push_outcome(p->co, p, 0);
        dl_task_resume(p, 2);
    }
}

/* core._parallel(f1, f2, ...) -> true, {r1, r2, ...} | false, err */
int dl__parallel(lua_State *L)
{
    dl_task_t *t = dl_task_current(L);
    if (t == NULL)
        return luaL_error(L, "api.parallel can only run inside a handler");
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++)
        luaL_checktype(L, i, LUA_TFUNCTION);
    if (t->results_ref != LUA_NOREF || t->waiting)
        return luaL_error(L, "api.parallel is already running in this task");
    lua_createtable(L, n, 0);
    t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->error_ref = LUA_NOREF;
    for (int i = 1; i <= n; i++) {
        dl_task_t *c = dl_task_new(t->vm, t->req);
        if (c == NULL)
            return luaL_error(L, "out of memory");
        guard_inherit(c, t);
        share_scope(c, t);
        c->parent = t;
        c->index = i;
        t->waiting++;
        lua_pushvalue(L, i);
        lua_xmove(L, c->co, 1);
        dl_task_resume(c, 0); /* children that finish at once are counted now */
    }
    if (t->waiting > 0) {
        t->joining = 1;
        return lua_yield(L, 0);
    }
    push_outcome(L, t, 0);
    return 2;
}

/* ====================================================== api.with_timeout */

/*
 * core._race(ms, fn): runs fn in a child task and returns (true, result) when
 * it ends first, or (false, "timeout") when ms pass first; the losing child
 * runs on detached and its end is ignored. Health checks use it so that a
 * stuck backend cannot hang them.
 */
static void on_race_timeout(uv_timer_t *h)
{
    race_t *r = h->data;
    dl_task_t *p = r->parent;
    if (p == NULL)
        return;
    if (r->child) {
        r->child->parent = NULL;
        r->child->detached = 1;
        r->child->race = NULL;
    }
    /* the parent stops waiting on this join: it may join again later */
    p->waiting = 0;
    p->joining = 0;
    race_decided(r);
    release_join(p->co, p);
    lua_pushboolean(p->co, 0);
    lua_pushliteral(p->co, "timeout");
    dl_task_resume(p, 2);
}

static void cancel_race(void *data)
{
    race_t *r = data;
    if (r->child) {
        r->child->parent = NULL;
        r->child->detached = 1;
        r->child->race = NULL;
    }
    race_decided(r);
}

int dl__race(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || dl_lua_host(L) == NULL)
        return luaL_error(L, "with_timeout can only run inside a handler");
    dl_task_t *c = dl_task_new(t->vm, t->req);
    race_t *r = dl_calloc(1, sizeof(*r));
    if (c == NULL || r == NULL) {
        if (c)
            dl_task_free(c, 0);
        dl_free(r);
        return luaL_error(L, "out of memory");
    }
    share_scope(c, t);
    guard_inherit(c, t);
    /* the child reports to us through finish_child's race branch; t->race
     * stays as it is: it is t's own, when t is itself a raced function */
    c->race = r;
    r->parent = t;
    r->child = c;
    lua_pushvalue(L, 2);
    lua_xmove(L, c->co, 1);
    c->parent = t;
    c->index = 0;
    t->waiting = 1;
    lua_createtable(L, 1, 0);
    t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->error_ref = LUA_NOREF;
    dl_task_resume(c, 0);
    if (t->waiting == 0) {
        /* finished at once */
        dl_free(r);
        push_outcome(L, t, 1);
        return 2;
    }
    uv_timer_init(t->vm->host->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_race_timeout, (uint64_t)(ms > 0 ? ms : 0), 0);
    t->joining = 1;
    dl_task_park(t, cancel_race, r);
    return lua_yield(L, 0);
}
