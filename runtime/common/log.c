/*
 * log.c - the asynchronous logger. A registered thread writes each record
 * (header, request id, message, fields) into its own single-producer/
 * single-consumer byte ring and never blocks or locks: a record that does not
 * fit is dropped and counted. Unregistered threads share one fallback ring
 * behind a mutex that only guards the copy. One writer thread drains every
 * ring in batches, formats console lines for stderr and JSON lines for
 * combined.log (and error.log for errors), rotates files by size and writes
 * through large buffers with few write(2) calls. It sleeps on an eventfd that
 * producers only touch when it announced it is idle, and wakes every 50 ms.
 * Whoever drains holds drain_mu; a fatal signal takes that role over (the
 * writer parks between records) and writes what the rings hold with write(2)
 * only. Before dl_logger_start() and after dl_logger_stop(), records go to
 * stderr synchronously, one write(2) per line, as the first logger did.
 *
 * What a record holds comes from requests, so neither output trusts it. The
 * console shows every control character (C0, DEL, C1, raw or UTF-8) and the
 * characters that reorder or break a line on a terminal as text (\n, \x1b,
 * \u0085, \u202e): one record is one line, and no escape sequence reaches
 * the operator's terminal. A JSON line never repeats a key: a field named
 * like one of the record's own keys (timestamp, level, message, service,
 * requestId), or twice, is written with "_" in front, as many as it takes to
 * be unique.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/json_str.h"
#include "common/num.h"
#include "common/log.h"

#define DEFAULT_RING (1u << 20)
#define MIN_RING 4096
#define WAKE_MS 50
#define CON_BUF (64 * 1024)
#define FILE_BUF (256 * 1024)
#define ERR_BUF (128 * 1024)
/* Longest JSON line: every byte may become \u00XX (fields that are not an
 * object), plus the escaper's chunk slack for each of the three fields, plus
 * the underscores of renamed field names (merge_fields() checks its room and
 * falls back to the string form, which fits, when they would not). */
#define LINE_BUF                                                                         \
    (6 * (DL_LOG_MAX_MSG + DL_LOG_MAX_REQID + DL_LOG_MAX_FIELDS) + 3 * 16 + 1024 +       \
     2 * DL_LOG_MAX_FIELDS)
#define SERVICE_MAX 64
#define PATH_MAX_LEN 4096

/* ------------------------------------------------------------------------ */
/* Rings                                                                     */
/* ------------------------------------------------------------------------ */

/* A record in a ring: this header, then reqid, message and fields bytes, the
 * whole padded to 8 bytes. Positions only grow; the mask gives the offset. */
typedef struct {
    uint32_t size;
    uint8_t level;
    uint8_t rlen;
    uint16_t pad;
    uint32_t mlen;
    uint32_t flen;
    int64_t ts_ms;
} rec_hdr_t;

typedef struct ring_s {
    _Alignas(64) _Atomic uint64_t head; /* written by the producer */
    uint64_t tail_cache;                /* producer's last view of tail */
    _Atomic uint64_t dropped;           /* producer writes, anyone reads */
    _Alignas(64) _Atomic uint64_t tail; /* written by the consumer */
    _Alignas(64) char *buf;
    size_t cap;
    _Atomic int closed; /* the owning thread left: free once drained */
    struct ring_s *next;
    void *raw;          /* what dl_calloc returned: r is aligned up from it */
} ring_t;

int dl_log_min_level = DL_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

static _Thread_local ring_t *tl_ring;
static _Thread_local int tl_is_writer;

/* Registered rings: inserted at the head under reg_mu; walked without the lock
 * by the drain_mu holder, the only one that ever unlinks. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(ring_t *) rings;
static uint64_t retired_dropped; /* under reg_mu */

/* The fallback ring: buf is set while the logger runs, under fb_mu. */
static pthread_mutex_t fb_mu = PTHREAD_MUTEX_INITIALIZER;
static ring_t fallback;

static _Atomic int running;
static _Atomic int sleeping;
static _Atomic int stopping;
static _Atomic int crashing;
static _Atomic int crash_done;
static _Atomic uint64_t written;
static _Atomic size_t ring_bytes = DEFAULT_RING;
static int wake_fd = -1;
static pthread_t writer_tid;

static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER; /* start/stop/thread_exit */
static pthread_mutex_t drain_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t flush_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flush_cv = PTHREAD_COND_INITIALIZER;
static _Atomic uint64_t flush_req;
static uint64_t flush_done;  /* under flush_mu */
static int writer_exited;    /* under flush_mu */

#ifdef DL_UNIT_TEST
/* Tests set it to keep the writer from draining (to exercise the crash flush). */
_Atomic int dl_log_test_pause_writer;
#endif

static size_t round_ring(size_t n)
{
    size_t c = MIN_RING;
    while (c < n && c < ((size_t)1 << 40))
        c <<= 1;
    return c;
}

static void copy_in(ring_t *r, uint64_t pos, const void *src, size_t n)
{
    if (n == 0)
        return; /* src may be NULL */
    size_t off = (size_t)(pos & (r->cap - 1));
    size_t first = DL_MIN(n, r->cap - off);
    memcpy(r->buf + off, src, first);
    if (n > first)
        memcpy(r->buf, (const char *)src + first, n - first);
}

static void copy_out(const ring_t *r, uint64_t pos, void *dst, size_t n)
{
    size_t off = (size_t)(pos & (r->cap - 1));
    size_t first = DL_MIN(n, r->cap - off);
    memcpy(dst, r->buf + off, first);
    if (n > first)
        memcpy((char *)dst + first, r->buf, n - first);
}

