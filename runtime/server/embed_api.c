/*
 * embed_api.c - what embedders add to the runtime (their Lua modules written
 * in C are lua/user_modules.c's): suspended calls completed from any thread,
 * and in-process requests from any thread (dl_runtime_request). A
 * dl_pending_t holds a uv_async_t on the worker's loop: dl_pending_complete()
 * stores the result and sends the async, and the worker resumes the
 * coroutine from the async callback, never from the completing thread. If the
 * task dies first (request gone, shutdown) its cancel hook only forgets the
 * task; the handle stays until completion so a late dl_pending_complete() is
 * still safe.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <uv.h>

#include "inproc/inproc.h"
#include "common/internal.h"
#include "lua/lua_vm.h"
#include "server/server.h"
#include "server/worker.h"

/* ======================================================= pending calls */

struct dl_pending_s {
    uv_async_t async;
    dl_task_t *task;  /* NULL once the task is gone */
    int ok;           /* ok, data and len are set before uv_async_send */
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
        dl_task_resume_string(t, p->data, p->len, NULL);
    } else {
        /* the message as given (it may hold no NUL) */
        char msg[512];
        snprintf(msg, sizeof(msg), "%.*s", p->data ? (int)p->len : 6, p->data ? p->data : "failed");
        dl_task_resume_string(t, NULL, 0, msg);
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
    if (t == NULL || dl_lua_host(L) == NULL)
        return NULL;
    dl_pending_t *p = dl_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    if (uv_async_init(t->vm->host->loop, &p->async, on_pending_async) != 0) {
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
    uv_async_send(&p->async); /* a full barrier: the worker sees the fields */
    return 0;
}

/* ================================================== in-process requests */

typedef struct {
    dl_worker_job_t job;
    dl_inproc_req_t in; /* pointing into parts and fields */
    dl_buf_t parts;     /* copies of the caller's method, path, body and header lines */
    dl_http_field_t *fields;
    uv_mutex_t mu;
    uv_cond_t cv;
    int done, failed;
    dl_response_t resp;
    int refs; /* the caller's and the worker's */
} sync_req_t;

static void sync_release(sync_req_t *sr)
{
    if (__atomic_sub_fetch(&sr->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    uv_cond_destroy(&sr->cv);
    uv_mutex_destroy(&sr->mu);
    dl_free(sr->fields);
    dl_buf_free(&sr->parts);
    dl_free(sr->resp._raw);
    dl_free(sr);
}

/* The answer, copied once into memory the caller's dl_response_t owns: the
 * fields array, then the header lines they point into, then the body. */
static void sync_done(const dl_inproc_answer_t *a, void *arg)
{
    sync_req_t *sr = arg;
    uv_mutex_lock(&sr->mu);
    size_t n = a ? (size_t)a->n_fields : 0, lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += a->fields[i].name_len + 2 + a->fields[i].value_len + 2;
    size_t arr = n * sizeof(dl_response_field_t);
    char *mem = a ? dl_malloc(arr + lines + a->body_len + 1) : NULL;
    if (mem) {
        dl_response_field_t *f = (dl_response_field_t *)(void *)mem;
        char *h = mem + arr, *p = h;
        for (size_t i = 0; i < n; i++) {
            const dl_http_field_t *src = &a->fields[i];
            f[i] = (dl_response_field_t){.name = p, .name_len = src->name_len,
                                         .value = p + src->name_len + 2,
                                         .value_len = src->value_len};
            memcpy(p, src->name, src->name_len);
            p += src->name_len;
            memcpy(p, ": ", 2);
            p += 2;
            memcpy(p, src->value, src->value_len);
            p += src->value_len;
            memcpy(p, "\r\n", 2);
            p += 2;
        }
        memcpy(p, a->body, a->body_len);
        p[a->body_len] = '\0';
        sr->resp = (dl_response_t){.status = a->status,
                                   .headers = h,
                                   .headers_len = lines,
                                   .body = p,
                                   .body_len = a->body_len,
                                   .fields = n ? f : NULL,
                                   .n_fields = n,
                                   ._raw = mem};
    } else {
        sr->failed = 1;
    }
    sr->done = 1;
    uv_cond_signal(&sr->cv);
    uv_mutex_unlock(&sr->mu);
    sync_release(sr);
}

static void sync_run(dl_worker_t *w, dl_worker_job_t *job)
{
    sync_req_t *sr = (sync_req_t *)job;
    if (w == NULL || dl_inproc_request(w->inproc, &sr->in, sync_done, sr, NULL, NULL) != 0)
        sync_done(NULL, sr);
}

/* Each "Name: value" line is split at its first colon into a field; the
 * parts are checked (dl_http_request_check) before anything waits or is
 * sent, so a CR or LF in one is refused rather than passed on. The worker
 * gets its own copy of every part: a caller that timed out is gone. */
static int take_parts(sync_req_t *sr, const char *method, const char *path,
                      const char *const *headers, const char *body, size_t body_len)
{
    int n = 0;
    while (headers && headers[n])
        n++;
    dl_http_field_t *fields = n ? dl_calloc((size_t)n, sizeof(*fields)) : NULL;
    if (n && fields == NULL)
        return DL_ENOMEM;
    for (int i = 0; i < n; i++) {
        const char *h = headers[i], *colon = strchr(h, ':');
        if (colon == NULL) {
            dl_free(fields);
            return DL_EINVAL; /* not "Name: value" */
        }
        fields[i] = (dl_http_field_t){.name = h,
                                      .name_len = (size_t)(colon - h),
                                      .value = colon + 1,
                                      .value_len = strlen(colon + 1)};
    }
    size_t mlen = strlen(method), plen = strlen(path);
    int rc = dl_http_request_check(method, mlen, path, plen, fields, n, body, body_len, NULL, NULL,
                                   NULL);
    dl_buf_t *b = &sr->parts;
    if (rc == 0) {
        dl_buf_append(b, method, mlen);
        dl_buf_append(b, path, plen);
        if (body_len)
            dl_buf_append(b, body, body_len);
        for (int i = 0; i < n; i++)
            dl_buf_append_str(b, headers[i]);
        rc = b->oom ? DL_ENOMEM : 0;
    }
    if (rc != 0) {
        dl_free(fields);
        return rc;
    }
    /* the copies, in the order they were appended */
    const char *p = b->data;
    sr->in = (dl_inproc_req_t){.method = p,
                               .method_len = mlen,
                               .path = p + mlen,
                               .path_len = plen,
                               .body = p + mlen + plen,
                               .body_len = body_len,
                               .fields = fields,
                               .n_fields = n};
    p += mlen + plen + body_len;
    for (int i = 0; i < n; i++) {
        fields[i].name = p;
        fields[i].value = p + fields[i].name_len + 1;
        p += strlen(headers[i]);
    }
    sr->fields = fields;
    return 0;
}

int dl_runtime_request(dl_runtime_t *rt, const char *method, const char *path,
                       const char *const *headers, const char *body, size_t body_len,
                       uint64_t timeout_ms, dl_response_t *out)
{
    if (out)
        memset(out, 0, sizeof(*out));
    if (rt == NULL || method == NULL || path == NULL || out == NULL ||
        (body == NULL && body_len > 0))
        return DL_EINVAL;
    sync_req_t *sr = dl_calloc(1, sizeof(*sr));
    if (sr == NULL)
        return DL_ENOMEM;
    /* refused before anything waits or is sent */
    int brc = take_parts(sr, method, path, headers, body, body_len);
    if (brc != 0) {
        dl_buf_free(&sr->parts);
        dl_free(sr);
        return brc;
    }
    if (timeout_ms == 0)
        timeout_ms = 30000;
    uint64_t deadline = uv_hrtime() + timeout_ms * 1000000u;
    /* wait for dl_runtime_run() to have its workers up */
    while (!__atomic_load_n(&rt->serving, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&rt->stop_requested, __ATOMIC_ACQUIRE) || uv_hrtime() > deadline) {
            dl_free(sr->fields);
            dl_buf_free(&sr->parts);
            dl_free(sr);
            return __atomic_load_n(&rt->stop_requested, __ATOMIC_ACQUIRE) ? DL_ECANCELED
                                                                          : DL_ETIMEDOUT;
        }
        uv_sleep(1);
    }
    sr->refs = 2;
    uv_mutex_init(&sr->mu);
    uv_cond_init(&sr->cv);
    sr->job.run = sync_run;
    if (dl_worker_post(&rt->shared.workers[0], &sr->job) != 0) {
        sr->refs = 1;
        sync_release(sr);
        return DL_ECANCELED;
    }
    int rc = 0;
    uv_mutex_lock(&sr->mu);
    while (!sr->done) {
        uint64_t now = uv_hrtime();
        if (now >= deadline || uv_cond_timedwait(&sr->cv, &sr->mu, deadline - now) != 0) {
            if (!sr->done)
                rc = DL_ETIMEDOUT;
            break;
        }
    }
    if (rc == 0 && sr->failed)
        rc = DL_EIO;
    if (rc == 0) {
        *out = sr->resp;
        sr->resp._raw = NULL; /* out owns it */
    }
    uv_mutex_unlock(&sr->mu);
    sync_release(sr);
    return rc;
}

void dl_response_free(dl_response_t *res)
{
    if (res == NULL)
        return;
    dl_free(res->_raw);
    memset(res, 0, sizeof(*res));
}
