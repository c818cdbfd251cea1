/*
 * http.h - request state shared by the protocols (http1/, http2/, inproc/),
 * the request core (request.c) and the Lua layer (lua_dispatch.c,
 * lua_request.c): the request object, header look-up, query parsing, URL
 * decoding, Accept negotiation, request ids and the response head writer.
 */
#ifndef DL_HTTP_H
#define DL_HTTP_H

#include <stdint.h>

#include "common/buf.h"
#include "core/client_addr.h"
#include "core/router.h"

struct dl_core_conn_s;
struct dl_core_ctx_s;
struct dl_route_s;
struct lua_State;

typedef struct {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} dl_header_t;

/*
 * One request. It lives from its first byte until both the connection is
 * done with it and its handler coroutine has ended: a request whose
 * connection closes while the handler is parked keeps running detached and
 * its response is dropped (conn == NULL).
 */
/** What a request's rate limits found: its RateLimit-* fields (response.c).
 * Of several limits, the one refusing or else the one with the least left. */
typedef struct {
    double limit, remaining; /* whole numbers */
    uint32_t reset;          /* seconds to the window's end */
    uint32_t retry;          /* Retry-After, when over */
    uint8_t set, over;
    uint8_t checked;         /* the app's native limit has looked at it */
    int64_t counted_slot;    /* the app's native limit counted in this window (+1), 0: none */
} dl_rate_note_t;

typedef struct dl_req_s {
    struct dl_core_conn_s *conn; /* NULL once the connection is gone */
    void *stream;           /* HTTP/2: its stream (h2.c), NULL on HTTP/1 */
    struct dl_core_ctx_s *ctx;  /* what the worker lends it (request.h) */
    struct dl_req_s *next_free;

    dl_buf_t head;          /* target, then header names and values, as read */
    uint32_t url_len;       /* the target is head[0..url_len) */
    uint32_t path_len;      /* the path part of the target */
    dl_header_t *headers;
    int n_headers, cap_headers;
    int n_head_headers;     /* header fields of the head; trailer fields follow, dropped */
    int n_chunk_ext;        /* this chunk's extensions (bounded like header fields) */
    size_t chunk_ext_bytes; /* and their bytes */
    int in_value;           /* parser: last callback was a header value */
    size_t header_bytes;

    dl_buf_t body;
    size_t body_limit;
    size_t upload_limit;    /* the handler's route streams multipart bodies to files */
    size_t body_seen;       /* body bytes read (an upload does not keep them) */
    struct dl_upload_s *upload; /* a multipart body streamed to files (upload.h) */

    int method;             /* DL_M_* or 0 for a method we do not route */
    const char *method_name;
    uint8_t http_major, http_minor;
    unsigned keep_alive : 1;
    unsigned expect_continue : 1;
    int early_status;       /* answered before its body (Expect: 100-continue refused) */
    unsigned app : 1;       /* reached the app: its answer passes the handler's filter */
    unsigned filtered : 1;  /* the filter has seen (or made) its answer */

    int route_status;       /* DL_ROUTE_* */
    dl_route_match_t match;
    struct dl_route_s *route;
    struct dl_gen_s *gen;   /* pinned generation of route */

    char id[65];
    uint64_t start_ns;
    dl_client_t client;     /* req.ip, scheme, host: the peer, the rest on first use (client_addr.h) */
    const struct dl_cors_s *cors; /* the CORS policy of its route or app (cors.h), or NULL */
    uint8_t cors_verdict;   /* DL_CORS_* (cors.h) */
    dl_rate_note_t rate;    /* its rate limits' RateLimit-* fields */

    /* a streamed answer (core/stream.h) */
    uint8_t streaming;      /* DL_STREAM_* */
    uint8_t stream_keep;    /* the connection may take another request after it */
    uint8_t stream_broken;  /* a piece could not be kept: the answer cannot end well */
    int stream_status;
    uint64_t stream_bytes;  /* body bytes given so far */
    dl_buf_t stream_buf;    /* DL_STREAM_BUFFERED: the body so far */
    void *stream_saved;     /* DL_STREAM_BUFFERED: the head, copied (stream.c) */

    /* Lua side */
    void *task;             /* the handler's main task (lua_dispatch.c) */
    int table_ref;          /* the request table handed to the handler */
} dl_req_t;

