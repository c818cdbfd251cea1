/*
 * lua_state.h - what every part of the Lua layer, and every binding, shares:
 * the VM's structures (its generations and routes, its tasks, the start-hook
 * limit), how a Lua state finds its VM and its task, the task hooks bindings
 * park and resume coroutines with, and the
 * primitives behind devloop.core. lua_vm.h adds the VM's own life (create,
 * load, route, dispatch) for the runtime; this header stays below it so that
 * what the bindings call does not reach back into the VM's creation.
 */
#ifndef DL_LUA_STATE_H
#define DL_LUA_STATE_H

#include <lua.h>
#include <uv.h>

#include "common/buf.h"
#include "common/list.h"
#include "common/internal.h"
#include "core/http.h"
#include "core/request.h"
#include "lua/lua_host.h"

/** A route as declared by api.get/post/...: what the router stores. */
typedef struct dl_route_s {
    int handler_ref;  /* registry ref of the handler function */
    int precheck_ref; /* registry ref of a check run on the head alone (auth), or 0 */
    size_t body_limit;
    size_t upload_limit; /* route option upload: multipart bodies streamed to files */
    int after_ref;    /* registry ref of its after hooks {list, run_after = fn}, or 0 */
    const struct dl_cors_s *cors; /* its cors option (the generation owns it), or NULL */
    char *pattern;
    struct dl_route_s *next; /* all routes of a generation */
} dl_route_t;

/** The app-wide api.rate_limit counted in C (lua_middleware.c): by req.ip, in
 * api.shared; one with a key function or in Redis stays a Lua hook. */
typedef struct {
    double limit;
    uint32_t window_s;
    unsigned closed : 1;   /* on_error = "closed": 503 when the store fails */
    unsigned warned : 1;   /* the store's failure is logged (once per generation) */
    char name[104];        /* its label in metrics */
    char base[112];        /* "rl:NAME:" before the address */
    size_t base_len;
    int refused_id, failed_id; /* its metrics (-1: none) */
} dl_app_rate_t;

/** Everything loaded from an app folder at one time. */
typedef struct dl_gen_s {
    dl_router_t *router;
    dl_route_t *routes;
    int hooks_ref;      /* registry ref of its api.before/after table (hooks.lua), or 0 */
    unsigned has_before : 1, has_after : 1;
    struct dl_cors_s *cors;     /* api.cors's policy, or NULL */
    struct dl_cors_s *policies; /* every CORS policy of this load (the app's, the routes'), owned */
    dl_app_rate_t *rate;        /* api.rate_limit's, when counted in C, or NULL */
    int id;
    int refs;           /* requests routed in this generation and not yet done */
    struct dl_gen_s *next_old; /* retired generations still serving requests */
} dl_gen_t;

typedef struct dl_task_s dl_task_t;
typedef struct dl_vm_s dl_vm_t;

/**
 * Something a task scope holds open (an outbound socket, a streamed
 * response): closed by close() when the scope's first task ends, so nothing
 * outlives its request or its job run. A scope is a request's (or a
 * background run's) first task and the api.parallel and with_timeout tasks
 * it starts.
 */
typedef struct dl_task_res_s {
    dl_list_t link;                       /* in the VM's owned list */
    uint64_t scope;
    void (*close)(struct dl_task_res_s *r); /* the scope ended: let go (may free r) */
} dl_task_res_t;

/** An on_start hook's time limit (core._guard, lua_task.c): shared by the hook's
 * task and every task it starts, directly or not; freed with the last. */
typedef struct dl_guard_s {
    int refs;               /* tasks under this limit */
    uint64_t limit_ns;
    uint64_t start_ns;      /* when the limit was set */
    int whole;              /* 1: the hook's whole run counts; 0: each resume alone */
    int tripped;            /* the count hook yielded a task: msg says why */
    dl_task_t *root;        /* the hook's own task, while it runs */
    char label[256];        /* "app.lua:12": where the hook is defined */
    char msg[600];          /* why the latest task was stopped */
    char first[600];        /* why the first one was ("": none yet) */
} dl_guard_t;

