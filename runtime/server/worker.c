/*
 * worker.c - event-loop threads. Each worker owns a uv loop, one listening
 * socket per address (all workers bind the same port with SO_REUSEPORT, so
 * the kernel spreads connections and no accept lock exists), its
 * connections, a Lua VM with the app loaded, and pools of request objects.
 * Graceful stop: listeners close, idle connections close, busy ones close
 * after their response; a grace timer bounds the wait.
 */
#include "server/worker.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bindings/dl_modules.h"
#include "cache/cache.h"
#include "http1/conn.h"
#include "http2/h2.h"
#include "inproc/inproc.h"
#include "outbound/http_client.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/num.h"
#include "server/config.h"
#include "lua/lua_vm.h"
#include "lua/user_modules.h"
#include "core/forwarded.h"
#include "core/upload.h"

#define REQ_POOL_MAX 1024

/* ============================================================ request pool */

dl_req_t *dl_worker_req_acquire(dl_worker_t *w)
{
    dl_req_t *r = w->free_reqs;
    if (r) {
        w->free_reqs = r->next_free;
        w->n_free_reqs--;
    } else {
        r = dl_calloc(1, sizeof(*r));
        if (r == NULL)
            return NULL;
    }
    /* keep the buffers' storage, reset everything else */
    dl_buf_t head = r->head, body = r->body;
    dl_header_t *headers = r->headers;
    int cap = r->cap_headers;
    memset(r, 0, sizeof(*r));
    r->head = head;
    r->body = body;
    dl_buf_reset(&r->head);
    dl_buf_reset(&r->body);
    r->headers = headers;
    r->cap_headers = cap;
    r->ctx = &w->core;
    r->table_ref = -2; /* LUA_NOREF */
    return r;
}

void dl_worker_req_release(dl_worker_t *w, dl_req_t *r)
{
    if (r->gen && w->vm)
        dl_vm_unpin(w->vm, r);
    /* files the handler did not move away are deleted */
    dl_upload_free(r->upload);
    r->upload = NULL;
    dl_buf_free(&r->stream_buf); /* a buffered stream's body (core/stream.c) */
    /* large buffers go back to the allocator, not the pool */
    if (r->body.cap > 64 * 1024)
        dl_buf_free(&r->body);
    if (r->head.cap > 16 * 1024)
        dl_buf_free(&r->head);
    if (w->n_free_reqs >= REQ_POOL_MAX || w->vm == NULL) {
        dl_buf_free(&r->head);
        dl_buf_free(&r->body);
        dl_free(r->headers);
        dl_free(r);
        return;
    }
    r->next_free = w->free_reqs;
    w->free_reqs = r;
    w->n_free_reqs++;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        h = (h ^ v) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return h;
}

int dl_worker_inflate(dl_worker_t *w, const char *gz, size_t len, const char **plain,
                      size_t *plain_len)
{
    uint64_t h = hash_bytes(gz, len);
    for (int i = 0; i < DL_INFLATE_MEMO; i++) {
        if (w->inflated[i].hash == h && w->inflated[i].gz.len == len &&
            memcmp(w->inflated[i].gz.data, gz, len) == 0) {
            *plain = w->inflated[i].plain.data;
            *plain_len = w->inflated[i].plain.len;
            return 0;
        }
    }
    int slot = w->inflated_next;
    w->inflated_next = (slot + 1) % DL_INFLATE_MEMO;
    dl_buf_t *gzb = &w->inflated[slot].gz, *pb = &w->inflated[slot].plain;
    w->inflated[slot].hash = 0;
    dl_buf_reset(gzb);
    dl_buf_reset(pb);
    int rc = dl_compressor_gunzip(w->compressor, gz, len, pb, (size_t)1 << 30);
    if (rc != 0 || dl_buf_append(gzb, gz, len) != 0) {
        dl_buf_free(gzb);
        dl_buf_free(pb);
        return rc ? rc : DL_ENOMEM;
    }
    /* big bodies are not worth keeping around */
    if (pb->len > (4u << 20)) {
        *plain = pb->data;
        *plain_len = pb->len;
        dl_buf_free(gzb);
        return 0;
    }
    w->inflated[slot].hash = h;
    *plain = pb->data;
    *plain_len = pb->len;
    return 0;
}

