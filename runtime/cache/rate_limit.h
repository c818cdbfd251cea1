/*
 * rate_limit.h - the sliding window counter behind api.rate_limit's local
 * store: two counters per key in the shared dictionary (shared_dict.h), the
 * current fixed window's and the previous one's, and the estimate
 *     previous * (the part of it the sliding window still covers) + current.
 * One atomic increment per request; a refused request is taken back at
 * once. The app-wide limit counts here from C (lua_dispatch.c), a limit
 * with a key function or a route's through api.shared's binding; both share
 * these counters' names, "<base><window number>". Why a sliding window:
 * docs/middleware.md.
 */
#ifndef DL_RATE_LIMIT_H
#define DL_RATE_LIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "cache/shared_dict.h"

#define DL_RATE_KEY_MAX 512 /* a counter's name: base (at most 480 bytes) and window number */

/** One request counted (or not) against limit per window_s seconds. */
typedef struct {
    int allowed;
    double est;       /* the estimate with this request (refused: without it) */
    double to_end;    /* seconds to the current window's end */
    double cur, prev; /* the two counts, this request excluded when refused */
    double covered;   /* the part of the previous window still covered, 0..1 */
    int64_t slot;     /* the current window's number */
} dl_rate_result_t;

/**
 * Counts a request under base (for example "rl:default:10.0.0.7:") at
 * now_s (Unix seconds: every worker and process agrees on windows) with the
 * dictionary's clock at mono_ms. The counters live two windows.
 * Returns 0 with *out filled, or a dictionary error (DL_ENOMEM, DL_ETOOBIG,
 * DL_EINVAL for a base over 480 bytes or a counter that is not a number).
 */
int dl_rate_count(dl_shdict_t *d, const char *base, size_t blen, double limit, uint32_t window_s,
                  double now_s, uint64_t mono_ms, dl_rate_result_t *out);

/** Takes back one count of window slot under base (a later limit refused). */
void dl_rate_uncount(dl_shdict_t *d, const char *base, size_t blen, int64_t slot,
                     uint64_t mono_ms);

/**
 * Seconds (at least 1) until one more request fits, from a refusal's
 * counts: the previous window's weight falls as the window slides, and the
 * current count becomes the previous one at the window's end.
 */
uint32_t dl_rate_retry_after(double limit, uint32_t window_s, double cur, double prev,
                             double covered, double to_end);

#endif /* DL_RATE_LIMIT_H */
