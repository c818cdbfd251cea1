/*
 * mongo/pool.c - the URI (defaults, timeouts, pool size, redacted errors), the driver's
 * one-time setup and logging, and clients from the pool.
 */
#include "store/mongo/mongo_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/codec_json.h"
#include "common/internal.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void log_handler(mongoc_log_level_t level, const char *domain, const char *message,
                        void *arg)
{
    int lvl = DL_LOG_DEBUG;

    DL_UNUSED(arg);
    if (level <= MONGOC_LOG_LEVEL_ERROR)
        lvl = DL_LOG_ERROR;
    else if (level == MONGOC_LOG_LEVEL_WARNING)
        lvl = DL_LOG_WARN;
    else if (level == MONGOC_LOG_LEVEL_TRACE)
        return;
    dl_log(lvl, "mongoc %s: %s", domain, message);
}

static void global_init(void)
{
    /* the handler first: mongoc_init() itself may warn (no shared memory for
     * its counters), and a line straight to stderr is not a log record */
    mongoc_log_set_handler(log_handler, NULL);
    mongoc_init();
}

static void default_timeout(mongoc_uri_t *uri, const char *key, int32_t ms)
{
    if (!mongoc_uri_has_option(uri, key))
        mongoc_uri_set_option_as_int32(uri, key, ms);
}

static int parse_pool_size(const char *s)
{
    char *end = NULL;
    long v;

    if (s == NULL || *s == '\0')
        return 0;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v <= 0 || v > 100000)
        return 0;
    return (int)v;
}

/*
 * Parses the URI (NULL or "": MONGO_URI, else the default) and applies the
 * default timeouts. *pool_out: pool_size, else MONGO_POOL_SIZE, else the
 * URI's maxPoolSize, else 10.
 */
/* mongoc's URI error quotes the text it refused, which may be the password
 * ('Password "SECRET:x" must not have unescaped chars') or an option's
 * value. When the URI holds a userinfo or any query option, every quoted
 * text in the message (from its first to its last quote of that kind)
 * becomes "***"; a message about the password says what
 * to do instead of showing it. */
static void redact_uri_error(const char *uri, const char *msg, char *out, size_t len)
{
    const char *rest = strstr(uri, "://");
    rest = rest ? rest + 3 : uri;
    if (strchr(rest, '@') == NULL && strchr(rest, '?') == NULL) {
        snprintf(out, len, "%s", msg);
        return;
    }
    if (strncmp(msg, "Password ", 9) == 0) {
        snprintf(out, len, "the password must be percent-encoded (RFC 3986); it is not shown");
        return;
    }
    size_t o = 0;
    for (const char *p = msg; *p != '\0' && o + 6 < len; p++) {
        /* to the last such quote: the refused text may hold the quote too */
        const char *close = (*p == '"' || *p == '\'') ? strrchr(p + 1, *p) : NULL;
        if (close == NULL && (*p == '"' || *p == '\'')) {
            memcpy(out + o, "***", 4); /* an unpaired quote: what follows may be secret */
            return;
        }
        if (close == NULL) {
            out[o++] = *p;
            continue;
        }
        out[o++] = *p;
        memcpy(out + o, "***", 3);
        o += 3;
        out[o++] = *p;
        p = close;
    }
    out[o] = '\0';
}

int dl_mongo_uri_prepare(const char *uri_str, int pool_size, mongoc_uri_t **out, int *pool_out,
                         char *err, size_t errlen)
{
    bson_error_t e;
    mongoc_uri_t *uri;
    int n;

    pthread_once(&init_once, global_init);
    *out = NULL;
    if (uri_str == NULL || *uri_str == '\0')
        uri_str = getenv("MONGO_URI");
    if (uri_str == NULL || *uri_str == '\0')
        uri_str = DL_MONGO_DEFAULT_URI;
    memset(&e, 0, sizeof(e));
    uri = mongoc_uri_new_with_error(uri_str, &e);
    if (uri == NULL) {
        char shown[sizeof(e.message)];
        redact_uri_error(uri_str, e.message[0] ? e.message : "cannot parse", shown,
                         sizeof(shown));
        return dl_err_format(err, errlen, DL_EINVAL, "mongodb: invalid URI: %s", shown);
    }
    default_timeout(uri, MONGOC_URI_CONNECTTIMEOUTMS, DL_MONGO_DEFAULT_CONNECT_TIMEOUT_MS);
    default_timeout(uri, MONGOC_URI_SOCKETTIMEOUTMS, DL_MONGO_DEFAULT_SOCKET_TIMEOUT_MS);
    default_timeout(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, DL_MONGO_DEFAULT_SELECT_TIMEOUT_MS);
    n = pool_size > 0 ? pool_size : parse_pool_size(getenv("MONGO_POOL_SIZE"));
    if (n <= 0 && mongoc_uri_has_option(uri, MONGOC_URI_MAXPOOLSIZE))
        n = mongoc_uri_get_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, 0);
    if (n <= 0)
        n = DL_MONGO_DEFAULT_POOL_SIZE;
    *pool_out = n;
    *out = uri;
    return 0;
}

void dl_mongo_describe_hosts(mongo_store_t *ms)
{
    const mongoc_host_list_t *h = mongoc_uri_get_hosts(ms->uri);
    dl_buf_t b = DL_BUF_INIT;

    for (; h != NULL; h = h->next)
        dl_buf_appendf(&b, "%s%s", b.len ? "," : "", h->host_and_port);
    if (b.len == 0 && mongoc_uri_get_srv_hostname(ms->uri) != NULL)
        dl_buf_appendf(&b, "%s (SRV)", mongoc_uri_get_srv_hostname(ms->uri));
    snprintf(ms->hosts, sizeof(ms->hosts), "%.*s", (int)b.len, b.len && b.data ? b.data : "?");
    dl_buf_free(&b);
}

mongoc_client_t *dl_mongo_acquire(mongo_store_t *ms, dl_store_res_t *res)
{
    mongoc_client_t *c = mongoc_client_pool_pop(ms->pool);

    if (c == NULL) {
        dl_err_format(res->err, sizeof(res->err), 0,
                      "mongodb: no free connection in the pool of %d", ms->pool_size);
        dl_mongo_res_fail(res, DL_ETIMEDOUT);
    }
    return c;
}