const char *dl_worker_date(dl_worker_t *w)
{
    long now = (long)time(NULL);
    if (now != w->date_sec) {
        w->date_sec = now;
        dl_http_date(now, w->date);
    }
    return w->date;
}

/* ============================================================ core context */

static dl_req_t *core_acquire(dl_core_ctx_t *x)
{
    return dl_worker_req_acquire(x->arg);
}

static void core_release(dl_core_ctx_t *x, dl_req_t *r)
{
    dl_worker_req_release(x->arg, r);
}

static void core_record(dl_core_ctx_t *x, dl_req_t *r, int status, size_t bytes)
{
    dl_worker_record(x->arg, r, status, bytes);
}

static int core_inflate(dl_core_ctx_t *x, const char *gz, size_t len, const char **plain,
                        size_t *plain_len)
{
    return dl_worker_inflate(x->arg, gz, len, plain, plain_len);
}

static const char *core_date(dl_core_ctx_t *x)
{
    return dl_worker_date(x->arg);
}

static int core_inproc(dl_core_ctx_t *x, const dl_inproc_req_t *in, dl_inproc_cb cb, void *arg,
                       const char **err, int *bad_field)
{
    dl_worker_t *w = x->arg;
    /* A handler's in-process request runs its route at once, on this C
     * stack, up to the route's first yield: a route that calls itself would
     * recurse until the stack overflows. */
    if (w->inproc_depth >= DL_INPROC_MAX_DEPTH) {
        if (err)
            *err = "in-process requests nested more than " DL_STR(DL_INPROC_MAX_DEPTH)
                   " deep without yielding (a route that calls itself through api.client?)";
        if (bad_field)
            *bad_field = -1;
        return DL_ELOOP;
    }
    w->inproc_depth++;
    int rc = dl_inproc_request(w->inproc, in, cb, arg, err, bad_field);
    w->inproc_depth--;
    return rc;
}

static void conn_closed(dl_http1_host_t *h, dl_conn_t *c);

/* The worker's part of the request core: its pool, clock, metrics and VM. */
static void core_init(dl_worker_t *w)
{
    dl_worker_shared_t *sh = w->shared;
    dl_core_ctx_t *x = &w->core;
    x->arg = w;
    x->acquire = core_acquire;
    x->release = core_release;
    x->record = core_record;
    x->inflate = core_inflate;
    x->date = core_date;
    x->inproc = core_inproc;
    x->cfg = w->cfg;
    x->prng = w->prng;
    x->n_requests = &w->n_requests;
    x->compressor = w->compressor;
    x->worker_id = w->id;
    x->hsts = sh->hsts && sh->hsts[0] ? sh->hsts : NULL;
    x->upload_dir = sh->upload_dir;
    x->canonical_host = sh->canonical_host;
    x->canonical_port = sh->canonical_port;
    x->https_port = sh->https_port;
    x->trusted = sh->trusted;
    dl_vm_handler(w->vm, &x->handler);

    dl_http1_host_t *h = &w->http1;
    h->core = x;
    h->loop = &w->loop;
    h->cfg = w->cfg;
    h->read_buf = w->read_buf;
    h->read_buf_len = sizeof(w->read_buf);
    h->h2 = &dl_h2_session;
    h->h2_arg = &sh->h2_metrics;
    h->metrics = sh->metrics;
    h->metric_tls_failures = sh->m.tls_failures;
    h->arg = w;
    h->closed = conn_closed;
}

/* ================================================================= loop */

/* The index of the listener server is in w's listeners. */
static int listener_of(dl_worker_t *w, uv_stream_t *server)
{
    long l = (long)((uv_tcp_t *)server - w->listeners);
    return l >= 0 && l < DL_MAX_LISTEN ? (int)l : 0;
}

static void on_refused_close(uv_handle_t *h)
{
    dl_free(h);
}

/* At the connection cap: accept (so the backlog drains and the listener
 * never spins on a ready socket), say why on a plain listener, and close. */
