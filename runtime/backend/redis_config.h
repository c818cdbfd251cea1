/*
 * redis_config.h - where and how a Redis pool (redis_pool.h) connects: the
 * defaults, REDIS_URL, and the REDIS_* variables, with the bounds the pool
 * holds its settings to.
 */
#ifndef DL_REDIS_CONFIG_H
#define DL_REDIS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* bounds of the settings (checked here, held by the pool) */
#define DL_REDIS_MIN_RECONNECT_MS 10 /* below, a down Redis costs an idle server CPU in reconnects */
#define DL_REDIS_MAX_RECONNECT_MS 60000
#define DL_REDIS_MAX_BREAKER_THRESHOLD 1000000
#define DL_REDIS_MAX_POOL_SIZE 1024
#define DL_REDIS_MAX_TIMEOUT_MS 86400000ULL

#define DL_REDIS_DEFAULT_PORT 6379
#define DL_REDIS_DEFAULT_POOL_SIZE 4
#define DL_REDIS_DEFAULT_CMD_TIMEOUT_MS 5000
#define DL_REDIS_DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DL_REDIS_DEFAULT_MAX_OFFLINE 1000
#define DL_REDIS_DEFAULT_MAX_RETRIES 3
#define DL_REDIS_DEFAULT_RECONNECT_MAX_MS 500
#define DL_REDIS_DEFAULT_CLIENT_NAME "devloop-api"

/* Where and how to connect. Fill with dl_redis_config_init() or
 * dl_redis_config_from_env(), then override. Plain data: copied by the pool. */
typedef struct {
    char host[256];              /* name or address ("::1" without brackets) */
    int port;
    char password[256];          /* "" for none */
    char username[128];          /* "" for none: AUTH password; else AUTH user password */
    int db;                      /* SELECT on each connection unless 0 */
    int pool_size;               /* connections per worker (REDIS_POOL_SIZE) */
    uint64_t cmd_timeout_ms;     /* send to reply, queueing included (REDIS_COMMAND_TIMEOUT_MS) */
    uint64_t connect_timeout_ms; /* TCP connect plus the setup commands */
    size_t max_offline;          /* commands waiting while no connection is ready */
    int max_retries;             /* re-sends of a command whose connection dropped (see send) */
    char client_name[64];        /* CLIENT SETNAME; "" for none */
    int breaker_threshold;       /* consecutive timeouts that open the breaker; 0: never
                                  * (REDIS_BREAKER_THRESHOLD, default 5) */
    uint64_t breaker_cooldown_ms; /* open this long, then one PING probes (REDIS_BREAKER_COOLDOWN_MS) */
    uint64_t reconnect_max_ms;   /* cap of the reconnect backoff (REDIS_RECONNECT_MAX_MS) */
} dl_redis_config_t;

/** Fills *cfg with the defaults above (127.0.0.1:6379, db 0, no password). */
void dl_redis_config_init(dl_redis_config_t *cfg);

/**
 * Fills *cfg with the defaults, then from the environment: REDIS_URL (see
 * dl_redis_config_parse_url()) or else REDIS_HOST, REDIS_PORT, REDIS_USERNAME,
 * REDIS_PASSWORD, REDIS_DB; and REDIS_POOL_SIZE, REDIS_COMMAND_TIMEOUT_MS,
 * REDIS_CONNECT_TIMEOUT_MS, REDIS_BREAKER_THRESHOLD, REDIS_BREAKER_COOLDOWN_MS,
 * REDIS_RECONNECT_MAX_MS in both cases. Empty variables count as unset.
 * Returns 1 when Redis is configured (REDIS_URL, _HOST, _PORT, _PASSWORD or
 * _DB set), 0 when none is, DL_EINVAL with a message in err for a malformed
 * value. err may be NULL.
 */
int dl_redis_config_from_env(dl_redis_config_t *cfg, char *err, size_t errlen);

/**
 * Parses redis://[[user]:password@]host[:port][/db] into cfg's host, port
 * (default 6379), username, password and db (default 0); other fields are left
 * alone. User and password may be percent-encoded; "redis://secret@host"
 * (no colon) is a password; an IPv6 host is bracketed ("redis://[::1]:6380").
 * Returns 0, or DL_EINVAL with a message in err (which may be NULL) for
 * rediss:// ("TLS not supported"), another scheme, a missing host, a bad port
 * or db, a query string or a field too long for cfg.
 */
int dl_redis_config_parse_url(dl_redis_config_t *cfg, const char *url, char *err,
                              size_t errlen);

#endif
