/*
 * redis_config.c - a Redis pool's settings from REDIS_URL or REDIS_HOST,
 * REDIS_PORT... and the pool's REDIS_* knobs (redis_config.h). Every value is
 * checked here, naming the variable, before a pool is made.
 */
#include "backend/redis_config.h"

#include <limits.h>
#include <stddef.h>

#include "backend/breaker.h"
#include "common/env_value.h"
#include "common/internal.h"


void dl_redis_config_init(dl_redis_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
    cfg->port = DL_REDIS_DEFAULT_PORT;
    cfg->pool_size = DL_REDIS_DEFAULT_POOL_SIZE;
    cfg->cmd_timeout_ms = DL_REDIS_DEFAULT_CMD_TIMEOUT_MS;
    cfg->connect_timeout_ms = DL_REDIS_DEFAULT_CONNECT_TIMEOUT_MS;
    cfg->max_offline = DL_REDIS_DEFAULT_MAX_OFFLINE;
    cfg->max_retries = DL_REDIS_DEFAULT_MAX_RETRIES;
    snprintf(cfg->client_name, sizeof(cfg->client_name), "%s", DL_REDIS_DEFAULT_CLIENT_NAME);
    cfg->breaker_threshold = DL_BREAKER_DEFAULT_THRESHOLD;
    cfg->breaker_cooldown_ms = DL_BREAKER_DEFAULT_COOLDOWN_MS;
    cfg->reconnect_max_ms = DL_REDIS_DEFAULT_RECONNECT_MAX_MS;
}

/* Parses n decimal digits (no sign, no spaces) within [min, max]. */
static int parse_num(const char *s, size_t n, long long min, long long max, long long *out)
{
    long long v = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Percent-decodes s[0..n) into dst (NUL-terminated). Returns 0, -1 when it
 * does not fit, -2 for a malformed escape or an encoded NUL. */
static int pct_decode(char *dst, size_t cap, const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3)
                return -2;
            int hi = dl_hex_digit((unsigned char)s[i + 1]);
            int lo = dl_hex_digit((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -2;
            c = hi * 16 + lo;
            i += 2;
        }
        if (w + 1 >= cap)
            return -1;
        dst[w++] = (char)c;
    }
    dst[w] = '\0';
    return 0;
}

int dl_redis_config_parse_url(dl_redis_config_t *cfg, const char *url, char *err, size_t errlen)
{
    char host[sizeof(cfg->host)], user[sizeof(cfg->username)], pass[sizeof(cfg->password)];
    long long port = DL_REDIS_DEFAULT_PORT, db = 0;

    if (url == NULL)
        return dl_err_format(err, errlen, DL_EINVAL, "redis URL: missing");
    if (strncasecmp(url, "rediss://", 9) == 0)
        return dl_err_format(err, errlen, DL_EINVAL, "redis URL: TLS not supported (rediss://)");
    if (strncasecmp(url, "redis://", 8) != 0)
        return dl_err_format(err, errlen, DL_EINVAL,
                             "redis URL: expected redis://[[user]:password@]host[:port][/db]");
    const char *s = url + 8;
    const char *end = s + strlen(s);
    if (strpbrk(s, "?#") != NULL)
        return dl_err_format(err, errlen, DL_EINVAL, "redis URL: query strings are not supported");

    /* The password may hold an unencoded '@': the host starts after the last one. */
    const char *at = NULL;
    for (const char *q = s; q < end; q++)
        if (*q == '@')
            at = q;
    const char *hp = at != NULL ? at + 1 : s;
    const char *slash = memchr(hp, '/', (size_t)(end - hp));
    const char *hend = slash != NULL ? slash : end;

    user[0] = pass[0] = '\0';
    if (at != NULL) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        int rc = 0;
        if (colon != NULL) {
            rc = pct_decode(user, sizeof(user), s, (size_t)(colon - s));
            if (rc == 0)
                rc = pct_decode(pass, sizeof(pass), colon + 1, (size_t)(at - colon - 1));
        } else {
            rc = pct_decode(pass, sizeof(pass), s, (size_t)(at - s));
        }
        if (rc == -1)
            return dl_err_format(err, errlen, DL_EINVAL, "redis URL: user or password too long");
        if (rc < 0)
            return dl_err_format(err, errlen, DL_EINVAL,
                                 "redis URL: bad percent-escape in user or password");
    }

    const char *hs = hp, *he, *portp = NULL;
    if (hp < hend && *hp == '[') {
        const char *close = memchr(hp, ']', (size_t)(hend - hp));
        if (close == NULL)
            return dl_err_format(err, errlen, DL_EINVAL, "redis URL: unterminated [IPv6] host");
        hs = hp + 1;
        he = close;
        if (close + 1 < hend) {
            if (close[1] != ':')
                return dl_err_format(err, errlen, DL_EINVAL, "redis URL: junk after [IPv6] host");
            portp = close + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', (size_t)(hend - hp));
        he = colon != NULL ? colon : hend;
        if (colon != NULL)
            portp = colon + 1;
    }
    if (he == hs)
        return dl_err_format(err, errlen, DL_EINVAL, "redis URL: missing host");
    if ((size_t)(he - hs) >= sizeof(host))
        return dl_err_format(err, errlen, DL_EINVAL, "redis URL: host too long");
    for (const char *q = hs; q < he; q++)
        if (*q == '@' || *q == '[' || *q == ']' || (unsigned char)*q <= ' ')
            return dl_err_format(err, errlen, DL_EINVAL, "redis URL: bad host");
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';

    if (portp != NULL && parse_num(portp, (size_t)(hend - portp), 1, 65535, &port) < 0)
        return dl_err_format(err, errlen, DL_EINVAL,
                             "redis URL: bad port \"%.*s\"", (int)(hend - portp), portp);
    if (slash != NULL && slash + 1 < end &&
        parse_num(slash + 1, (size_t)(end - slash - 1), 0, INT_MAX, &db) < 0)
        return dl_err_format(err, errlen, DL_EINVAL, "redis URL: bad db \"%s\"", slash + 1);

    snprintf(cfg->host, sizeof(cfg->host), "%s", host);
    snprintf(cfg->username, sizeof(cfg->username), "%s", user);
    snprintf(cfg->password, sizeof(cfg->password), "%s", pass);
    cfg->port = (int)port;
    cfg->db = (int)db;
    return 0;
}