static void refuse(dl_worker_t *w, uv_stream_t *server)
{
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Content-Length: 69\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        "{\"error\":\"Service Unavailable\",\"message\":\"too many open connections\"}";
    dl_metric_add(w->shared->metrics, w->id, w->shared->m.conns_refused, NULL, 1);
    uv_tcp_t *t = dl_malloc(sizeof(*t));
    if (t == NULL || uv_tcp_init(&w->loop, t) != 0) {
        dl_free(t);
        return;
    }
    if (uv_accept(server, (uv_stream_t *)t) == 0 &&
        w->shared->tls[listener_of(w, server)] == NULL) {
        uv_buf_t b = uv_buf_init((char *)busy, sizeof(busy) - 1);
        uv_try_write((uv_stream_t *)t, &b, 1);
    }
    uv_close((uv_handle_t *)t, on_refused_close);
}

/* A connection closed (conn.c's close callback): unlink it, keep it pooled. */
static void conn_closed(dl_http1_host_t *h, dl_conn_t *c)
{
    dl_worker_t *w = h->arg;
    dl_list_remove(&c->link);
    w->n_conns--;
    if (w->n_free_conns < DL_CONN_POOL_MAX && !w->stopping) {
        dl_list_insert_head(&w->free_conns, &c->link);
        w->n_free_conns++;
    } else {
        dl_buf_free(&c->out);
        dl_free(c);
    }
    dl_worker_conn_closed(w);
}

/* Accepts a pending connection; HTTP/1 serves it (and hands it to HTTP/2 by
 * ALPN or the h2c preface, through w->http1.h2). */
