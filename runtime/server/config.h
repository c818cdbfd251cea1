/*
 * config.h - the runtime's settings: one table of the numeric and on/off
 * environment variables (name, kind, default, range, dl_config_t field), the
 * one parser of their values, the checks start-up makes before anything is
 * opened, and dl_config_print() (`devloop config`), which shows the lot.
 */
#ifndef DL_CONFIG_H
#define DL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/internal.h"
#include "core/client_addr.h"

struct dl_tls_ctx_s;

/**
 * The value of a variable of the table in config.c, or its default when it
 * is unset or empty (or does not parse: dl_config_check() has stopped
 * start-up by then). A name not in the table is a bug: DL_ASSERT.
 */
uint64_t dl_env_u64(const char *name);

/** 1 when name is a variable of config.c's table (dl_env_u64 may be asked). */
int dl_env_known(const char *name);

/** Splits "host:port" / "[v6]:port" / ":port" / "port". Returns 0 or DL_EINVAL. */
int dl_parse_listen(const char *s, char *host, size_t hostlen, int *port);

/**
 * Everything start-up checks before it opens or binds anything: the
 * environment (cfg->env_error, then the variables only the runtime reads,
 * DEVLOOP_CANONICAL_HOST, the REDIS_* ones, DEVLOOP_DB_BUSY_TIMEOUT_MS, the
 * syntax of MONGO_URI) and cfg's own ranges. Returns 0, or DL_EINVAL with
 * the message (one line, newline-terminated) in err.
 */
int dl_config_check(const dl_config_t *cfg, char *err, size_t errlen);

/**
 * DEVLOOP_CANONICAL_HOST (which --canonical-host sets), checked: *host is
 * NULL when unset, else the value (borrowed from the environment) and *port
 * its port or -1. Returns 0 or DL_EINVAL with a message naming it in err.
 */
int dl_config_canonical_host(const char **host, int *port, char *err, size_t errlen);

/**
 * DEVLOOP_TRUSTED_PROXIES parsed into *out (n 0 when unset or blank).
 * Returns 0 or DL_EINVAL with a message naming it and the entry at fault in err.
 */
int dl_config_trusted_proxies(dl_proxy_list_t *out, char *err, size_t errlen);

/**
 * The TLS contexts of cfg's listeners (cfg->listen[i] with certificates)
 * into tls[i], or, with tls NULL, each made and freed again: a check that
 * opens nothing but the PEM files. *https_port: the first TLS listener's
 * port, 0 when none. Returns 0, or DL_EINVAL with a message naming the
 * listener and the file in err (tls[] keeps what was made: the caller frees).
 */
int dl_config_load_tls(const dl_config_t *cfg, struct dl_tls_ctx_s **tls, int *https_port,
                       char *err, size_t errlen);

#endif
