/*
 * breaker.h - a circuit breaker for a backend that accepts work but does not
 * answer in time. Closed: calls go through; after `threshold` consecutive
 * timeouts it opens. Open: calls fail fast for `cooldown_ms`. Half-open: one
 * probe goes through; its answer closes the breaker, its failure opens it for
 * another cool-down. Plain data and logic: the caller passes the time and
 * acts on the transitions it is told about (log once, update metrics, send
 * the probe). Not thread-safe; one owner.
 */
#ifndef DL_BREAKER_H
#define DL_BREAKER_H

#include <stdint.h>

enum { DL_BREAKER_CLOSED = 0, DL_BREAKER_HALF_OPEN = 1, DL_BREAKER_OPEN = 2 };

#define DL_BREAKER_DEFAULT_THRESHOLD 5
#define DL_BREAKER_DEFAULT_COOLDOWN_MS 500

typedef struct {
    int state;
    int threshold;        /* consecutive timeouts that open it; 0: never opens */
    uint64_t cooldown_ms; /* open this long before the probe */
    int consecutive;      /* timeouts since the last answer */
    int probing;          /* half-open: the probe is out */
    uint64_t opened_at;   /* time of the last move to open */
    uint64_t transitions; /* moves between states, all kinds */
} dl_breaker_t;

/** A closed breaker. threshold < 0 counts as the default, 0 disables it. */
void dl_breaker_init(dl_breaker_t *b, int threshold, uint64_t cooldown_ms);

/**
 * May a call go out now? 1: yes (closed); 2: yes, as the half-open probe
 * (an open breaker whose cool-down is over moves to half-open here); 0: no,
 * fail fast. *moved (may be NULL) is set to 1 when the state changed.
 */
int dl_breaker_allow(dl_breaker_t *b, uint64_t now, int *moved);

/** An answer came: resets the count; a half-open breaker closes. Returns 1
 * when the state changed. */
int dl_breaker_success(dl_breaker_t *b);

/** A timeout: counts it; opens the breaker at the threshold, or again when it
 * was the half-open probe. Returns 1 when the state changed. */
int dl_breaker_timeout(dl_breaker_t *b, uint64_t now);

/** The probe failed without a timeout (its connection was lost): half-open
 * goes back to open for another cool-down. Returns 1 when the state changed. */
int dl_breaker_probe_failed(dl_breaker_t *b, uint64_t now);

/** Other evidence that the server answers in time (a fresh connection logged
 * in within the command timeout): an open or half-open breaker closes.
 * Returns 1 when the state changed. */
int dl_breaker_reset(dl_breaker_t *b);

/** Milliseconds left in the cool-down (0 unless open). */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
uint64_t dl_breaker_remaining(const dl_breaker_t *b, uint64_t now);
#endif

/** "closed", "half_open", "open". */
const char *dl_breaker_state_name(int state);

#endif /* DL_BREAKER_H */