static void on_connection(uv_stream_t *server, int status)
{
    dl_worker_t *w = server->data;
    if (status < 0) {
        dl_log(DL_LOG_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    if (w->cfg->max_connections > 0 && w->n_conns >= w->cfg->max_connections) {
        refuse(w, server);
        return;
    }
    dl_conn_t *c = NULL;
    if (!dl_list_empty(&w->free_conns)) {
        c = dl_list_entry(w->free_conns.next, dl_conn_t, link);
        dl_list_remove(&c->link);
        w->n_free_conns--;
        dl_buf_t out = c->out;
        memset(c, 0, sizeof(*c));
        c->out = out;
        dl_buf_reset(&c->out);
    } else {
        c = dl_calloc(1, sizeof(*c));
        if (c == NULL)
            return;
    }
    if (uv_tcp_init(&w->loop, &c->tcp) != 0) {
        dl_buf_free(&c->out); /* a pooled connection keeps its buffer */
        dl_free(c);
        return;
    }
    c->host = &w->http1;
    c->file_fd = -1;
    c->tcp.data = c;
    dl_list_insert_head(&w->conns, &c->link);
    w->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        dl_conn_close(c);
        return;
    }
    int l = listener_of(w, server);
    dl_conn_start(&w->http1, c, l, w->shared->tls[l]);
}

static char *put_str(char *p, char *end, const char *s)
{
    /* JSON-safe copy: route patterns and method names never need escapes,
     * but a quote or backslash must not break the line */
    while (*s && p < end) {
        char c = *s++;
        if (c == '"' || c == '\\' || (unsigned char)c < 0x20)
            c = '_';
        *p++ = c;
    }
    return p;
}

static char *put_lit(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_u64(char *p, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* The access-log record, built without printf: it runs for every request. */
static void access_log(dl_req_t *r, const char *method, const char *route, int status,
                       double secs, size_t bytes)
{
    char f[640];
    char *p = f, *end = f + 400;
    unsigned long long us = (unsigned long long)(secs * 1e6);
    p = put_lit(p, "{\"method\":\"");
    p = put_str(p, end, method);
    p = put_lit(p, "\",\"route\":\"");
    p = put_str(p, end, route);
    p = put_lit(p, "\",\"status\":");
    p = put_u64(p, (unsigned)status);
    p = put_lit(p, ",\"duration_ms\":");
    p = put_u64(p, us / 1000);
    *p++ = '.';
    *p++ = (char)('0' + us % 1000 / 100);
    *p++ = (char)('0' + us % 100 / 10);
    *p++ = (char)('0' + us % 10);
    p = put_lit(p, ",\"bytes\":");
    p = put_u64(p, bytes);
    p = put_lit(p, ",\"ip\":\"");
    p = put_lit(p, dl_client_get(r)->ip); /* inet_ntop's text: nothing to escape */
    *p++ = '"';
    *p++ = '}';
    dl_log_emit(DL_LOG_INFO | DL_LOG_FILE_ONLY, r->id, "request", 7, f, (size_t)(p - f));
}

void dl_worker_record(dl_worker_t *w, dl_req_t *r, int status, size_t bytes)
{
    dl_worker_shared_t *sh = w->shared;
    char code[24];
    code[dl_num_format_i64(status, code)] = '\0';
    /* the route's pattern, never the raw path: unknown URLs share one series */
    const char *route = r->route ? r->route->pattern : "unmatched";
    const char *method = r->method_name ? r->method_name : "UNKNOWN";
    /* protocol on the counter only: the histogram stays one series per route */
    const char *proto = r->http_major == 2 ? "HTTP/2" : r->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    const char *labels[4] = {method, route, code, proto};
    double secs = r->start_ns ? (double)(uv_hrtime() - r->start_ns) / 1e9 : 0;
    if (sh->http_metrics) {
        dl_metric_add(sh->metrics, w->id, sh->m.requests, labels, 1);
        dl_metric_observe(sh->metrics, w->id, sh->m.duration, labels, secs);
    }
    if (secs >= 1.0)
        dl_log_req(DL_LOG_WARN, r->id, "slow request: %s %s took %.3f s (status %d)", method,
                   route, secs, status);
    if (sh->access_log && DL_LOG_INFO >= dl_log_min_level)
        access_log(r, method, route, status, secs, bytes);
}

/* The pool's outcomes and state changes, into /metrics. */
static void on_redis_event(int event, int value, void *arg)
{
    dl_worker_t *w = arg;
    dl_backend_stats_t *bs = &w->shared->backends;
    if (event == DL_REDIS_EV_OUTCOME)
        dl_backend_outcome(bs, w->id, DL_BACKEND_REDIS, value);
    else if (event == DL_REDIS_EV_UP)
        dl_backend_set_up(bs, w->id, DL_BACKEND_REDIS, value);
    else
        dl_backend_set_breaker(bs, w->id, DL_BACKEND_REDIS, value);
}

/* api.shared's size and evictions, into worker 0's own slot (no lock). */
static void publish_shared(dl_worker_t *w)
{
    dl_worker_shared_t *sh = w->shared;
    dl_shdict_stats_t st;
    dl_shdict_stats(sh->shared_dict, &st);
    dl_metric_set(sh->metrics, w->id, sh->m.shared_bytes, NULL, (double)st.bytes);
    dl_metric_set(sh->metrics, w->id, sh->m.shared_entries, NULL, (double)st.entries);
    if (st.evictions > w->shared_evictions)
        dl_metric_add(sh->metrics, w->id, sh->m.shared_evictions, NULL,
                      (double)(st.evictions - w->shared_evictions));
    w->shared_evictions = st.evictions;
}

/* api.pubsub's counters and subscriptions, into worker 0's own slot. */
static void publish_pubsub(dl_worker_t *w)
{
    dl_worker_shared_t *sh = w->shared;
    dl_pubsub_stats_t st, *seen = &w->pubsub_seen;
    dl_pubsub_stats(sh->pubsub, &st);
    if (st.published > seen->published)
        dl_metric_add(sh->metrics, w->id, sh->m.pubsub_published, NULL,
                      (double)(st.published - seen->published));
    if (st.delivered > seen->delivered)
        dl_metric_add(sh->metrics, w->id, sh->m.pubsub_delivered, NULL,
                      (double)(st.delivered - seen->delivered));
    if (st.dropped > seen->dropped)
        dl_metric_add(sh->metrics, w->id, sh->m.pubsub_dropped, NULL,
                      (double)(st.dropped - seen->dropped));
    dl_metric_set(sh->metrics, w->id, sh->m.pubsub_subscriptions, NULL, (double)st.subscriptions);
    *seen = st;
}

static void on_sweep(uv_timer_t *t)
{
    dl_worker_t *w = t->data;
    uint64_t now = uv_now(&w->loop);
    char wid[16];
    snprintf(wid, sizeof(wid), "%d", w->id);
    const char *wl[1] = {wid};
    dl_metric_set(w->shared->metrics, w->id, w->shared->m.connections, wl, w->n_conns);
    if (w->vm)
        dl_metric_set(w->shared->metrics, w->id, w->shared->m.lua_memory, wl,
                      (double)lua_gc(w->vm->L, LUA_GCCOUNT, 0) * 1024.0 +
                          lua_gc(w->vm->L, LUA_GCCOUNTB, 0));
    if (w->id == 0 && w->shared->shared_dict) /* one worker publishes the process's dictionary */
        publish_shared(w);
    if (w->id == 0 && w->shared->pubsub)
        publish_pubsub(w);
    if (w->http) /* idle connections come and go without a call to see it */
        dl_http_client_publish(w->http, w->shared->metrics, w->id, w->shared->m.http_client_pool);
    dl_list_t *it, *tmp; /* closing unlinks only in the close callback */
    dl_list_foreach_safe(it, tmp, &w->conns)
        dl_conn_sweep(dl_list_entry(it, dl_conn_t, link), now);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    DL_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish_stop(dl_worker_t *w)
{
    uv_timer_stop(&w->grace);
    uv_timer_stop(&w->sweep);
    /* force-close what is left: the grace period is over. Connections first:
     * closing detaches the requests of parked handlers (HTTP/1 active, HTTP/2
     * streams), which must still exist when it does */
    dl_list_t *it, *tmp;
    dl_list_foreach_safe(it, tmp, &w->conns)
        dl_conn_close(dl_list_entry(it, dl_conn_t, link));
    /* handlers still parked (sleeping, waiting on I/O) are abandoned */
    dl_vm_cancel_tasks(w->vm);
    if (w->redis) {
        dl_redis_pool_free(w->redis); /* its handles close on this loop */
        w->redis = NULL;
    }
    dl_http_client_free(w->http); /* the tasks let go of theirs above */
    w->http = NULL;
    /* no publish may wake the handle once it closes */
    dl_pubsub_inbox_close(w->pubsub_inbox);
    if (!uv_is_closing((uv_handle_t *)&w->wakeup))
        uv_close((uv_handle_t *)&w->wakeup, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->sweep))
        uv_close((uv_handle_t *)&w->sweep, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->grace))
        uv_close((uv_handle_t *)&w->grace, NULL);
}

void dl_worker_conn_closed(dl_worker_t *w)
{
    if (w->stopping && w->n_conns == 0 && !uv_is_closing((uv_handle_t *)&w->wakeup))
        finish_stop(w);
}

static void on_grace(uv_timer_t *t)
{
    dl_worker_t *w = t->data;
    if (w->n_conns)
        dl_log(DL_LOG_WARN, "worker %d: grace period over, closing %d connections", w->id,
               w->n_conns);
    finish_stop(w);
}

/* Builds generation N+1 from the app folder; new requests use it at once. */
static void worker_reload(dl_worker_t *w)
{
    if (w->vm == NULL)
        return;
    dl_buf_t errors = DL_BUF_INIT;
    uint64_t t0 = uv_hrtime();
    int n = dl_vm_load_app(w->vm, w->shared->cfg->app_dir, &errors);
    if (n)
        dl_log(DL_LOG_ERROR, "worker %d: reload failed, keeping generation %d:\n%.*s", w->id,
               w->vm->gen ? w->vm->gen->id : 0, (int)errors.len, errors.data ? errors.data : "");
    else
        dl_log(DL_LOG_DEBUG, "worker %d: generation %d in %.1f ms", w->id, w->vm->gen->id,
               (double)(uv_hrtime() - t0) / 1e6);
    dl_buf_free(&errors);
    if (n == 0)
        dl_vm_reloaded(w->vm);
}

int dl_worker_post(dl_worker_t *w, dl_worker_job_t *job)
{
    uv_mutex_lock(&w->jobs_lock);
    if (w->jobs_closed) {
        uv_mutex_unlock(&w->jobs_lock);
        return DL_ECANCELED;
    }
    job->next = w->jobs;
    w->jobs = job;
    uv_mutex_unlock(&w->jobs_lock);
    __atomic_or_fetch(&w->ops, DL_WORKER_OP_JOBS, __ATOMIC_ACQ_REL);
    uv_async_send(&w->wakeup);
    return 0;
}

static void run_jobs(dl_worker_t *w)
{
    uv_mutex_lock(&w->jobs_lock);
    dl_worker_job_t *list = w->jobs;
    w->jobs = NULL;
    uv_mutex_unlock(&w->jobs_lock);
    /* posted last-first: reverse, so jobs run in the order they came */
    dl_worker_job_t *rev = NULL;
    while (list) {
        dl_worker_job_t *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        dl_worker_job_t *n = rev->next;
        rev->run(w, rev);
        rev = n;
    }
}

static void on_wakeup(uv_async_t *a)
{
    dl_worker_t *w = a->data;
    int ops = __atomic_exchange_n(&w->ops, 0, __ATOMIC_ACQ_REL);
    if (ops & DL_WORKER_OP_JOBS)
        run_jobs(w);
    if (ops & DL_WORKER_OP_PUBSUB)
        dl_pubsub_inbox_run(w->pubsub_inbox); /* subscribers' tasks resume */
    if ((ops & DL_WORKER_OP_RELOAD) && !w->stopping)
        worker_reload(w);
    if (!(ops & DL_WORKER_OP_STOP) || w->stopping)
        return;
    w->stopping = 1;
    w->core.stopping = 1;
    for (int i = 0; i < w->n_listeners; i++)
        uv_close((uv_handle_t *)&w->listeners[i], NULL);
    w->n_listeners = 0;
    dl_list_t *it, *tmp;
    dl_list_foreach_safe(it, tmp, &w->conns)
        dl_conn_stop(dl_list_entry(it, dl_conn_t, link));
    if (w->n_conns == 0) {
        finish_stop(w);
        return;
    }
    uv_timer_start(&w->grace, on_grace, w->cfg->shutdown_grace_ms, 0);
}

static void worker_main(void *arg)
{
    dl_worker_t *w = arg;
    dl_log_thread_init(); /* this thread's own lock-free log ring */
    dl_vm_start(w->vm);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* handles of parked tasks (sleep timers) are cancelled with the VM */
    dl_inproc_abort_all(w->inproc); /* callbacks may resume tasks: before the VM goes */
    dl_pubsub_inbox_close(w->pubsub_inbox);
    dl_vm_free(w->vm);
    w->vm = NULL;
    uv_walk(&w->loop, close_walk_cb, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    dl_log_thread_exit();
    __atomic_store_n(&w->thread_done, 1, __ATOMIC_RELEASE);
}

/* ============================================================ the VM's host */

static int host_env(const char *name, uint64_t *out)
{
    if (!dl_env_known(name)) /* dl_env_u64 asserts on a name outside its table */
        return -1;
    *out = dl_env_u64(name);
    return 0;
}

void dl_worker_host_base(dl_lua_host_t *host)
{
    memset(host, 0, sizeof(*host));
    host->worker_id = -1;
    host->modules = dl_modules_builtin;
    host->preload = dl_user_modules_preload;
    host->env_u64 = host_env;
}

static void host_stop(void *data)
{
    dl_worker_shared_t *sh = ((dl_worker_t *)data)->shared;
    sh->stop(sh->arg);
}

static void host_reload_status(void *data, dl_reload_status_t *out)
{
    dl_worker_shared_t *sh = ((dl_worker_t *)data)->shared;
    sh->reload_status(sh->arg, out);
}

/* Worker i's figures; other workers' connections and Lua memory as they
 * published them on their sweep (read through the registry). */
static void host_worker_stats(void *data, int i, dl_lua_worker_stats_t *out)
{
    dl_worker_t *w = data;
    dl_worker_shared_t *sh = w->shared;
    dl_worker_t *x = &sh->workers[i];
    char wid[16];
    snprintf(wid, sizeof(wid), "%d", i);
    const char *lv[1] = {wid};
    out->connections =
        x == w ? (double)w->n_conns : dl_metric_value(sh->metrics, sh->m.connections, lv);
    out->lua_memory_bytes = dl_metric_value(sh->metrics, sh->m.lua_memory, lv);
    out->requests = (double)__atomic_load_n(&x->n_requests, __ATOMIC_RELAXED);
}

static void fill_host(dl_worker_t *w)
{
    dl_worker_shared_t *sh = w->shared;
    dl_lua_host_t *h = &w->host;
    dl_worker_host_base(h);
    h->loop = &w->loop;
    h->worker_id = w->id;
    h->n_workers = &sh->n_workers;
    h->cfg = w->cfg;
    h->compressor = w->compressor;
    h->cache = w->cache;
    h->redis = w->redis;
    h->http = w->http;
    h->store = sh->store;
    h->store_guard = sh->has_store_guard ? &sh->store_guard : NULL;
    h->memcache = sh->memcache;
    h->shared_dict = sh->shared_dict;
    h->pubsub = sh->pubsub;
    h->pubsub_inbox = w->pubsub_inbox;
    h->db_path = sh->db_path;
    h->start_time = sh->start_time;
    h->metrics = sh->metrics;
    h->metrics_shared = sh->cfg->workers;
    h->m.cache_lookup = sh->m.cache_lookup;
    h->m.db_duration = sh->m.db_duration;
    h->m.log_dropped = sh->m.log_dropped;
    h->m.metrics_overflow = sh->m.metrics_overflow;
    h->m.connections = sh->m.connections;
    h->m.lua_memory = sh->m.lua_memory;
    h->m.http_client_requests = sh->m.http_client_requests;
    h->m.http_client_duration = sh->m.http_client_duration;
    h->m.http_client_pool = sh->m.http_client_pool;
    h->data = w;
    h->stop = host_stop;
    h->reload_status = host_reload_status;
    h->worker_stats = host_worker_stats;
    h->core = &w->core;
}

/* ================================================================ worker */

static void pubsub_wake(void *data);

int dl_worker_init(dl_worker_t *w, dl_worker_shared_t *sh, int id, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    dl_list_init(&w->conns);
    dl_list_init(&w->free_conns);
    w->shared = sh;
    w->cfg = sh->cfg;
    w->id = id;
    for (int i = 0; i < DL_MAX_LISTEN; i++)
        w->listen_fds[i] = -1;
    dl_prng_seed(w->prng);
    int rc = uv_loop_init(&w->loop);
    if (rc != 0) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rc));
        return DL_EIO;
    }
    w->loop.data = w;
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    if (sh->pubsub) {
        w->pubsub_inbox = dl_pubsub_inbox_new(sh->pubsub, pubsub_wake, w);
        if (w->pubsub_inbox == NULL) {
            snprintf(err, errlen, "out of memory");
            return DL_ENOMEM;
        }
    }
    uv_mutex_init(&w->jobs_lock);
    uv_timer_init(&w->loop, &w->sweep);
    w->sweep.data = w;
    uv_timer_init(&w->loop, &w->grace);
    w->grace.data = w;
    w->compressor = dl_compressor_new(w->cfg->gzip_level);
    if (sh->has_redis) {
        w->redis = dl_redis_pool_new(&w->loop, &sh->redis_cfg);
        char label[32];
        snprintf(label, sizeof(label), "worker %d", id);
        dl_redis_pool_set_label(w->redis, label);
        dl_redis_pool_observe(w->redis, on_redis_event, w);
        w->cache = w->redis ? dl_cache_new_redis(w->redis, &w->loop) : NULL;
    } else {
        w->cache = dl_cache_new_memory(sh->memcache, &w->loop);
    }
    if (w->cache == NULL) {
        snprintf(err, errlen, "cannot create the cache");
        return DL_ENOMEM;
    }
    w->http = dl_http_client_new(&w->loop, &sh->http_client);
    if (w->http == NULL) {
        snprintf(err, errlen, "cannot create the HTTP client");
        return DL_ENOMEM;
    }

    fill_host(w);
    w->vm = dl_vm_new(&w->host);
    if (w->vm == NULL) {
        snprintf(err, errlen, "cannot create a Lua state");
        return DL_ENOMEM;
    }
    dl_buf_t errors = DL_BUF_INIT;
    if (dl_vm_load_app(w->vm, sh->cfg->app_dir, &errors) != 0) {
        snprintf(err, errlen, "%.*s", (int)errors.len, errors.data ? errors.data : "");
        dl_buf_free(&errors);
        return DL_ESCRIPT;
    }
    dl_buf_free(&errors);
    core_init(w);
    w->inproc = dl_inproc_new(&w->core, &w->loop);
    if (w->inproc == NULL) {
        snprintf(err, errlen, "out of memory");
        return DL_ENOMEM;
    }
    return 0;
}