/* Producer side. Returns 0 when queued, -1 when dropped. */
static int ring_push(ring_t *r, const rec_hdr_t *h, const char *reqid, const char *msg,
                     const char *fields)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (r->cap - (head - r->tail_cache) < h->size) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (r->cap - (head - r->tail_cache) < h->size) {
            uint64_t d = atomic_load_explicit(&r->dropped, memory_order_relaxed);
            atomic_store_explicit(&r->dropped, d + 1, memory_order_relaxed);
            return -1;
        }
    }
    uint64_t p = head;
    copy_in(r, p, h, sizeof(*h));
    p += sizeof(*h);
    copy_in(r, p, reqid, h->rlen);
    p += h->rlen;
    copy_in(r, p, msg, h->mlen);
    p += h->mlen;
    copy_in(r, p, fields, h->flen);
    /* seq_cst pairs with the seq_cst loads of running/sleeping in dl_log_emit
     * and with the writer's store of sleeping: no record is left unseen. */
    atomic_store_explicit(&r->head, head + h->size, memory_order_seq_cst);
    return 0;
}

static ring_t *ring_new(size_t bytes)
{
    /* the cache-line alignment ring_t declares; dl_calloc gives 16 bytes */
    void *raw = dl_calloc(1, sizeof(ring_t) + 63);
    if (raw == NULL)
        return NULL;
    ring_t *r = (ring_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    r->raw = raw;
    r->cap = round_ring(bytes);
    r->buf = dl_malloc(r->cap);
    if (r->buf == NULL) {
        dl_free(raw);
        return NULL;
    }
    return r;
}

static void ring_free(ring_t *r)
{
    if (r == NULL)
        return;
    dl_free(r->buf);
    dl_free(r->raw);
}

/* ------------------------------------------------------------------------ */
/* Formatting (async-signal-safe: no locale, no malloc, no stdio)            */
/* ------------------------------------------------------------------------ */

/* "2026-11-25T08:25:17.199Z" (24 bytes) from ms since the epoch, in UTC. */
static size_t format_ts(char *out, int64_t ms)
{
    int64_t secs = ms / 1000;
    int milli = (int)(ms % 1000);
    if (milli < 0) {
        milli += 1000;
        secs--;
    }
    int64_t days = secs / 86400;
    int64_t sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    /* Howard Hinnant's civil_from_days */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    if (m <= 2)
        y++;
    int v[] = {(int)(y / 1000 % 10), (int)(y / 100 % 10), (int)(y / 10 % 10), (int)(y % 10)};
    int hh = (int)(sod / 3600), mi = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    char *p = out;
    for (int i = 0; i < 4; i++)
        *p++ = (char)('0' + v[i]);
    *p++ = '-';
    *p++ = (char)('0' + m / 10);
    *p++ = (char)('0' + m % 10);
    *p++ = '-';
    *p++ = (char)('0' + d / 10);
    *p++ = (char)('0' + d % 10);
    *p++ = 'T';
    *p++ = (char)('0' + hh / 10);
    *p++ = (char)('0' + hh % 10);
    *p++ = ':';
    *p++ = (char)('0' + mi / 10);
    *p++ = (char)('0' + mi % 10);
    *p++ = ':';
    *p++ = (char)('0' + ss / 10);
    *p++ = (char)('0' + ss % 10);
    *p++ = '.';
    *p++ = (char)('0' + milli / 100);
    *p++ = (char)('0' + milli / 10 % 10);
    *p++ = (char)('0' + milli % 10);
    *p++ = 'Z';
    return (size_t)(p - out);
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The members of a JSON object text, without braces and outer blanks: returns
 * 1 with members, 0 for an empty object, -1 when the text is not "{...}". */
static int object_members(const char *f, size_t n, const char **in, size_t *inlen)
{
    while (n > 0 && is_space(*f)) {
        f++;
        n--;
    }
    while (n > 0 && is_space(f[n - 1]))
        n--;
    if (n < 2 || f[0] != '{' || f[n - 1] != '}')
        return -1;
    f++;
    n -= 2;
    while (n > 0 && is_space(*f)) {
        f++;
        n--;
    }
    while (n > 0 && is_space(f[n - 1]))
        n--;
    *in = f;
    *inlen = n;
    return n > 0;
}

/* ------------------------------------------------------------------------ */
/* Console escaping                                                          */
/* ------------------------------------------------------------------------ */

/* Room con_escape() needs for n bytes: \xNN for each is the most. */
#define CON_ESCAPE_ROOM(n) (4 * (size_t)(n))

static char *put_hex(char *d, unsigned c)
{
    unsigned char byte = (unsigned char)c;
    *d++ = '\\';
    *d++ = 'x';
    dl_hex(&byte, 1, d);
    return d + 2;
}

/* A well-formed sequence of k bytes at s that a terminal acts on or that
 * rewrites how a line reads: C1 controls U+0080..U+009F, U+061C, U+200E,
 * U+200F, U+2028..U+202E (line and paragraph separators, bidi embeddings and
 * overrides), U+2066..U+2069 (bidi isolates). Returns the code point or 0. */
static unsigned invisible_cp(const unsigned char *s, int k)
{
    if (k == 2 && s[0] == 0xC2 && s[1] < 0xA0)
        return s[1];
    if (k == 2 && s[0] == 0xD8 && s[1] == 0x9C)
        return 0x061C;
    if (k == 3 && s[0] == 0xE2) {
        unsigned cp = 0x2000u | ((unsigned)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (cp == 0x200E || cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) ||
            (cp >= 0x2066 && cp <= 0x2069))
            return cp;
    }
    return 0;
}

/* Copies n bytes of record data to d for the console, with d having
 * CON_ESCAPE_ROOM(n) bytes: printable ASCII and well-formed UTF-8 as they
 * are; \n, \r, \t; other C0 bytes and DEL as \xNN; C1 and the characters of
 * invisible_cp() as \uXXXX; each byte of an ill-formed sequence as \xNN.
 * Async-signal-safe. */
static char *con_escape(char *d, const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src, *end = s + n;
    while (s < end) {
        unsigned c = *s;
        if (c >= 0x20 && c < 0x7F) {
            *d++ = (char)c;
            s++;
        } else if (c < 0x80) {
            if (c == '\n' || c == '\r' || c == '\t') {
                *d++ = '\\';
                *d++ = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            } else {
                d = put_hex(d, c);
            }
            s++;
        } else {
            int k = dl_utf8_check(s, end);
            if (k < 0) {
                for (int i = 0; i < -k; i++)
                    d = put_hex(d, s[i]);
                s += -k;
                continue;
            }
            unsigned cp = invisible_cp(s, k);
            if (cp != 0) {
                unsigned char be[2] = {(unsigned char)(cp >> 8), (unsigned char)cp};
                *d++ = '\\';
                *d++ = 'u';
                dl_hex(be, 2, d);
                d += 4;
            } else {
                memcpy(d, s, (size_t)k);
                d += k;
            }
            s += k;
        }
    }
    return d;
}

/* One console line, up to and with its '\n', at out, which has
 * 64 + CON_ESCAPE_ROOM(rlen + mlen + flen) bytes; returns its end. */
static char *format_console(char *out, int lv, int64_t ts_ms, int color, const char *reqid,
                            size_t rlen, const char *msg, size_t mlen, const char *fields,
                            size_t flen)
{
    static const char *const level_colors[] = {"\x1b[90m", "\x1b[32m", "\x1b[33m", "\x1b[31m"};
    char *p = out;
    p += format_ts(p, ts_ms);
    *p++ = ' ';
    if (color)
        p = put(p, level_colors[lv], strlen(level_colors[lv]));
    p = put(p, level_names[lv], strlen(level_names[lv]));
    if (color)
        p = PUTS(p, "\x1b[0m");
    for (size_t k = strlen(level_names[lv]); k < 6; k++)
        *p++ = ' ';
    if (rlen > 0) {
        *p++ = '[';
        p = con_escape(p, reqid, rlen);
        p = PUTS(p, "] ");
    }
    p = con_escape(p, msg, mlen);
    if (flen > 0) {
        *p++ = ' ';
        p = con_escape(p, fields, flen);
    }
    *p++ = '\n';
    return p;
}

/* ------------------------------------------------------------------------ */
/* Fields merged into a JSON line, without duplicate keys                    */
/* ------------------------------------------------------------------------ */

/* A member takes 4 bytes at least ("":0) plus a comma between two. */
#define MAX_MEMBERS (DL_LOG_MAX_FIELDS / 5 + 2)
#define NAME_SLOTS 8192 /* a power of 2 above 2 * MAX_MEMBERS + reserved */
#define NAME_ARENA (256 * 1024)
#define MAX_UNDERSCORES 16

/* A name as it is written in the line (the inside of a JSON string, as
 * dl_json_escape() writes it: one spelling per decoded string), in
 * name_arena. flags: 1 a field of the record has it, 2 written already. */
typedef struct {
    uint32_t gen, off, len, flags;
} name_slot_t;

/* All of this belongs to the drain_mu holder, as line_buf does. */
static name_slot_t name_slots[NAME_SLOTS];
static uint32_t name_gen;
static char name_arena[NAME_ARENA];
static size_t name_used;
static struct {
    uint32_t off, len; /* the name in name_arena */
    const char *v;     /* the value's text in the record */
    size_t vlen;
} members[MAX_MEMBERS];
static char key_buf[DL_LOG_MAX_FIELDS];

static const char *const own_keys[] = {"timestamp", "level", "message", "service", "requestId"};

/* The slot of name s (n bytes): its own, or the empty one where it goes. */
static name_slot_t *name_find(const char *s, size_t n)
{
    uint32_t i = dl_fnv1a(s, n) & (NAME_SLOTS - 1);
    for (;;) {
        name_slot_t *e = &name_slots[i];
        if (e->gen != name_gen || (e->len == n && memcmp(name_arena + e->off, s, n) == 0))
            return e;
        i = (i + 1) & (NAME_SLOTS - 1);
    }
}

/* Adds flags to name s (n bytes, already in name_arena at off). */
static void name_mark(uint32_t off, size_t n, uint32_t flags)
{
    name_slot_t *e = name_find(name_arena + off, n);
    if (e->gen != name_gen) {
        e->gen = name_gen;
        e->off = off;
        e->len = (uint32_t)n;
        e->flags = 0;
    }
    e->flags |= flags;
}

/* The string of a JSON key (s..end, inside the quotes) decoded into key_buf
 * (never longer than its text); a lone surrogate becomes U+FFFD. Returns the
 * decoded length, or -1 when an escape is malformed. */
static long decode_key(const char *s, const char *end)
{
    char *d = key_buf;
    while (s < end) {
        if (*s != '\\') {
            *d++ = *s++;
            continue;
        }
        if (++s == end)
            return -1;
        char c = *s++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            *d++ = c;
            break;
        case 'b':
            *d++ = '\b';
            break;
        case 'f':
            *d++ = '\f';
            break;
        case 'n':
            *d++ = '\n';
            break;
        case 'r':
            *d++ = '\r';
            break;
        case 't':
            *d++ = '\t';
            break;
        case 'u': {
            unsigned cp;
            int used = dl_json_read_u(s - 2, end, &cp); /* from the backslash */
            if (used < 0)
                return -1;
            s += used - 2;
            if (cp >= 0xD800 && cp < 0xE000)
                cp = 0xFFFD;
            d += dl_utf8_put(d, cp);
            break;
        }
        default:
            return -1;
        }
    }
    return (long)(d - key_buf);
}

/* The end of the JSON string whose opening quote is at s (the closing
 * quote), or NULL. */
static const char *string_end(const char *s, const char *end)
{
    for (s++; s < end; s++) {
        if (*s == '\\')
            s++;
        else if (*s == '"')
            return s;
    }
    return NULL;
}

/* Splits the members of an object (its text without braces and outer
 * blanks) into members[], their names spelled as written. Returns how many,
 * or -1 when the text is not a list of "name": value members or a limit is
 * reached. */
static int split_members(const char *in, size_t inlen)
{
    const char *s = in, *end = in + inlen;
    int n = 0;
    for (;;) {
        while (s < end && is_space(*s))
            s++;
        if (s == end || *s != '"' || n == MAX_MEMBERS)
            return -1;
        const char *ke = string_end(s, end);
        if (ke == NULL)
            return -1;
        long dl = decode_key(s + 1, ke);
        if (dl < 0 || name_used + DL_JSON_ESCAPE_ROOM(dl) > NAME_ARENA)
            return -1;
        char *w = dl_json_escape(name_arena + name_used, key_buf, (size_t)dl);
        members[n].off = (uint32_t)name_used;
        members[n].len = (uint32_t)(w - (name_arena + name_used));
        name_used += members[n].len;
        s = ke + 1;
        while (s < end && is_space(*s))
            s++;
        if (s == end || *s != ':')
            return -1;
        s++;
        while (s < end && is_space(*s))
            s++;
        const char *vs = s;
        int depth = 0;
        for (; s < end; s++) {
            if (*s == '"') {
                s = string_end(s, end);
                if (s == NULL)
                    return -1;
            } else if (*s == '{' || *s == '[') {
                depth++;
            } else if (*s == '}' || *s == ']') {
                if (depth-- == 0)
                    return -1;
            } else if (*s == ',' && depth == 0) {
                break;
            }
        }
        const char *ve = s;
        while (ve > vs && is_space(ve[-1]))
            ve--;
        if (depth != 0 || ve == vs)
            return -1;
        members[n].v = vs;
        members[n].vlen = (size_t)(ve - vs);
        n++;
        if (s == end)
            return n;
        s++; /* the comma */
    }
}

/* Writes ,"name":value for each member of the fields object (in, inlen) at
 * p, which may go up to lim. A name the record has already (its own keys, a
 * member written before) gets "_" in front until it is unused by the record
 * and by every member. Returns the end, or NULL when the members cannot be
 * parsed or do not fit (the caller then writes the string form). */
static char *merge_fields(char *p, char *lim, const char *in, size_t inlen)
{
    if (++name_gen == 0) {
        memset(name_slots, 0, sizeof(name_slots));
        name_gen = 1;
    }
    name_used = 0;
    for (size_t i = 0; i < DL_ARRAY_SIZE(own_keys); i++) {
        size_t l = strlen(own_keys[i]);
        memcpy(name_arena + name_used, own_keys[i], l);
        name_mark((uint32_t)name_used, l, 1 | 2);
        name_used += l;
    }
    int n = split_members(in, inlen);
    if (n < 0)
        return NULL;
    for (int i = 0; i < n; i++)
        name_mark(members[i].off, members[i].len, 1);
    for (int i = 0; i < n; i++) {
        const char *name = name_arena + members[i].off;
        size_t len = members[i].len;
        name_slot_t *e = name_find(name, len);
        if (e->flags & 2) {
            /* taken: the first of _name, __name, ... that nothing has */
            int k;
            for (k = 1; k <= MAX_UNDERSCORES; k++) {
                if (name_used + (size_t)k + len > NAME_ARENA)
                    return NULL;
                char *w = name_arena + name_used;
                memset(w, '_', (size_t)k);
                memcpy(w + k, name, len);
                if (name_find(w, (size_t)k + len)->gen != name_gen)
                    break;
            }
            if (k > MAX_UNDERSCORES)
                return NULL;
            name = name_arena + name_used;
            len += (size_t)k;
            name_mark((uint32_t)name_used, len, 1 | 2);
            name_used += len;
        } else {
            e->flags |= 2;
        }
        /* , " name " : value, the value's strings repaired (3 bytes per byte) */
        if ((size_t)(lim - p) < 4 + len + 3 * members[i].vlen)
            return NULL;
        *p++ = ',';
        *p++ = '"';
        p = put(p, name, len);
        *p++ = '"';
        *p++ = ':';
        p = dl_utf8_repair(p, members[i].v, members[i].vlen);
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Sinks: buffered fds, rotation                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
    uint64_t size; /* bytes in the file, pending ones included */
    char path[PATH_MAX_LEN];
} sink_t;

/* All of this belongs to the drain_mu holder (or to the fatal-signal handler). */
static char con_buf[CON_BUF], comb_buf[FILE_BUF], err_buf[ERR_BUF];
static char line_buf[LINE_BUF];
static char rec_buf[sizeof(rec_hdr_t) + DL_LOG_MAX_REQID + DL_LOG_MAX_MSG + DL_LOG_MAX_FIELDS + 8];
static sink_t con_sink = {STDERR_FILENO, con_buf, 0, CON_BUF, 0, ""};
static sink_t comb_sink = {-1, comb_buf, 0, FILE_BUF, 0, ""};
static sink_t err_sink = {-1, err_buf, 0, ERR_BUF, 0, ""};
static int out_console = 1, out_color;
static uint64_t max_file_bytes;
static int max_files;
static char service_json[DL_JSON_ESCAPE_ROOM(SERVICE_MAX)];
static size_t service_len;

/* a log sink that fails drops the batch: there is nowhere to report it */
static void write_all(int fd, const char *p, size_t n)
{
    (void)dl_write_all(fd, p, n);
}

static void sink_flush(sink_t *s)
{
    if (s->len > 0 && s->fd >= 0)
        write_all(s->fd, s->buf, s->len);
    s->len = 0;
}

/* "path.N" without snprintf, for the signal path too. */
static void numbered(char *out, const char *path, int n)
{
    size_t l = strlen(path);
    memcpy(out, path, l);
    out[l++] = '.';
    l += dl_num_format_i64(n, out + l);
    out[l] = '\0';
}

static int sink_open(sink_t *s)
{
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (s->fd < 0)
        return -errno;
    struct stat st;
    s->size = fstat(s->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

static void sink_close(sink_t *s)
{
    sink_flush(s);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static void sink_rotate(sink_t *s)
{
    char from[PATH_MAX_LEN + 16], to[PATH_MAX_LEN + 16];
    sink_flush(s);
    close(s->fd);
    s->fd = -1;
    if (max_files <= 0) {
        unlink(s->path);
    } else {
        for (int i = max_files - 1; i >= 1; i--) {
            numbered(from, s->path, i);
            numbered(to, s->path, i + 1);
            rename(from, to); /* ENOENT for files not made yet */
        }
        numbered(to, s->path, 1);
        rename(s->path, to);
    }
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    s->size = 0;
}

static void sink_append(sink_t *s, const char *p, size_t n, int rotates)
{
    if (s->fd < 0)
        return;
    if (rotates && max_file_bytes > 0 && s->size > 0 && s->size + n > max_file_bytes) {
        sink_rotate(s);
        if (s->fd < 0)
            return;
    }
    if (s->len + n > s->cap)
        sink_flush(s);
    if (n > s->cap) {
        write_all(s->fd, p, n);
    } else {
        memcpy(s->buf + s->len, p, n);
        s->len += n;
    }
    s->size += n;
}

static void sinks_flush(void)
{
    sink_flush(&con_sink);
    sink_flush(&comb_sink);
    sink_flush(&err_sink);
}

/* Formats one record into the sinks. */
static void output_record(const rec_hdr_t *h, const char *reqid, const char *msg,
                          const char *fields)
{
    char ts[32];
    size_t tslen = format_ts(ts, h->ts_ms);
    int lv = h->level;
    /* file-only records (the access log) skip the console when files exist */
    if (out_console && !((h->pad & 1) && comb_sink.fd >= 0)) {
        char *p = format_console(line_buf, lv, h->ts_ms, out_color, reqid, h->rlen, msg,
                                 h->mlen, fields, h->flen);
        sink_append(&con_sink, line_buf, (size_t)(p - line_buf), 0);
    }
    if (comb_sink.fd < 0 && err_sink.fd < 0)
        return;
    char *p = line_buf;
    p = PUTS(p, "{\"timestamp\":\"");
    p = put(p, ts, tslen);
    p = PUTS(p, "\",\"level\":\"");
    p = put(p, level_names[lv], strlen(level_names[lv]));
    p = PUTS(p, "\",\"message\":\"");
    p = dl_json_escape(p, msg, h->mlen);
    p = PUTS(p, "\",\"service\":\"");
    p = put(p, service_json, service_len);
    *p++ = '"';
    if (h->rlen > 0) {
        p = PUTS(p, ",\"requestId\":\"");
        p = dl_json_escape(p, reqid, h->rlen);
        *p++ = '"';
    }
    const char *in;
    size_t inlen;
    int kind = h->flen > 0 ? object_members(fields, h->flen, &in, &inlen) : 0;
    if (kind > 0) {
        /* JSON already, but its strings may hold bytes that are not UTF-8
         * (a route pattern in the access record): those become U+FFFD; its
         * names may repeat the record's own: those are renamed */
        char *q = merge_fields(p, line_buf + LINE_BUF - 2, in, inlen);
        if (q == NULL)
            kind = -1;
        else
            p = q;
    }
    if (kind < 0) {
        /* not an object: kept, as a string */
        p = PUTS(p, ",\"fields\":\"");
        p = dl_json_escape(p, fields, h->flen);
        *p++ = '"';
    }
    p = PUTS(p, "}\n");
    size_t n = (size_t)(p - line_buf);
    sink_append(&comb_sink, line_buf, n, 1);
    if (lv == DL_LOG_ERROR)
        sink_append(&err_sink, line_buf, n, 1);
}

/* ------------------------------------------------------------------------ */
/* Draining                                                                  */
/* ------------------------------------------------------------------------ */

/* Never returns: the writer saw a fatal signal elsewhere and gives the sinks up. */
static void park_for_crash(void)
{
    pthread_mutex_unlock(&drain_mu);
    for (;;)
        pause();
}

/* Writes the records of r up to its head as seen now. The caller owns the
 * consumer side (drain_mu or the crash path). Returns the number written. */
static uint64_t drain_ring(ring_t *r, int in_crash)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_seq_cst);
    uint64_t n = 0;
    while (tail != head) {
        if (!in_crash && atomic_load_explicit(&crashing, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&written, n, memory_order_relaxed);
            park_for_crash();
        }
        rec_hdr_t h;
        copy_out(r, tail, &h, sizeof(h));
        if (h.size < sizeof(h) || h.size > head - tail)
            break; /* cannot happen; never read past the head */
        const char *body;
        size_t off = (size_t)(tail & (r->cap - 1));
        if (off + h.size <= r->cap) {
            body = r->buf + off + sizeof(h);
        } else {
            copy_out(r, tail, rec_buf, h.size);
            body = rec_buf + sizeof(h);
        }
        output_record(&h, body, body + h.rlen, body + h.rlen + h.mlen);
        tail += h.size;
        atomic_store_explicit(&r->tail, tail, memory_order_release);
        n++;
    }
    atomic_fetch_add_explicit(&written, n, memory_order_relaxed);
    return n;
}

/* Drains every ring once and frees the rings of threads that left. */
static uint64_t drain_all(int in_crash)
{
    uint64_t n = 0;
    if (fallback.buf != NULL)
        n += drain_ring(&fallback, in_crash);
    ring_t *prev = NULL;
    ring_t *r = atomic_load_explicit(&rings, memory_order_acquire);
    while (r != NULL) {
        int closed = atomic_load_explicit(&r->closed, memory_order_acquire);
        n += drain_ring(r, in_crash);
        ring_t *next = r->next;
        if (closed && !in_crash) {
            /* The owner pushed nothing after closing: it is empty now. */
            pthread_mutex_lock(&reg_mu);
            if (prev == NULL) {
                /* Others may have been inserted in front since the walk began. */
                ring_t *first = atomic_load_explicit(&rings, memory_order_relaxed);
                if (first == r) {
                    atomic_store_explicit(&rings, next, memory_order_release);
                } else {
                    ring_t *q = first;
                    while (q->next != r)
                        q = q->next;
                    q->next = next;
                }
            } else {
                prev->next = next;
            }
            retired_dropped += atomic_load_explicit(&r->dropped, memory_order_relaxed);
            pthread_mutex_unlock(&reg_mu);
            ring_free(r);
        } else {
            prev = r;
        }
        r = next;
    }
    return n;
}

static void wake_writer(void)
{
    uint64_t one = 1;
    ssize_t w = write(wake_fd, &one, sizeof(one));
    DL_UNUSED(w);
}

static void *writer_main(void *arg)
{
    DL_UNUSED(arg);
    tl_is_writer = 1;
    for (;;) {
        uint64_t req = atomic_load(&flush_req);
        int stop = atomic_load(&stopping);
        uint64_t n = 0;
#ifdef DL_UNIT_TEST
        if (!stop && atomic_load(&dl_log_test_pause_writer)) {
            usleep(1000);
            continue;
        }
#endif
        pthread_mutex_lock(&drain_mu);
        n = drain_all(0);
        sinks_flush();
        pthread_mutex_unlock(&drain_mu);
        pthread_mutex_lock(&flush_mu);
        if (req > flush_done) {
            flush_done = req;
            pthread_cond_broadcast(&flush_cv);
        }
        pthread_mutex_unlock(&flush_mu);
        if (stop)
            break;
        /* a big batch: more is probably waiting; a small one: rest until the
         * next tick or a wake-up, so the writer never spins beside a worker */
        if (n >= 4096)
            continue;
        atomic_store(&sleeping, 1);
        if (atomic_load(&flush_req) == req && !atomic_load(&stopping)) {
            struct pollfd pfd = {wake_fd, POLLIN, 0};
            poll(&pfd, 1, WAKE_MS);
            uint64_t v;
            ssize_t r = read(wake_fd, &v, sizeof(v));
            DL_UNUSED(r);
        }
        atomic_store(&sleeping, 0);
    }
    pthread_mutex_lock(&flush_mu);
    writer_exited = 1;
    pthread_cond_broadcast(&flush_cv);
    pthread_mutex_unlock(&flush_mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Fatal signals                                                             */
/* ------------------------------------------------------------------------ */

static const int fatal_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
static struct sigaction old_actions[DL_ARRAY_SIZE(fatal_sigs)];
static int handlers_installed;

static void restore_handler(int sig)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(fatal_sigs); i++)
        if (fatal_sigs[i] == sig)
            sigaction(sig, &old_actions[i], NULL);
}

static void crash_sleep_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void fatal_handler(int sig)
{
    int saved = errno;
    if (atomic_exchange(&crashing, 1) == 0) {
        /* Take the consumer role: the writer parks between records when it
         * sees `crashing`; if this thread is the writer it already has it. */
        int owned = tl_is_writer;
        for (int i = 0; !owned && i < 500; i++) {
            if (pthread_mutex_trylock(&drain_mu) == 0)
                owned = 1;
            else
                crash_sleep_ms(2);
        }
        if (owned) {
            drain_all(1);
            sinks_flush();
        }
        atomic_store(&crash_done, 1);
    } else {
        /* Another thread is flushing; let it finish before the process dies. */
        for (int i = 0; i < 1000 && !atomic_load(&crash_done); i++)
            crash_sleep_ms(2);
    }
    restore_handler(sig);
    errno = saved;
    raise(sig); /* blocked until we return, then the previous action runs */
}

static void install_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fatal_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_ONSTACK;
    for (size_t i = 0; i < DL_ARRAY_SIZE(fatal_sigs); i++)
        sigaction(fatal_sigs[i], &sa, &old_actions[i]);
    handlers_installed = 1;
}

static void uninstall_handlers(void)
{
    if (!handlers_installed)
        return;
    for (size_t i = 0; i < DL_ARRAY_SIZE(fatal_sigs); i++)
        sigaction(fatal_sigs[i], &old_actions[i], NULL);
    handlers_installed = 0;
}

/* ------------------------------------------------------------------------ */
/* Synchronous path (logger not running)                                     */
/* ------------------------------------------------------------------------ */

static void write_sync(int level, int64_t ts_ms, const char *reqid, size_t rlen, const char *msg,
                       size_t mlen, const char *fields, size_t flen)
{
    char small[4096];
    size_t need = 64 + CON_ESCAPE_ROOM(rlen + mlen + flen);
    char *buf = need <= sizeof(small) ? small : dl_malloc(need);
    if (buf == NULL) {
        /* out of memory: the line, cut to what fits here */
        buf = small;
        size_t room = (sizeof(small) - 64) / 4 - rlen;
        mlen = DL_MIN(mlen, room);
        flen = DL_MIN(flen, room - mlen);
    }
    char *p = format_console(buf, level, ts_ms, 0, reqid, rlen, msg, mlen, fields, flen);
    write_all(STDERR_FILENO, buf, (size_t)(p - buf));
    if (buf != small)
        dl_free(buf);
    atomic_fetch_add_explicit(&written, 1, memory_order_relaxed);
}

/* A record raced with dl_logger_stop(): drain it ourselves, to stderr. */
static void drain_after_stop(void)
{
    pthread_mutex_lock(&drain_mu);
    drain_all(0);
    sinks_flush();
    pthread_mutex_unlock(&drain_mu);
}

/* ------------------------------------------------------------------------ */
/* API                                                                       */
/* ------------------------------------------------------------------------ */

int dl_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < (int)DL_ARRAY_SIZE(level_names); i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return DL_LOG_WARN;
    return -1;
}

void dl_log_config_init(dl_log_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->level = DL_LOG_INFO;
    cfg->dir = NULL;
    cfg->max_file_bytes = 10u << 20;
    cfg->max_files = 10;
    cfg->ring_bytes = DEFAULT_RING;
    cfg->console = 1;
    cfg->color = -1;
    cfg->service = "devloop";
}

void dl_log_emit(int level, const char *reqid, const char *msg, size_t mlen,
                 const char *fields_json, size_t flen)
{
    int file_only = (level & DL_LOG_FILE_ONLY) != 0;
    level &= ~DL_LOG_FILE_ONLY;
    if (level < dl_log_min_level)
        return;
    if (level < 0 || level > DL_LOG_ERROR)
        level = DL_LOG_ERROR;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t ts = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    size_t rlen = reqid ? strlen(reqid) : 0;
    rlen = DL_MIN(rlen, (size_t)DL_LOG_MAX_REQID);
    if (msg == NULL)
        mlen = 0;
    mlen = DL_MIN(mlen, (size_t)DL_LOG_MAX_MSG);
    if (fields_json == NULL || flen > DL_LOG_MAX_FIELDS)
        flen = 0;

    if (!atomic_load_explicit(&running, memory_order_acquire)) {
        write_sync(level, ts, reqid, rlen, msg, mlen, fields_json, flen);
        return;
    }
    rec_hdr_t h;
    memset(&h, 0, sizeof(h));
    h.size = (uint32_t)((sizeof(h) + rlen + mlen + flen + 7) & ~(size_t)7);
    h.level = (uint8_t)level;
    h.rlen = (uint8_t)rlen;
    h.mlen = (uint32_t)mlen;
    h.flen = (uint32_t)flen;
    h.ts_ms = ts;
    h.pad = (uint16_t)(file_only ? 1 : 0);
    ring_t *r = tl_ring;
    int urgent = level >= DL_LOG_WARN;
    if (r != NULL) {
        ring_push(r, &h, reqid, msg, fields_json);
        /* the writer comes every WAKE_MS anyway: wake it early only when the
         * ring fills up, so a busy worker does not pay a context switch per
         * record (one core serving 100k requests/s with the access log on) */
        uint64_t used = atomic_load_explicit(&r->head, memory_order_relaxed) -
                        atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (used > r->cap / 4)
            urgent = 1;
    } else {
        int queued = 0;
        pthread_mutex_lock(&fb_mu);
        if (fallback.buf != NULL) {
            ring_push(&fallback, &h, reqid, msg, fields_json);
            queued = 1;
        }
        pthread_mutex_unlock(&fb_mu);
        if (!queued) {
            write_sync(level, ts, reqid, rlen, msg, mlen, fields_json, flen);
            return;
        }
    }
    if (!atomic_load_explicit(&running, memory_order_seq_cst)) {
        drain_after_stop();
        return;
    }
    if (urgent && atomic_load_explicit(&sleeping, memory_order_seq_cst) &&
        atomic_exchange_explicit(&sleeping, 0, memory_order_seq_cst))
        wake_writer();
}

void dl_log_write(int level, const char *reqid, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n >= (int)sizeof(buf))
        n = (int)sizeof(buf) - 1;
    dl_log_emit(level, reqid, buf, (size_t)n, NULL, 0);
}