/** Finds a header by name (case-insensitive); returns its value or NULL. */
const char *dl_req_header(const dl_req_t *req, const char *name, size_t *len);

/** Decodes %XX (and '+' as space when form is set) in place; returns the new length. */
size_t dl_url_decode(char *s, size_t len, int form);

/** Calls fn for each key=value pair of a query string or form body (decoded copies). */
typedef int (*dl_kv_cb)(const char *k, size_t klen, const char *v, size_t vlen, void *arg);
int dl_parse_query(const char *s, size_t len, int form, dl_kv_cb fn, void *arg);

/** 1 when Accept prefers MessagePack over JSON (q-values honoured). */
int dl_accept_msgpack(const char *accept, size_t len);

/** Fills id (33 bytes) with 128 random bits in hex from the worker PRNG state. */
void dl_request_id_new(uint64_t state[4], char *id);
/** 1 when an incoming X-Request-Id is safe to echo: 1..64 of [A-Za-z0-9._:-]. */
int dl_request_id_valid(const char *s, size_t len);
/** Seeds a xoshiro256** state from the OS. */
void dl_prng_seed(uint64_t state[4]);
uint64_t dl_prng_next(uint64_t state[4]);

/** One field of a request built from its parts: borrowed bytes and their lengths. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} dl_http_field_t;

/**
 * Checks a request given as its parts (in-process requests: api.client and
 * dl_runtime_request, inproc/inproc.h), never text a caller joined, so no
 * byte of one can end its line or start a second request:
 *   - method: a token (RFC 9110 9.1);
 *   - path: '/' then visible ASCII only (0x21-0x7e: no space, control, CR,
 *     LF, NUL or byte over 0x7e; percent-encode them);
 *   - field name: a token; field value: no control but HTAB (CR, LF and NUL
 *     refused; obs-text kept);
 *   - no Transfer-Encoding (the body is sent whole), at most one Host.
 * Returns 0 (*host_field the index of the Host field or -1; may be NULL) or
 * DL_EINVAL with *err a static sentence naming what is wrong and *bad_field
 * the index of the field at fault (-1 for the method or path); err and
 * bad_field may be NULL.
 */
int dl_http_request_check(const char *method, size_t method_len, const char *path,
                          size_t path_len, const dl_http_field_t *fields, int n_fields,
                          const char *body, size_t body_len, const char **err, int *bad_field,
                          int *host_field);
/** Whether a request from parts carries Content-Length: a body, or POST, PUT, PATCH. */
int dl_http_request_framed(const char *method, size_t method_len, size_t body_len);
/** The next non-empty element [*a, *b) of a comma list (RFC 9110 5.6.1) at
 * *v, trimmed of OWS; empty elements are skipped. Returns 0 at the end. */
int dl_http_list_next(const char **v, const char *end, const char **a, const char **b);
/** Narrows [*v, *e) to drop leading and trailing blanks (SP, HTAB). */
void dl_http_trim(const char **v, const char **e);

/**
 * The method of a request given by name (HTTP/2's :method, an in-process
 * request's): llhttp's static spelling of it, or NULL for one the HTTP/1
 * reader (http1/conn.c) refuses, with *msg its words for it (400 on every
 * protocol): PRI and the RTSP methods have their own. The one method table
 * of the three protocols.
 */
const char *dl_http_method_static(const char *m, size_t len, const char **msg);

/** Reason phrase of a status code ("Not Found"); "Unknown" for others. */
const char *dl_status_text(int status);

/** Formats an IMF-fixdate for t into out (32 bytes). */
void dl_http_date(long t, char *out);

/**
 * Appends a JSON error body {"error":reason,"message":msg,"requestId":id} to out;
 * msg may be NULL. Strings are escaped.
 */
void dl_error_body(dl_buf_t *out, int status, const char *msg, const char *reqid);

/** dl_error_body() with a message of msg_len bytes (NUL bytes kept, escaped). */
void dl_error_body_len(dl_buf_t *out, int status, const char *msg, size_t msg_len,
                       const char *reqid);

/** 1 when s[0..n) is a token (RFC 9110 5.6.2: a method, a field name); 0 if empty. */
int dl_http_token_ok(const char *s, size_t n);
/** 1 when s[0..n) may be a field value: no control but HTAB (no CR, LF, NUL). */
int dl_http_value_ok(const char *s, size_t n);

#endif
