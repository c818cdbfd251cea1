/*
 * lua_stream.c - api.stream in the Lua layer: once the handler returned
 * (status, fn, headers, core._stream), the head goes out (core/stream.h)
 * and fn(write) runs in a task of its own. write(chunk) queues the chunk
 * and, past the connection's high-water mark, parks the task until the
 * protocol says the bytes went (the handler interface's drained); it
 * returns false, "closed" once the client is gone. The task's end ends the
 * stream: well when fn returns, as a protocol error when it raises (the
 * status line is sent: never a second one).
 */
#include <lauxlib.h>
#include <string.h>

#include "common/log.h"
#include "core/stream.h"
#include "lua/lua_vm_internal.h"

/* the cancel of a task parked in write: nothing to detach (the drained
 * call finds it through its request) */
static void waiting_for_room(void *data)
{
    DL_UNUSED(data);
}

static void finish_stream(dl_task_t *t, int ok)
{
    dl_req_t *req = t->req;
    if (!ok) {
        char where[600];
        dl_lua_errtext_of(t->vm->L, t->co, where, sizeof(where));
        dl_log_req(DL_LOG_ERROR, req->id, "%s %.*s: the stream failed after its head was sent "
                   "(the answer ends incomplete): %s", req->method_name, (int)req->path_len,
                   req->head.data, where);
    }
    dl_vm_release_request(t->vm, req);
    req->task = NULL;
    dl_task_free(t, ok);
    dl_req_stream_end(req, ok);
}

void dl_vm_stream_start(dl_vm_t *vm, dl_req_t *req, const dl_resp_t *resp, lua_State *co,
                        int idx)
{
    int rc = dl_req_stream_begin(req, resp);
    if (rc == DL_ECONNRESET) {
        dl_vm_release_request(vm, req);
        dl_req_respond(req, resp); /* the connection is gone: this lets req go */
        return;
    }
    if (rc != 0) {
        dl_vm_release_request(vm, req);
        dl_req_respond_error(req, 500, rc == DL_ENOMEM ? "out of memory" : NULL);
        return;
    }
    dl_task_t *t = dl_task_new(vm, req);
    if (t == NULL) {
        dl_vm_release_request(vm, req);
        dl_req_stream_end(req, 0);
        return;
    }
    req->task = t;
    t->finish = finish_stream;
    lua_checkstack(t->co, 4);
    lua_pushvalue(co, idx);
    lua_xmove(co, t->co, 1);
    lua_pushcfunction(t->co, dl__stream_write);
    dl_task_resume(t, 1);
}

/* write(chunk) -> true | false, "closed" */
int dl__stream_write(lua_State *L)
{
    dl_task_t *t = dl_task_current(L);
    dl_req_t *req = t ? t->req : NULL;
    if (req == NULL || req->task != t || req->streaming == DL_STREAM_NONE)
        return luaL_error(L, "write belongs to the function given to api.stream, and only its "
                             "own task may call it (not an api.parallel branch, not after it "
                             "returned)");
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    int rc = dl_req_stream_write(req, p, n);
    if (rc == 1) {
        dl_task_park(t, waiting_for_room, NULL);
        return lua_yield(L, 0);
    }
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, rc == DL_ECONNRESET ? "closed" : dl_strerror(rc));
    return 2;
}

void dl_vm_stream_drained(dl_vm_t *vm, dl_req_t *req)
{
    DL_UNUSED(vm);
    dl_task_t *t = req->task;
    if (t == NULL || t->cancel != waiting_for_room)
        return;
    dl_task_park(t, NULL, NULL);
    if (req->conn != NULL && !req->conn->closed) {
        lua_pushboolean(t->co, 1);
        dl_task_resume(t, 1);
    } else {
        lua_pushboolean(t->co, 0);
        lua_pushliteral(t->co, "closed");
        dl_task_resume(t, 2);
    }
}