/* The crash handler runs on its own stack (SA_ONSTACK): on a stack
 * overflow the thread's stack has no room left for it. One per thread. */
#define ALTSTACK_BYTES (64 * 1024)
static __thread void *tl_altstack;

static void altstack_on(void)
{
    if (tl_altstack != NULL)
        return;
    /* a thread that has one already (the embedder's, a sanitizer's) keeps it */
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;
    void *p = dl_malloc(ALTSTACK_BYTES);
    if (p == NULL)
        return;
    stack_t ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_sp = p;
    ss.ss_size = ALTSTACK_BYTES;
    if (sigaltstack(&ss, NULL) == 0)
        tl_altstack = p;
    else
        dl_free(p);
}

static void altstack_off(void)
{
    if (tl_altstack == NULL)
        return;
    stack_t ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    dl_free(tl_altstack);
    tl_altstack = NULL;
}

void dl_log_thread_init(void)
{
    altstack_on();
    if (tl_ring != NULL)
        return;
    ring_t *r = ring_new(atomic_load(&ring_bytes));
    if (r == NULL)
        return; /* the thread uses the fallback ring */
    pthread_mutex_lock(&reg_mu);
    r->next = atomic_load_explicit(&rings, memory_order_relaxed);
    atomic_store_explicit(&rings, r, memory_order_release);
    pthread_mutex_unlock(&reg_mu);
    tl_ring = r;
}

