/*
 * multipart.c - streaming multipart/form-data parser. The body arrives in
 * chunks of any size and goes through a small state machine: preamble,
 * delimiter line, a part's header block (buffered, bounded), then part data
 * up to the next delimiter, and so on until "--boundary--". Part data is never
 * buffered: a KMP matcher over "\r\n--" + boundary holds back only the bytes
 * that are still a prefix of the delimiter. Those held bytes are by
 * construction a prefix of the delimiter itself, so when a match fails they
 * are delivered from the delimiter string and nothing needs copying between
 * chunks. Errors are sticky, as on an llhttp parser.
 */
#include "core/multipart.h"

#include <string.h>

#include "common/internal.h"

enum {
    ST_PREAMBLE,    /* skipping bytes before the first delimiter */
    ST_AFTER_DELIM, /* just after "--boundary": "--", padding or CR */
    ST_PADDING,     /* transport padding (SP / HT) before CRLF */
    ST_LF,          /* CR seen after the delimiter, LF must follow */
    ST_DASH2,       /* one '-' after the delimiter, a second must follow */
    ST_HEADERS,     /* a part's header block */
    ST_DATA,        /* a part's data */
    ST_DONE         /* closing delimiter seen; the epilogue is ignored */
};

static int fail(dl_multipart_t *m, int rc, const char *why)
{
    m->_rc = rc;
    m->error = why;
    return rc;
}

/* ---- lexical helpers (RFC 7230 tokens and quoted strings) */

