/*
 * lua_vm_internal.h - what the files of runtime/lua share and nothing else
 * may use: creating and ending tasks, a raised value as text, the request
 * table, generations. Each group names the file that defines it. It includes
 * lua_state.h alone, never lua_vm.h: the files the bindings reach (tasks,
 * requests, routes, error text) stay below the VM's creation, which calls
 * the bindings (tests/layers/check_layers.py finds no cycle through them).
 */
#ifndef DL_LUA_VM_INTERNAL_H
#define DL_LUA_VM_INTERNAL_H

#include "lua/lua_state.h"

#define DL_CO_POOL_MAX 256 /* finished coroutines a VM keeps for reuse */

/* ---- lua_task.c */

/** A new task on a coroutine (pooled or new) serving req (NULL: background). */
dl_task_t *dl_task_new(dl_vm_t *vm, dl_req_t *req);
/** Ends t; with reuse its coroutine, when it returned normally, is pooled. */
void dl_task_free(dl_task_t *t, int reuse);

/* ---- lua_middleware.c */

/** The app's CORS preflight and C-counted rate limit on req, before its
 * Lua runs: 1 when they answered it, 0 to go on. */
int dl_vm_native_phases(dl_vm_t *vm, dl_req_t *req);
/** The app's C-counted limit on req's head, before its body is read (the
 * route's early check): 0, or 429/503 with why in msg. It counts once:
 * dl_vm_native_phases does not count req again. */
int dl_vm_early_limit(dl_vm_t *vm, dl_req_t *req, char *msg, size_t msglen);

/* ---- lua_stream.c */

/** Opens req's stream with resp's head and runs fn (at idx on t->co) in a
 * task of its own with write; takes over req (answered when it ends). */
void dl_vm_stream_start(dl_vm_t *vm, dl_req_t *req, const dl_resp_t *resp, lua_State *co,
                        int idx);
/** The handler interface's drained: a writer waiting for room goes on. */
void dl_vm_stream_drained(dl_vm_t *vm, dl_req_t *req);

/* ---- lua_errtext.c */

/** The text of the raised value at the top of L (replaced by it); never
 * raises: a __tostring that fails gives a fixed text. */
const char *dl_lua_errtext(lua_State *L);
/** The text of the value at the top of co (perhaps a dead coroutine: nothing
 * is called on it), made on L (the VM's main state), into out. */
void dl_lua_errtext_of(lua_State *L, lua_State *co, char *out, size_t len);
/** 1 when the value at idx is an error that answers on purpose: a table with
 * a number `status` (api.fail's, or error({status = 404, message = "..."})). */
int dl_lua_is_status_error(lua_State *L, int idx);

/* ---- lua_request.c */

/**
 * Pushes on co the request table of req (method, path, id, params, body or
 * upload, the lazy fields) and keeps a reference to it in req->table_ref.
 * Returns 0, or the status to answer with (400, 413, 503) and why in msg when
 * the body cannot be decoded; co's stack is then the caller's to clear.
 */
int dl_vm_push_request(dl_vm_t *vm, dl_req_t *req, lua_State *co, char *msg, size_t msglen);
/** Cuts the request table off req (a handler that kept it sees nil fields). */
void dl_vm_release_request(dl_vm_t *vm, dl_req_t *req);

/* ---- lua_vm.c */

/** Frees a generation and its routes (g NULL: nothing). */
void dl_gen_free(dl_vm_t *vm, dl_gen_t *g);
/** Frees retired generations whose last request has ended. */
void dl_vm_reap_generations(dl_vm_t *vm);

#endif /* DL_LUA_VM_INTERNAL_H */