void dl_log_thread_exit(void)
{
    altstack_off();
    ring_t *r = tl_ring;
    if (r == NULL)
        return;
    tl_ring = NULL;
    pthread_mutex_lock(&state_mu);
    atomic_store_explicit(&r->closed, 1, memory_order_release);
    if (!atomic_load(&running)) {
        /* No writer: drain (to stderr) and unlink it ourselves. */
        drain_after_stop();
    }
    pthread_mutex_unlock(&state_mu);
}

static void close_files(void)
{
    sink_close(&comb_sink);
    sink_close(&err_sink);
}

static int open_files(const char *dir)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    size_t dl = strlen(dir);
    if (dl + 32 > PATH_MAX_LEN)
        return DL_EINVAL;
    memcpy(comb_sink.path, dir, dl);
    memcpy(comb_sink.path + dl, "/combined.log", sizeof("/combined.log"));
    memcpy(err_sink.path, dir, dl);
    memcpy(err_sink.path + dl, "/error.log", sizeof("/error.log"));
    int rc = sink_open(&comb_sink);
    if (rc == 0)
        rc = sink_open(&err_sink);
    if (rc < 0)
        close_files();
    return rc;
}

int dl_logger_start(const dl_log_config_t *cfg)
{
    dl_log_config_t def;
    if (cfg == NULL) {
        dl_log_config_init(&def);
        cfg = &def;
    }
    pthread_mutex_lock(&state_mu);
    if (atomic_load(&running)) {
        pthread_mutex_unlock(&state_mu);
        return DL_EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&drain_mu);
    if (cfg->dir != NULL && cfg->dir[0] != '\0')
        rc = open_files(cfg->dir);
    if (rc == 0) {
        const char *svc = cfg->service ? cfg->service : "devloop";
        size_t sl = DL_MIN(strlen(svc), (size_t)SERVICE_MAX);
        service_len = (size_t)(dl_json_escape(service_json, svc, sl) - service_json);
        max_file_bytes = cfg->max_file_bytes;
        max_files = cfg->max_files;
        out_console = cfg->console != 0;
        out_color = cfg->color < 0 ? isatty(STDERR_FILENO) : cfg->color != 0;
        con_sink.fd = STDERR_FILENO;
        con_sink.len = 0;
    }
    pthread_mutex_unlock(&drain_mu);
    if (rc < 0) {
        pthread_mutex_unlock(&state_mu);
        return rc;
    }
    if (cfg->level >= DL_LOG_DEBUG && cfg->level <= DL_LOG_ERROR)
        dl_log_min_level = cfg->level;
    size_t rb = cfg->ring_bytes ? cfg->ring_bytes : DEFAULT_RING;
    atomic_store(&ring_bytes, rb);
    /* Kept open for the life of the process: a producer may still be about
     * to write to it while dl_logger_stop() runs. */
    if (wake_fd < 0)
        wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    char *fb = dl_malloc(round_ring(rb));
    if (wake_fd < 0 || fb == NULL) {
        rc = wake_fd < 0 ? -errno : DL_ENOMEM;
        goto fail;
    }
    pthread_mutex_lock(&fb_mu);
    fallback.buf = fb;
    fallback.cap = round_ring(rb);
    atomic_store(&fallback.head, 0);
    atomic_store(&fallback.tail, 0);
    fallback.tail_cache = 0;
    pthread_mutex_unlock(&fb_mu);
    fb = NULL;
    atomic_store(&stopping, 0);
    atomic_store(&sleeping, 0);
    pthread_mutex_lock(&flush_mu);
    writer_exited = 0;
    flush_done = atomic_load(&flush_req);
    pthread_mutex_unlock(&flush_mu);
    atomic_store(&running, 1);
    int prc = pthread_create(&writer_tid, NULL, writer_main, NULL);
    if (prc != 0) {
        atomic_store(&running, 0);
        rc = -prc;
        goto fail;
    }
    install_handlers();
    altstack_on(); /* the starting thread's; workers make theirs in dl_log_thread_init */
    pthread_mutex_unlock(&state_mu);
    return 0;

fail:
    dl_free(fb);
    pthread_mutex_lock(&fb_mu);
    dl_free(fallback.buf);
    fallback.buf = NULL;
    pthread_mutex_unlock(&fb_mu);
    pthread_mutex_lock(&drain_mu);
    close_files();
    pthread_mutex_unlock(&drain_mu);
    pthread_mutex_unlock(&state_mu);
    return rc;
}