static const char *env_get(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* A number through the runtime's one parser: *_MS variables take durations
 * (500ms, 10s), the others whole numbers. 1 when set, 0 when not, <0 bad. */
static int env_num(const char *name, long long min, long long max, long long *out, char *err,
                   size_t errlen)
{
    if (env_get(name) == NULL)
        return 0;
    size_t n = strlen(name);
    dl_env_kind_t kind = n > 3 && strcmp(name + n - 3, "_MS") == 0 ? DL_ENV_MS : DL_ENV_COUNT;
    uint64_t v;
    char msg[200];
    if (dl_env_value(name, kind, 0, (uint64_t)min, (uint64_t)max, &v, msg, sizeof(msg)) != 0)
        return dl_err_format(err, errlen, DL_EINVAL, "%s", msg);
    *out = (long long)v;
    return 1;
}

static int env_str(const char *name, char *dst, size_t cap, char *err, size_t errlen)
{
    const char *v = env_get(name);
    if (v == NULL)
        return 0;
    if (strlen(v) >= cap)
        return dl_err_format(err, errlen, DL_EINVAL,
                             "%s: too long (at most %zu bytes)", name, cap - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 1;
}

/* The settings read the same way whether or not Redis is configured: a
 * bounded number into a field, an int or (wide) a uint64_t; in this order,
 * so the first bad one is the one reported. */
static const struct {
    const char *name;
    long long min, max;
    size_t offset;
    int wide;
} tuning[] = {
    {"REDIS_POOL_SIZE", 1, DL_REDIS_MAX_POOL_SIZE, offsetof(dl_redis_config_t, pool_size), 0},
    {"REDIS_COMMAND_TIMEOUT_MS", 1, (long long)DL_REDIS_MAX_TIMEOUT_MS,
     offsetof(dl_redis_config_t, cmd_timeout_ms), 1},
    {"REDIS_CONNECT_TIMEOUT_MS", 1, (long long)DL_REDIS_MAX_TIMEOUT_MS,
     offsetof(dl_redis_config_t, connect_timeout_ms), 1},
    {"REDIS_BREAKER_THRESHOLD", 0, DL_REDIS_MAX_BREAKER_THRESHOLD,
     offsetof(dl_redis_config_t, breaker_threshold), 0},
    {"REDIS_BREAKER_COOLDOWN_MS", 1, (long long)DL_REDIS_MAX_TIMEOUT_MS,
     offsetof(dl_redis_config_t, breaker_cooldown_ms), 1},
    {"REDIS_RECONNECT_MAX_MS", DL_REDIS_MIN_RECONNECT_MS, DL_REDIS_MAX_RECONNECT_MS,
     offsetof(dl_redis_config_t, reconnect_max_ms), 1},
};

int dl_redis_config_from_env(dl_redis_config_t *cfg, char *err, size_t errlen)
{
    int configured = 0, rc;
    long long v;

    dl_redis_config_init(cfg);
    const char *url = env_get("REDIS_URL");
    if (url != NULL) {
        rc = dl_redis_config_parse_url(cfg, url, err, errlen);
        if (rc < 0)
            return rc;
        configured = 1;
    } else {
        rc = env_str("REDIS_HOST", cfg->host, sizeof(cfg->host), err, errlen);
        if (rc < 0)
            return rc;
        configured |= rc;
        rc = env_num("REDIS_PORT", 1, 65535, &v, err, errlen);
        if (rc < 0)
            return rc;
        if (rc > 0)
            cfg->port = (int)v;
        configured |= rc;
        rc = env_str("REDIS_USERNAME", cfg->username, sizeof(cfg->username), err, errlen);
        if (rc < 0)
            return rc;
        rc = env_str("REDIS_PASSWORD", cfg->password, sizeof(cfg->password), err, errlen);
        if (rc < 0)
            return rc;
        configured |= rc;
        rc = env_num("REDIS_DB", 0, INT_MAX, &v, err, errlen);
        if (rc < 0)
            return rc;
        if (rc > 0)
            cfg->db = (int)v;
        configured |= rc;
    }
    for (size_t i = 0; i < DL_ARRAY_SIZE(tuning); i++) {
        rc = env_num(tuning[i].name, tuning[i].min, tuning[i].max, &v, err, errlen);
        if (rc < 0)
            return rc;
        if (rc > 0 && tuning[i].wide)
            *(uint64_t *)((char *)cfg + tuning[i].offset) = (uint64_t)v;
        else if (rc > 0)
            *(int *)((char *)cfg + tuning[i].offset) = (int)v;
    }
    return configured;
}
