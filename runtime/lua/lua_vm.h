/*
 * lua_vm.h - a worker's LuaJIT state: the loaded app (a generation of routes),
 * request dispatch into handler coroutines ("tasks"), and the task hooks that
 * bindings use to park a coroutine on I/O and resume it from a callback
 * (OpenResty's cosocket model). The structures, the task hooks and the
 * devloop.core primitives are in lua_state.h, included here.
 */
#ifndef DL_LUA_VM_H
#define DL_LUA_VM_H

#include <lua.h>
#include <uv.h>

#include "common/buf.h"
#include "core/http.h"
#include "core/request.h"
#include "common/internal.h"
#include "lua/lua_host.h"
#include "lua/lua_state.h"

/** Creates a VM: standard libraries, the devloop modules, cjson. host (kept,
 * not copied) gives it the settings (host->cfg), and the loop and the
 * backends while serving; with its loop
 * NULL, or host NULL, the VM only loads and checks. */
dl_vm_t *dl_vm_new(const dl_lua_host_t *host);
void dl_vm_free(dl_vm_t *vm);

/**
 * Loads app_dir (app.lua, routes/ and jobs/ Lua files) into a new generation and
 * makes it current. Each error is appended to errors as "file:line: message\n".
 * Returns the number of errors; with errors the current generation is kept.
 */
int dl_vm_load_app(dl_vm_t *vm, const char *app_dir, dl_buf_t *errors);

/** Runs the app's start hooks (api.on_start) in a background task. */
void dl_vm_start(dl_vm_t *vm);
/** After a reload: applies what the new generation declares outside Lua
 * (its indexes, the job scheduler) in a background task. */
void dl_vm_reloaded(dl_vm_t *vm);

/**
 * Looks up req's route in the current generation (at headers-complete) and
 * pins that generation until dl_vm_unpin(): a reload meanwhile lets the
 * request finish on the code it started on.
 */
void dl_vm_route(dl_vm_t *vm, dl_req_t *req);
/**
 * Runs the route's head-only check (its auth option) for a request whose body
 * has not been read: returns 0 when the request may go on, else the status to
 * answer with, the reason in msg. Runs Lua synchronously; never yields.
 */
int dl_vm_precheck(dl_vm_t *vm, dl_req_t *req, char *msg, size_t msglen);
/** Lets go of req's generation; a retired one is freed with its last request. */
void dl_vm_unpin(dl_vm_t *vm, dl_req_t *req);

/** Runs req's handler in a new task; answers through dl_req_respond(). */
void dl_vm_dispatch(dl_vm_t *vm, dl_req_t *req);
/** Fills h so that the request core (core/request.h) reaches vm's handlers. */
void dl_vm_handler(dl_vm_t *vm, dl_handler_t *h);


#endif