void dl_logger_flush(void)
{
    if (!atomic_load(&running))
        return;
    pthread_mutex_lock(&flush_mu);
    uint64_t mine = atomic_fetch_add(&flush_req, 1) + 1;
    if (!writer_exited)
        wake_writer();
    while (flush_done < mine && !writer_exited)
        pthread_cond_wait(&flush_cv, &flush_mu);
    pthread_mutex_unlock(&flush_mu);
}

void dl_logger_stop(void)
{
    pthread_mutex_lock(&state_mu);
    if (!atomic_load(&running)) {
        pthread_mutex_unlock(&state_mu);
        return;
    }
    /* Producers that still saw running == 1 pushed before the writer's last
     * pass (seq_cst); later ones drain themselves in drain_after_stop(). */
    atomic_store(&running, 0);
    atomic_store(&stopping, 1);
    wake_writer();
    pthread_join(writer_tid, NULL);
    uninstall_handlers();

    /* fb_mu first, so no record slips into the fallback ring after its drain. */
    pthread_mutex_lock(&drain_mu);
    pthread_mutex_lock(&fb_mu);
    drain_all(0);
    close_files();
    sinks_flush();
    out_console = 1; /* from now on: stderr, plain, as before start */
    out_color = 0;
    char *fb = fallback.buf;
    fallback.buf = NULL;
    pthread_mutex_unlock(&fb_mu);
    pthread_mutex_unlock(&drain_mu);
    dl_free(fb);
    pthread_mutex_unlock(&state_mu);
}

uint64_t dl_log_dropped(void)
{
    pthread_mutex_lock(&reg_mu);
    uint64_t d = retired_dropped;
    for (ring_t *r = atomic_load_explicit(&rings, memory_order_acquire); r; r = r->next)
        d += atomic_load_explicit(&r->dropped, memory_order_relaxed);
    pthread_mutex_unlock(&reg_mu);
    d += atomic_load_explicit(&fallback.dropped, memory_order_relaxed);
    return d;
}

DL_TEST_HOOK uint64_t dl_log_written(void)
{
    return atomic_load_explicit(&written, memory_order_relaxed);
}