static int start_listening(dl_worker_t *w);

int dl_worker_start(dl_worker_t *w)
{
    int rc = start_listening(w);
    if (rc != 0)
        return rc;
    rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc == 0)
        w->thread_started = 1;
    return rc;
}

int dl_worker_start_on_caller(dl_worker_t *w)
{
    int rc = start_listening(w);
    if (rc != 0)
        return rc;
    dl_log_thread_init(); /* the caller's thread logs through its own ring */
    dl_vm_start(w->vm);
    return 0;
}

static int start_listening(dl_worker_t *w)
{
    for (int i = 0; i < w->n_listeners; i++) {
        uv_tcp_init(&w->loop, &w->listeners[i]);
        w->listeners[i].data = w;
        int rc = uv_tcp_open(&w->listeners[i], w->listen_fds[i]);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&w->listeners[i], 4096, on_connection);
        if (rc != 0) {
            dl_log(DL_LOG_ERROR, "worker %d: listen: %s", w->id, uv_strerror(rc));
            return rc;
        }
        w->listen_fds[i] = -1; /* owned by the handle now */
    }
    /* check deadlines four times per shortest timeout, at most once a second */
    uint64_t t = w->cfg->header_timeout_ms;
    t = DL_MIN(t, w->cfg->keepalive_timeout_ms);
    t = DL_MIN(t, w->cfg->body_timeout_ms);
    uint64_t period = DL_MAX(DL_MIN(t / 4, 1000), 50);
    uv_timer_start(&w->sweep, on_sweep, period, period);
    return 0;
}