static int is_tchar(int c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Unquoted parameter values are read leniently: anything up to whitespace,
 * ';' or a quote, so boundaries with '/', '=' or ':' and unquoted UTF-8
 * filenames still parse. */
static int is_value_char(int c)
{
    return c > 0x20 && c != 0x7f && c != '"' && c != ';';
}

static int is_bchar(int c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("'()+_,-./:=? ", c) != NULL;
}

static void skip_ows(const char *s, size_t len, size_t *i)
{
    while (*i < len && (s[*i] == ' ' || s[*i] == '\t'))
        (*i)++;
}

static size_t read_token(const char *s, size_t len, size_t *i)
{
    size_t start = *i;
    while (*i < len && is_tchar((unsigned char)s[*i]))
        (*i)++;
    return *i - start;
}

/* Reads a parameter value, quoted (backslash escapes) or not, into out (cap
 * bytes with the NUL; out NULL discards it). Returns 0, -1 when malformed or
 * -2 when it does not fit. */
static int read_value(const char *s, size_t len, size_t *i, char *out, size_t cap, size_t *olen)
{
    size_t n = 0;
    int toolong = 0;

    if (*i < len && s[*i] == '"') {
        (*i)++;
        for (;;) {
            if (*i >= len)
                return -1; /* unterminated */
            char c = s[(*i)++];
            if (c == '"')
                break;
            if (c == '\\') {
                if (*i >= len)
                    return -1;
                c = s[(*i)++];
            }
            if (out != NULL) {
                if (n + 1 < cap)
                    out[n] = c;
                else
                    toolong = 1;
            }
            n++;
        }
    } else {
        size_t start = *i;
        while (*i < len && is_value_char((unsigned char)s[*i]))
            (*i)++;
        n = *i - start;
        if (n == 0)
            return -1;
        if (out != NULL) {
            if (n + 1 <= cap)
                memcpy(out, s + start, n);
            else
                toolong = 1;
        }
    }
    if (toolong)
        return -2;
    if (out != NULL)
        out[n] = '\0';
    if (olen != NULL)
        *olen = n;
    return 0;
}

/* ---- the boundary parameter of the request's Content-Type */

int dl_multipart_boundary(const char *content_type, size_t len, char *out, size_t outlen)
{
    const char *s = content_type;
    char b[DL_MULTIPART_MAX_BOUNDARY + 1];
    size_t blen = 0, i = 0;
    int seen = 0;

    skip_ows(s, len, &i);
    size_t tstart = i, tlen = read_token(s, len, &i);
    if (!dl_strncasecmp_eq(s + tstart, tlen, "multipart", 9) || i >= len || s[i] != '/')
        return DL_EINVAL;
    i++;
    size_t sstart = i, slen = read_token(s, len, &i);
    if (!dl_strncasecmp_eq(s + sstart, slen, "form-data", 9))
        return DL_EINVAL;

    for (;;) {
        skip_ows(s, len, &i);
        if (i >= len)
            break;
        if (s[i] != ';')
            return DL_EINVAL;
        i++;
        skip_ows(s, len, &i);
        if (i >= len)
            break; /* a trailing ';' */
        size_t pstart = i, plen = read_token(s, len, &i);
        if (plen == 0)
            return DL_EINVAL;
        skip_ows(s, len, &i);
        if (i >= len || s[i] != '=')
            return DL_EINVAL;
        i++;
        skip_ows(s, len, &i);
        if (dl_strncasecmp_eq(s + pstart, plen, "boundary", 8)) {
            if (seen)
                return DL_EINVAL; /* two boundaries: ambiguous, refuse */
            seen = 1;
            if (read_value(s, len, &i, b, sizeof(b), &blen) != 0)
                return DL_EINVAL;
        } else if (read_value(s, len, &i, NULL, 0, NULL) != 0) {
            return DL_EINVAL;
        }
    }
    if (!seen || blen == 0 || blen > DL_MULTIPART_MAX_BOUNDARY || b[blen - 1] == ' ')
        return DL_EINVAL;
    for (size_t k = 0; k < blen; k++)
        if (!is_bchar((unsigned char)b[k]))
            return DL_EINVAL;
    if (out == NULL || blen + 1 > outlen)
        return DL_EINVAL;
    memcpy(out, b, blen + 1);
    return (int)blen;
}

/* ---- set-up */

void dl_multipart_init(dl_multipart_t *m, const char *boundary, size_t blen,
                       const dl_multipart_cbs_t *cbs, void *arg)
{
    memset(m, 0, offsetof(dl_multipart_t, _part));
    if (cbs != NULL)
        m->_cbs = *cbs;
    m->_arg = arg;
    m->_state = ST_PREAMBLE;
    if (boundary == NULL || blen == 0 || blen > DL_MULTIPART_MAX_BOUNDARY) {
        fail(m, DL_EINVAL, "bad boundary");
        return;
    }
    memcpy(m->_delim, "\r\n--", 4);
    memcpy(m->_delim + 4, boundary, blen);
    m->_dlen = 4 + blen;

    /* _fail[k] is the longest proper border of _delim[0..k). With RFC 2046
     * boundaries it is always 0 ('\r' occurs once), but init accepts any
     * bytes, and the matcher must stay right for them too. */
    size_t k = 0;
    m->_fail[0] = 0;
    m->_fail[1] = 0;
    for (size_t q = 1; q < m->_dlen; q++) {
        while (k > 0 && m->_delim[q] != m->_delim[k])
            k = m->_fail[k];
        if (m->_delim[q] == m->_delim[k])
            k++;
        m->_fail[q + 1] = (uint8_t)k;
    }

    /* The first delimiter may open the body without a CRLF before it: start
     * as if "\r\n" had been matched already. */
    m->_matched = 2;
    m->_virtual = 2;
}

/* ---- delimiter search over part data (and the preamble) */

static int deliver(dl_multipart_t *m, int is_data, const char *p, size_t n)
{
    if (!is_data || n == 0)
        return 0;
    m->data_bytes += n;
    if (m->_cbs.on_part_data == NULL)
        return 0;
    int rc = m->_cbs.on_part_data(m->_arg, p, n);
    return rc < 0 ? rc : 0;
}

/*
 * Runs the matcher over p[0..len). Bytes shown not to start a delimiter are
 * delivered in order (dropped in the preamble). Positions are relative to p;
 * the m->_matched bytes held from earlier chunks sit at [-h0, 0), and the
 * first m->_virtual of them are the CRLF assumed at the start of the body or
 * of a part's data, which is never data. Sets *used to the bytes consumed,
 * up to and including a complete delimiter (then *found = 1). Returns 0 or a
 * callback's negative code.
 */
static int scan_delim(dl_multipart_t *m, const char *p, size_t len, int is_data, size_t *used,
                      int *found)
{
    const char *d = m->_delim;
    size_t matched = m->_matched, i = 0;
    ptrdiff_t h0 = (ptrdiff_t)matched;
    ptrdiff_t v_end = (ptrdiff_t)m->_virtual - h0; /* the virtual CRLF is [-h0, v_end) */
    ptrdiff_t e = v_end;                           /* first position not yet delivered */
    ptrdiff_t s;
    int rc;

    *found = 0;
    while (i < len) {
        if (matched == 0) {
            /* Nothing held: skip straight to the next possible delimiter start. */
            const char *q = memchr(p + i, d[0], len - i);
            if (q == NULL) {
                i = len;
                break;
            }
            i = (size_t)(q - p);
        }
        char c = p[i++];
        while (matched > 0 && d[matched] != c)
            matched = m->_fail[matched];
        if (d[matched] == c)
            matched++;
        s = (ptrdiff_t)i - (ptrdiff_t)matched; /* held bytes are [s, i) */
        if (e < 0 && s > e) {
            /* Bytes held from an earlier chunk turned out to be data. They
             * equal the delimiter's prefix, so deliver them from there. */
            ptrdiff_t upto = s < 0 ? s : 0;
            rc = deliver(m, is_data, d + (e + h0), (size_t)(upto - e));
            if (rc < 0)
                return rc;
            e = upto;
        }
        if (matched == m->_dlen) {
            if (s > e) {
                rc = deliver(m, is_data, p + e, (size_t)(s - e));
                if (rc < 0)
                    return rc;
            }
            m->_matched = 0;
            m->_virtual = 0;
            *used = i;
            *found = 1;
            return 0;
        }
    }
    s = (ptrdiff_t)len - (ptrdiff_t)matched;
    if (s > e) {
        rc = deliver(m, is_data, p + e, (size_t)(s - e));
        if (rc < 0)
            return rc;
    }
    m->_matched = matched;
    m->_virtual = s < v_end ? (size_t)(v_end - s) : 0;
    *used = len;
    return 0;
}

/* ---- a part's header block */

/* Content-Disposition: form-data; name="..."; filename="..." */
static int parse_disposition(dl_multipart_t *m, const char *s, size_t len)
{
    dl_multipart_part_t *part = &m->_part;
    size_t i = 0, tstart = 0, tlen = read_token(s, len, &i);
    int seen_name = 0;

    if (!dl_strncasecmp_eq(s + tstart, tlen, "form-data", 9))
        return fail(m, DL_EINVAL, "Content-Disposition is not form-data");
    for (;;) {
        skip_ows(s, len, &i);
        if (i >= len)
            break;
        if (s[i] != ';')
            return fail(m, DL_EINVAL, "malformed Content-Disposition");
        i++;
        skip_ows(s, len, &i);
        if (i >= len)
            break;
        size_t pstart = i, plen = read_token(s, len, &i);
        if (plen == 0)
            return fail(m, DL_EINVAL, "malformed Content-Disposition");
        skip_ows(s, len, &i);
        if (i >= len || s[i] != '=')
            return fail(m, DL_EINVAL, "malformed Content-Disposition");
        i++;
        skip_ows(s, len, &i);

        int rc;
        if (dl_strncasecmp_eq(s + pstart, plen, "name", 4)) {
            if (seen_name)
                return fail(m, DL_EINVAL, "duplicate name parameter");
            seen_name = 1;
            rc = read_value(s, len, &i, part->name, sizeof(part->name), NULL);
            if (rc == -2)
                return fail(m, DL_EINVAL, "field name too long");
        } else if (dl_strncasecmp_eq(s + pstart, plen, "filename", 8)) {
            if (part->has_filename)
                return fail(m, DL_EINVAL, "duplicate filename parameter");
            part->has_filename = 1;
            rc = read_value(s, len, &i, part->filename, sizeof(part->filename), NULL);
            if (rc == -2)
                return fail(m, DL_EINVAL, "filename too long");
        } else {
            rc = read_value(s, len, &i, NULL, 0, NULL);
        }
        if (rc != 0)
            return fail(m, DL_EINVAL, "malformed Content-Disposition");
    }
    return 0;
}

/* Parses _hdr[0.._hlen), which ends with an empty line, into _part. */
static int parse_headers(dl_multipart_t *m)
{
    const char *h = m->_hdr;
    size_t pos = 0, end = m->_hlen;
    int seen_cd = 0, seen_ct = 0;

    memset(&m->_part, 0, sizeof(m->_part));
    while (pos < end) {
        size_t eol = pos;
        while (eol + 1 < end && !(h[eol] == '\r' && h[eol + 1] == '\n'))
            eol++;
        if (eol == pos)
            break; /* the empty line */
        const char *line = h + pos;
        size_t llen = eol - pos, colon = llen;
        pos = eol + 2;

        for (size_t k = 0; k < llen; k++) {
            unsigned char c = (unsigned char)line[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(m, DL_EINVAL, "control character in part header");
            if (c == ':' && colon == llen)
                colon = k;
        }
        /* A name must be a token right before the colon; this also refuses
         * obsolete line folding (a line starting with whitespace). */
        size_t ni = 0;
        if (colon == llen || colon == 0 || read_token(line, colon, &ni) != colon)
            return fail(m, DL_EINVAL, "malformed part header");
        size_t vs = colon + 1, ve = llen;
        while (vs < ve && (line[vs] == ' ' || line[vs] == '\t'))
            vs++;
        while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t'))
            ve--;

        if (dl_strncasecmp_eq(line, colon, "Content-Disposition", 19)) {
            if (seen_cd)
                return fail(m, DL_EINVAL, "duplicate Content-Disposition");
            seen_cd = 1;
            int rc = parse_disposition(m, line + vs, ve - vs);
            if (rc < 0)
                return rc;
        } else if (dl_strncasecmp_eq(line, colon, "Content-Type", 12)) {
            if (seen_ct)
                return fail(m, DL_EINVAL, "duplicate Content-Type");
            seen_ct = 1;
            if (ve - vs >= sizeof(m->_part.content_type))
                return fail(m, DL_EINVAL, "part Content-Type too long");
            memcpy(m->_part.content_type, line + vs, ve - vs);
            m->_part.content_type[ve - vs] = '\0';
        }
    }
    if (m->_part.name[0] == '\0')
        return fail(m, DL_EINVAL, "part has no name");
    return 0;
}

/* Buffers header bytes until the empty line. Sets *used and *done. */
static int read_headers(dl_multipart_t *m, const char *p, size_t len, size_t *used, int *done)
{
    char *h = m->_hdr;
    size_t n = m->_hlen, i = 0;

    *done = 0;
    while (i < len) {
        if (n == DL_MULTIPART_MAX_HEADERS)
            return fail(m, DL_ETOOBIG, "part headers too long");
        h[n++] = p[i++];
        if (h[n - 1] != '\n')
            continue;
        if ((n == 2 && h[0] == '\r') || (n >= 4 && memcmp(h + n - 4, "\r\n\r\n", 4) == 0)) {
            *done = 1;
            break;
        }
    }
    m->_hlen = n;
    *used = i;
    return 0;
}

/* ---- feeding */

static int callback_failed(dl_multipart_t *m, int rc)
{
    return fail(m, rc, "stopped by a callback");
}

int dl_multipart_feed(dl_multipart_t *m, const char *data, size_t len)
{
    size_t i = 0, used = 0;
    int rc, found;

    if (m->_rc != 0)
        return m->_rc;
    while (i < len && m->_state != ST_DONE) {
        char c;
        switch (m->_state) {
        case ST_PREAMBLE:
        case ST_DATA:
            rc = scan_delim(m, data + i, len - i, m->_state == ST_DATA, &used, &found);
            if (rc < 0)
                return callback_failed(m, rc);
            i += used;
            if (!found)
                break;
            if (m->_state == ST_DATA && m->_cbs.on_part_end != NULL) {
                rc = m->_cbs.on_part_end(m->_arg);
                if (rc < 0)
                    return callback_failed(m, rc);
            }
            m->_state = ST_AFTER_DELIM;
            break;

        case ST_AFTER_DELIM:
        case ST_PADDING:
            c = data[i++];
            if (c == '-' && m->_state == ST_AFTER_DELIM)
                m->_state = ST_DASH2;
            else if (c == ' ' || c == '\t')
                m->_state = ST_PADDING;
            else if (c == '\r')
                m->_state = ST_LF;
            else
                return fail(m, DL_EINVAL, "no CRLF after the delimiter");
            break;

        case ST_LF:
            c = data[i++];
            if (c != '\n')
                return fail(m, DL_EINVAL, "no CRLF after the delimiter");
            m->_hlen = 0;
            m->_state = ST_HEADERS;
            break;

        case ST_DASH2:
            c = data[i++];
            if (c != '-')
                return fail(m, DL_EINVAL, "malformed closing delimiter");
            m->_state = ST_DONE;
            break;

        case ST_HEADERS:
            rc = read_headers(m, data + i, len - i, &used, &found);
            if (rc < 0)
                return rc;
            i += used;
            if (!found)
                break;
            rc = parse_headers(m);
            if (rc < 0)
                return rc;
            /* A delimiter may follow the empty line at once (a part with no
             * data, as Go's mime/multipart and busboy read it): the empty
             * line's CRLF starts it, so data begins with that CRLF matched. */
            m->parts++;
            m->_matched = 2;
            m->_virtual = 2;
            m->_state = ST_DATA;
            if (m->_cbs.on_part_begin != NULL) {
                rc = m->_cbs.on_part_begin(m->_arg, &m->_part);
                if (rc < 0)
                    return callback_failed(m, rc);
            }
            break;

        default:
            DL_ASSERT(!"unknown multipart state");
        }
    }
    return 0;
}

int dl_multipart_finish(dl_multipart_t *m)
{
    if (m->_rc != 0)
        return m->_rc;
    if (m->_state == ST_DONE)
        return 0;
    if (m->_state == ST_PREAMBLE)
        return fail(m, DL_EINVAL, "body ended before the first delimiter");
    return fail(m, DL_EINVAL, "body ended inside a part");
}