struct dl_task_s {
    lua_State *co;
    int co_ref;
    dl_vm_t *vm;
    dl_req_t *req;          /* the request served; NULL for background tasks */
    dl_task_t *parent;      /* api.parallel: the waiting task */
    int index;              /* api.parallel: slot in the parent's results */
    int waiting;            /* api.parallel: children not finished */
    int joining;            /* api.parallel: parked until the children finish */
    int detached;           /* a raced child that lost: its end is ignored */
    void *race;             /* api.with_timeout: the race this task is the function of */
    dl_guard_t *guard;      /* the start-hook limit it runs under, or NULL */
    uint64_t scope;         /* its scope's id (dl_task_res_t) */
    int scope_root;         /* the scope's first task: owned resources end with it */
    int results_ref;
    int error_ref;
    void (*cancel)(void *data); /* detaches a parked operation (shutdown) */
    void *cancel_data;
    /* how a request's own task ends (lua_dispatch.c: its answer); NULL: as a
     * background task */
    void (*finish)(dl_task_t *t, int ok);
    dl_list_t link;         /* in vm->tasks while live, in vm->spare_tasks once ended */
};

struct dl_vm_s {
    lua_State *L;
    /* its runner's (lua_host.h), the settings in host->cfg; NULL: none at all */
    const dl_lua_host_t *host;
    dl_gen_t *gen;              /* the current generation */
    dl_gen_t *old;              /* retired generations with requests in flight */
    int baseline_ref;           /* package.loaded keys before any app module */
    dl_gen_t *loading;          /* the generation api.get() adds to */
    int pipeline_ref;           /* hooks.pipeline (hooks.lua), kept at the first hooks declared */
    uint64_t clock_loop_ms;     /* the loop time clock_unix was read at (lua_middleware.c) */
    double clock_unix;          /* the wall clock then: read once per loop millisecond */
    char app_dir[1024];         /* the app being served (api.app_dir()) */
    int req_mt_ref;
    int env_mt_ref;
    dl_list_t tasks;            /* live tasks (dl_task_t.link) */
    dl_list_t spare_tasks;      /* ended tasks, kept until the VM goes (see dl_task_free) */
    lua_State **co_pool;        /* finished coroutines kept for reuse */
    int *co_pool_refs;
    int n_co_pool;
    dl_list_t owned;            /* dl_task_res_t held by live task scopes */
    uint64_t scopes;            /* the last scope id given */
    dl_buf_t scratch;           /* encoder output */
    dl_buf_t resp_hdrs;         /* a handler's header lines (lua_dispatch.c) */
    dl_buf_t resp_ctype;        /* and its Content-Type */
    /* while a task with a guard runs (lua_task.c) */
    struct {
        int armed;              /* count hook set, JIT off */
        int jit_on;             /* the JIT's state to restore when disarmed */
        uint64_t armed_ns;      /* when the worker began running guarded tasks */
        dl_task_t *running;     /* the guarded task whose resume armed it */
    } guard;
};

/** The VM of a Lua state (set at creation). */
dl_vm_t *dl_vm_of(lua_State *L);
/** Makes dl_vm_of(L) return vm for L and every coroutine of it (lua_vm.c only). */
void dl_vm_attach(lua_State *L, dl_vm_t *vm);
/** path relative to the VM's app folder when inside it (for messages). */
const char *dl_vm_app_relative(const dl_vm_t *vm, const char *path);

/* ---- task hooks for bindings (lua_task.c) */

/** The task running on coroutine L, or NULL (main state, user coroutine). */
dl_task_t *dl_task_current(lua_State *L);
/** Records how to detach the operation a task parks on. */
void dl_task_park(dl_task_t *t, void (*cancel)(void *), void *data);
/* Resumes a parked task with a string (err NULL) or with nil, err. */
void dl_task_resume_string(dl_task_t *t, const char *s, size_t len, const char *err);
/** Resumes a parked task with nargs values already pushed on t->co. */
void dl_task_resume(dl_task_t *t, int nargs);

