/*
 * http_client.h - outbound HTTP/1.1 exchanges for a worker: name lookup
 * (dns.h), a keep-alive connection by origin (pool.h, conn.h), the request
 * written, the response read with llhttp and decoded (gzip, deflate) under
 * one deadline and a body limit. An exchange either buffers the whole body
 * or, streamed, hands it over piece by piece. A response that breaks the
 * protocol, leaves bytes behind or is cut short never returns its
 * connection to the pool. Everything runs on the loop's thread.
 */
#ifndef DL_HTTP_CLIENT_H
#define DL_HTTP_CLIENT_H

#include <uv.h>

#include "common/buf.h"
#include "common/metrics.h"
#include "outbound/pool.h"

typedef struct dl_http_client_s dl_http_client_t;
typedef struct dl_http_x_s dl_http_x_t;

/** A worker's settings for outbound HTTP. */
typedef struct {
    dl_out_limits_t pool;   /* per origin */
    uint64_t dns_ttl_ms;
    int dns_max_names;
} dl_http_client_cfg_t;

/** The parts of an absolute http(s) URL (dl_http_url_parse). */
typedef struct {
    int tls;
    int port;
    char host[256];      /* without brackets for IPv6 */
    char label[272];     /* "host:port" ("[v6]:port"), for messages, metrics and keys */
    size_t label_len;
    const char *target;  /* path and query, borrowed from the URL ("/" when empty) */
    size_t target_len;
} dl_http_url_t;

/** Parses url; 0, or -1 with why ("invalid: ..." text) in why. */
int dl_http_url_parse(const char *url, size_t len, dl_http_url_t *out, char *why, size_t whylen);

/** What an exchange sends and how it reads the answer (borrowed for dl_http_start). */
typedef struct {
    const char *method;
    const dl_http_url_t *url;
    const char *headers;   /* extra "Name: value\r\n" lines, checked by the caller */
    size_t headers_len;
    const char *body;      /* NULL: none */
    size_t body_len;
    int body_fd;           /* or a file to send, body_file_size bytes from its start;
                              the exchange takes it (closes it), -1: none */
    uint64_t body_file_size;
    uint64_t timeout_ms;   /* the whole exchange, a streamed body's last byte included */
    uint64_t connect_timeout_ms;
    size_t max_body;       /* decoded body bytes */
    int decode;            /* send Accept-Encoding: gzip, deflate and decode what comes */
    int stream;            /* the callback comes with the headers; pieces via dl_http_x_read */
    int head_only;         /* a response without a body (HEAD) */
    int idempotent;        /* may be sent again when a reused connection turns out dead */
    int tls_verify;
    const char *tls_ca;    /* NULL: the system store */
    const char *tls_server_name; /* NULL: the URL's host */
} dl_http_req_t;

/**
 * The exchange's outcome in the callback: status 0 and x->code, x->hdrs,
 * x->body (buffered) filled in; or a negative DL_E* and x->err, whose text
 * starts with the error's kind (timeout, connect, dns, tls, protocol, too
 * large, invalid).
 */
typedef void (*dl_http_cb)(dl_http_x_t *x, int status, void *arg);

struct dl_http_x_s {
    int code;             /* the final status code */
    dl_buf_t hdrs;        /* "name\0value\0" pairs, names lower-case, in arrival order */
    int n_hdrs;
    dl_buf_t body;        /* decoded body (streamed: the pieces not taken yet) */
    int done;             /* the whole response has been read */
    char err[256];
};

dl_http_client_t *dl_http_client_new(uv_loop_t *loop, const dl_http_client_cfg_t *cfg);
/** Frees the client; every exchange must have been freed. */
void dl_http_client_free(dl_http_client_t *hc);
/** Sets gauge id of m (label "state": idle, busy, waiting) in worker w's
 * slot to the pool's counts; the series are looked up on the first call. */
void dl_http_client_publish(dl_http_client_t *hc, dl_metrics_t *m, int w, int id);

/** The worker's outbound parts the cosockets share (bindings/dl_socket.c). */
typedef struct {
    uv_loop_t *loop;
    dl_dns_t *dns;
    dl_out_pool_t *pool;
    dl_out_limits_t limits; /* the configured per-origin limits */
} dl_outbound_t;
void dl_http_client_outbound(dl_http_client_t *hc, dl_outbound_t *out);

/**
 * The worker's client TLS context for (verify, ca file or NULL), made once and
 * kept (a bounded set). NULL with why in err when it cannot be made.
 */
dl_tls_ctx_t *dl_http_client_tls(dl_http_client_t *hc, int verify, const char *ca, char *err,
                                 size_t errlen);

/**
 * Starts an exchange. Returns 0 and *out (cb comes exactly once, later), or
 * DL_ENOMEM (r->body_fd is then still the caller's). Everything else in r
 * is copied.
 */
int dl_http_start(dl_http_client_t *hc, const dl_http_req_t *r, dl_http_cb cb, void *arg,
                  dl_http_x_t **out);

/**
 * Streamed exchanges: cb comes once x->body holds bytes, the response is done
 * (x->done, x->body possibly empty) or it failed. Returns 1 when that is so
 * already (no callback), 0 when cb will come, or the exchange's error.
 */
int dl_http_x_read(dl_http_x_t *x, dl_http_cb cb, void *arg);

/**
 * Ends an exchange that someone still waits on: its callback (the first, or
 * the read's) comes from the loop, not from here, with "invalid: why".
 */
void dl_http_x_abort(dl_http_x_t *x, const char *why);

/** Frees x; one still running is stopped and its connection closed. */
void dl_http_x_free(dl_http_x_t *x);

#endif
