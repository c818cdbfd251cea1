/*
 * http.c - request helpers (header look-up, URL decoding, query parsing,
 * Accept negotiation), request ids and the small response-side tables
 * (reason phrases, dates, error bodies). No I/O happens here.
 */
#include "core/http.h"

#include <fcntl.h>
#include <llhttp.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/json_str.h"

/* ------------------------------------------------------------------ methods */

const char *dl_http_method_static(const char *m, size_t len, const char **msg)
{
#define DL_METHOD_NAME(num, name, string)                                                      \
    if (len == sizeof(#string) - 1 && memcmp(m, #string, len) == 0)                           \
        return #string;
    HTTP_METHOD_MAP(DL_METHOD_NAME)
#undef DL_METHOD_NAME
    *msg = "malformed request: Invalid method encountered";
    if (len == 3 && memcmp(m, "PRI", 3) == 0)
        *msg = "malformed request: Expected HTTP/2 Connection Preface";
#define DL_METHOD_RTSP(num, name, string)                                                      \
    if (len == sizeof(#string) - 1 && memcmp(m, #string, len) == 0)                           \
        *msg = "malformed request: Invalid method for HTTP/x.x request";
    RTSP_METHOD_MAP(DL_METHOD_RTSP)
#undef DL_METHOD_RTSP
    return NULL;
}

/* ------------------------------------------------------------------ headers */

const char *dl_req_header(const dl_req_t *req, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (int i = 0; i < req->n_headers; i++) {
        const dl_header_t *h = &req->headers[i];
        if (dl_strncasecmp_eq(req->head.data + h->name_off, h->name_len, name, nlen)) {
            if (len)
                *len = h->value_len;
            return req->head.data + h->value_off;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ URL decoding */

size_t dl_url_decode(char *s, size_t len, int form)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%' && i + 2 < len) {
            int h = dl_hex_digit((unsigned char)s[i + 1]),
                l = dl_hex_digit((unsigned char)s[i + 2]);
            if (h >= 0 && l >= 0) {
                s[o++] = (char)(h * 16 + l);
                i += 2;
                continue;
            }
        } else if (c == '+' && form) {
            c = ' ';
        }
        s[o++] = c;
    }
    return o;
}

int dl_parse_query(const char *s, size_t len, int form, dl_kv_cb fn, void *arg)
{
    char stack[512];
    size_t i = 0;
    DL_UNUSED(form);
    while (i < len) {
        size_t start = i;
        while (i < len && s[i] != '&')
            i++;
        size_t plen = i - start;
        i++; /* skip '&' */
        if (plen == 0)
            continue;
        char *p = plen <= sizeof(stack) ? stack : dl_malloc(plen);
        if (p == NULL)
            return DL_ENOMEM;
        memcpy(p, s + start, plen);
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        char *v = eq ? (char *)eq + 1 : p + plen;
        size_t vlen = eq ? plen - klen - 1 : 0;
        /* '+' means space in both query strings and forms (WHATWG urlencoded) */
        klen = dl_url_decode(p, klen, 1);
        vlen = dl_url_decode(v, vlen, 1);
        int rc = klen ? fn(p, klen, v, vlen, arg) : 0;
        if (p != stack)
            dl_free(p);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------- Accept negotiation */

/* Parses one media range "type/sub;q=0.5" -> q in thousandths. */
static int parse_q(const char *p, const char *end)
{
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
            p++;
        if (end - p >= 2 && dl_tolower((unsigned char)p[0]) == 'q' && p[1] == '=') {
            p += 2;
            int q = 0, scale = 1000;
            if (p < end && (*p == '0' || *p == '1')) {
                q = (*p - '0') * 1000;
                p++;
                if (p < end && *p == '.') {
                    p++;
                    while (p < end && *p >= '0' && *p <= '9' && scale > 1) {
                        scale /= 10;
                        q += (*p - '0') * scale;
                        p++;
                    }
                }
            }
            return q > 1000 ? 1000 : q;
        }
        while (p < end && *p != ';')
            p++;
    }
    return 1000;
}

int dl_accept_msgpack(const char *accept, size_t len)
{
    if (accept == NULL || len == 0)
        return 0;
    int q_mp = -1, q_json = -1;
    const char *p = accept, *end = accept + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *start = p;
        while (p < end && *p != ',')
            p++;
        const char *semi = memchr(start, ';', (size_t)(p - start));
        const char *tend = semi ? semi : p;
        while (tend > start && (tend[-1] == ' ' || tend[-1] == '\t'))
            tend--;
        size_t tlen = (size_t)(tend - start);
        int q = semi ? parse_q(semi, p) : 1000;
        if (dl_strncasecmp_eq(start, tlen, "application/msgpack", 19) ||
            dl_strncasecmp_eq(start, tlen, "application/x-msgpack", 21) ||
            dl_strncasecmp_eq(start, tlen, "application/vnd.msgpack", 23))
            q_mp = DL_MAX(q_mp, q);
        else if (dl_strncasecmp_eq(start, tlen, "application/json", 16))
            q_json = DL_MAX(q_json, q);
    }
    /* MessagePack only when asked for by name and JSON is not preferred by name. */
    return q_mp > 0 && q_mp >= q_json;
}

/* ---------------------------------------------------------------- request ids */

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t dl_prng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void dl_prng_seed(uint64_t s[4])
{
    if (getrandom(s, sizeof(uint64_t) * 4, 0) != (ssize_t)(sizeof(uint64_t) * 4)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
        s[1] = (uint64_t)ts.tv_sec * 0x9e3779b97f4a7c15ULL;
        s[2] = (uint64_t)(uintptr_t)s;
        s[3] = 0x2545F4914F6CDD1DULL;
    }
    if ((s[0] | s[1] | s[2] | s[3]) == 0)
        s[0] = 1;
}

void dl_request_id_new(uint64_t state[4], char *id)
{
    /* Big-endian bytes, so the digits read as the two numbers in hex. */
    unsigned char raw[16];
    uint64_t a = dl_prng_next(state), b = dl_prng_next(state);
    for (int i = 0; i < 8; i++) {
        raw[i] = (unsigned char)(a >> (56 - 8 * i));
        raw[8 + i] = (unsigned char)(b >> (56 - 8 * i));
    }
    dl_hex(raw, sizeof raw, id);
    id[32] = '\0';
}

int dl_request_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------- requests from parts */

static int is_blank(int c)
{
    return c == ' ' || c == '\t';
}

int dl_http_token_ok(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!dl_is_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

/* field-value (RFC 9110 5.5): VCHAR, obs-text, SP and HTAB; every other
 * control, CR, LF and NUL above all, is refused */
int dl_http_value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static int request_fail(const char **err, int *bad_field, const char *msg, int field)
{
    if (err)
        *err = msg;
    if (bad_field)
        *bad_field = field;
    return DL_EINVAL;
}

void dl_http_trim(const char **v, const char **e)
{
    while (*v < *e && is_blank((unsigned char)**v))
        (*v)++;
    while (*e > *v && is_blank((unsigned char)(*e)[-1]))
        (*e)--;
}

int dl_http_request_framed(const char *method, size_t method_len, size_t body_len)
{
    return body_len > 0 || (method_len == 4 && memcmp(method, "POST", 4) == 0) ||
           (method_len == 3 && memcmp(method, "PUT", 3) == 0) ||
           (method_len == 5 && memcmp(method, "PATCH", 5) == 0);
}

int dl_http_request_check(const char *method, size_t method_len, const char *path,
                          size_t path_len, const dl_http_field_t *fields, int n_fields,
                          const char *body, size_t body_len, const char **err, int *bad_field,
                          int *host_field)
{
    if (method == NULL || !dl_http_token_ok(method, method_len))
        return request_fail(err, bad_field, "the method is not a token", -1);
    if (path == NULL || path_len == 0 || path[0] != '/')
        return request_fail(err, bad_field, "the path must start with /", -1);
    for (size_t i = 0; i < path_len; i++)
        if ((unsigned char)path[i] <= 0x20 || (unsigned char)path[i] >= 0x7f)
            return request_fail(err, bad_field,
                                "the path holds a space, a control character (CR, LF, NUL...) "
                                "or a byte over 0x7e; percent-encode it",
                                -1);
    if (body == NULL && body_len > 0)
        return request_fail(err, bad_field, "no body bytes for a body length", -1);
    int host = -1;
    for (int i = 0; i < n_fields; i++) {
        const dl_http_field_t *f = &fields[i];
        if (f->name == NULL || !dl_http_token_ok(f->name, f->name_len))
            return request_fail(err, bad_field, "a header name is not a token", i);
        if ((f->value == NULL && f->value_len > 0) ||
            (f->value_len > 0 && !dl_http_value_ok(f->value, f->value_len)))
            return request_fail(err, bad_field,
                                "a header value holds CR, LF, NUL or another control character",
                                i);
        if (dl_strncasecmp_eq(f->name, f->name_len, "transfer-encoding", 17))
            return request_fail(err, bad_field,
                                "Transfer-Encoding cannot be given: the body is sent whole, "
                                "with its Content-Length",
                                i);
        if (dl_strncasecmp_eq(f->name, f->name_len, "host", 4)) {
            if (host >= 0)
                return request_fail(err, bad_field, "more than one Host header", i);
            host = i;
        }
    }
    if (host_field)
        *host_field = host;
    return 0;
}

/* ------------------------------------------------------------ response side */

const char *dl_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 416: return "Range Not Satisfiable";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 418: return "I'm a Teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 511: return "Network Authentication Required";
    }
    return "Unknown";
}

void dl_http_date(long t, char *out)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    snprintf(out, 32, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], (tm.tm_year + 1900) % 10000, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Messages quote the request (a 404 names its path), so they go through the
 * shared writer, which turns raw bytes that are not UTF-8 into U+FFFD. */
static void append_json_string(dl_buf_t *out, const char *s)
{
    dl_json_put_string(out, s, strlen(s));
}

void dl_error_body(dl_buf_t *out, int status, const char *msg, const char *reqid)
{
    dl_error_body_len(out, status, msg, msg ? strlen(msg) : 0, reqid);
}

void dl_error_body_len(dl_buf_t *out, int status, const char *msg, size_t msg_len,
                       const char *reqid)
{
    dl_buf_append_str(out, "{\"error\":");
    append_json_string(out, dl_status_text(status));
    if (msg) {
        dl_buf_append_str(out, ",\"message\":");
        dl_json_put_string(out, msg, msg_len);
    }
    if (reqid && *reqid) {
        dl_buf_append_str(out, ",\"requestId\":");
        append_json_string(out, reqid);
    }
    dl_buf_append_char(out, '}');
}

/* The next non-empty element [*a, *b) of a comma list (RFC 9110 5.6.1) at
 * *v, trimmed of OWS; empty elements are skipped. Returns 0 at the end. */
int dl_http_list_next(const char **v, const char *end, const char **a, const char **b)
{
    while (*v < end) {
        const char *e = memchr(*v, ',', (size_t)(end - *v));
        if (e == NULL)
            e = end;
        *a = *v;
        *b = e;
        *v = e < end ? e + 1 : end;
        while (*a < *b && (**a == ' ' || **a == '\t'))
            (*a)++;
        while (*b > *a && ((*b)[-1] == ' ' || (*b)[-1] == '\t'))
            (*b)--;
        if (*a < *b)
            return 1;
    }
    return 0;
}