/** Ties r to t's scope: r->close runs when the scope ends (unless disowned first). */
void dl_task_own(dl_task_t *t, dl_task_res_t *r);
/** 1 while t's scope has not ended (its first task still runs): a task a
 * with_timeout gave up on may run on after it, and what it opened then would
 * belong to no live scope. */
int dl_task_scope_alive(dl_task_t *t);
/** Unties r (closed by its user before its scope ended). Harmless twice. */
void dl_task_disown(dl_task_res_t *r);
/** 1 when t runs in scope (the resource's owner may use it). */
static inline int dl_task_in_scope(const dl_task_t *t, uint64_t scope)
{
    return t != NULL && t->scope == scope;
}

/** Runs the function (with nargs arguments) on top of vm->L as a task with no request. */
int dl_vm_spawn(dl_vm_t *vm, int nargs);
/** Detaches every parked task and drops its request (graceful stop is over). */
void dl_vm_cancel_tasks(dl_vm_t *vm);

/* A handler's 4th return value equal to lightuserdata(&dl__gzip_body_marker)
 * says its body is already gzip (cached entries): see dl_resp_t.body_gzip. */
extern char dl__gzip_body_marker;
/* A handler's 4th return value equal to lightuserdata(&dl__file_body_marker)
 * makes its body string a file path, sent from disk a chunk at a time; the
 * 5th and 6th values are the offset and length (default: the whole file); a
 * 7th value true deletes the file once it is open (a temporary copy). */
extern char dl__file_body_marker;
/* api.stream's answer: (status, fn, headers, marker); fn(write) runs once
 * the head is sent (lua_stream.c). */
extern char dl__stream_marker;
/* What the hooks' pipeline returns when no before hook answered a request no
 * route took (hooks.lua): the runtime's 404 or 405 follows. */
extern char dl__not_routed_marker;
/* What the hooks' pipeline puts before an answer its after hooks have seen
 * (hooks.lua): the runtime sends it as it is. */
extern char dl__after_done_marker;

/* ---- primitives behind bindings/dl_core.c (the devloop.core module) */
int dl__req_index(lua_State *L);     /* __index of request tables (lua_request.c) */
int dl__req_header(lua_State *L);    /* core._header(req, name) (lua_request.c) */
int dl__route(lua_State *L);         /* core._route(mask, pattern, opts, fn) (lua_routes.c) */
int dl__hooks(lua_State *L);         /* core._hooks([tbl]) (lua_routes.c) */
int dl__cors(lua_State *L);          /* core._cors(cfg, app) (lua_middleware.c) */
int dl__cors_pending(lua_State *L);  /* core._cors_pending(req, policy) */
int dl__cors_verdict(lua_State *L);  /* core._cors_verdict(req, ok) */
int dl__cors_preflight(lua_State *L); /* core._cors_preflight(req) */
int dl__rate_limit(lua_State *L);    /* core._rate_limit(cfg) */
int dl__rate_note(lua_State *L);     /* core._rate_note(req, limit, window, ok, est, ...) */
int dl__rate_undo(lua_State *L);     /* core._rate_undo(req) */
int dl__client_key(lua_State *L);    /* core._client_key(req) */
int dl__stream_write(lua_State *L);  /* core._stream_write(chunk) (lua_stream.c) */
/** The request of a request table at idx, or NULL (not one, or its request is done). */
dl_req_t *dl_lua_req_of(lua_State *L, int idx);
int dl__parallel(lua_State *L);      /* core._parallel(f1, ...) (lua_task.c) */
int dl__race(lua_State *L);          /* core._race(ms, fn) (lua_task.c) */
int dl__spawn(lua_State *L);         /* core._spawn(fn, ...) (lua_task.c) */
int dl__guard(lua_State *L);         /* core._guard([label, whole]) (lua_task.c) */
int dl__error_text(lua_State *L);    /* core._error_text(v): a raised value as text (lua_errtext.c) */

#endif /* DL_LUA_STATE_H */