/* A subscription of this worker got a message (any thread, under the hub's
 * lock: an atomic or and an async send, nothing that blocks). */
static void pubsub_wake(void *data)
{
    dl_worker_t *w = data;
    __atomic_or_fetch(&w->ops, DL_WORKER_OP_PUBSUB, __ATOMIC_ACQ_REL);
    uv_async_send(&w->wakeup);
}

void dl_worker_stop(dl_worker_t *w)
{
    __atomic_or_fetch(&w->ops, DL_WORKER_OP_STOP, __ATOMIC_ACQ_REL);
    uv_async_send(&w->wakeup);
}

void dl_worker_reload(dl_worker_t *w)
{
    __atomic_or_fetch(&w->ops, DL_WORKER_OP_RELOAD, __ATOMIC_ACQ_REL);
    uv_async_send(&w->wakeup);
}

void dl_worker_join(dl_worker_t *w)
{
    if (w->thread_started) {
        uv_thread_join(&w->thread);
        w->thread_started = 0;
    } else {
        /* never started: close what init opened */
        dl_inproc_abort_all(w->inproc); /* callbacks may resume tasks: before the VM goes */
        dl_pubsub_inbox_close(w->pubsub_inbox);
        dl_vm_free(w->vm);
        w->vm = NULL;
        if (w->redis) {
            dl_redis_pool_free(w->redis);
            w->redis = NULL;
        }
        dl_http_client_free(w->http);
        w->http = NULL;
        uv_walk(&w->loop, close_walk_cb, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    for (int i = 0; i < DL_MAX_LISTEN; i++)
        if (w->listen_fds[i] >= 0)
            close(w->listen_fds[i]);
    while (!dl_list_empty(&w->free_conns)) {
        dl_conn_t *c = dl_list_entry(w->free_conns.next, dl_conn_t, link);
        dl_list_remove(&c->link);
        dl_buf_free(&c->out);
        dl_free(c);
    }
    while (w->free_reqs) {
        dl_req_t *r = w->free_reqs;
        w->free_reqs = r->next_free;
        dl_buf_free(&r->head);
        dl_buf_free(&r->body);
        dl_free(r->headers);
        dl_free(r);
    }
    dl_inproc_free(w->inproc);
    w->inproc = NULL;
    dl_compressor_free(w->compressor);
    for (int i = 0; i < DL_INFLATE_MEMO; i++) {
        dl_buf_free(&w->inflated[i].gz);
        dl_buf_free(&w->inflated[i].plain);
    }
    dl_cache_free(w->cache);
    w->cache = NULL;
    /* jobs that came too late to run are told so (run with no worker); later
     * posts are refused */
    uv_mutex_lock(&w->jobs_lock);
    w->jobs_closed = 1;
    uv_mutex_unlock(&w->jobs_lock);
    while (w->jobs) {
        dl_worker_job_t *j = w->jobs;
        w->jobs = j->next;
        j->run(NULL, j);
    }
    uv_mutex_destroy(&w->jobs_lock);
    uv_loop_close(&w->loop);
}
