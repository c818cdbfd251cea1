/*
 * breaker.c - the circuit breaker of breaker.h: three states and the moves
 * between them, counted so that a caller can log and export each transition
 * once, never per call.
 */
#include "backend/breaker.h"

#include "common/internal.h"

#include <stddef.h>

static void move(dl_breaker_t *b, int to, uint64_t now)
{
    b->state = to;
    b->probing = 0;
    b->transitions++;
    if (to == DL_BREAKER_OPEN)
        b->opened_at = now;
    if (to == DL_BREAKER_CLOSED)
        b->consecutive = 0;
}

void dl_breaker_init(dl_breaker_t *b, int threshold, uint64_t cooldown_ms)
{
    b->state = DL_BREAKER_CLOSED;
    b->threshold = threshold < 0 ? DL_BREAKER_DEFAULT_THRESHOLD : threshold;
    b->cooldown_ms = cooldown_ms;
    b->consecutive = 0;
    b->probing = 0;
    b->opened_at = 0;
    b->transitions = 0;
}

int dl_breaker_allow(dl_breaker_t *b, uint64_t now, int *moved)
{
    if (moved != NULL)
        *moved = 0;
    switch (b->state) {
    case DL_BREAKER_CLOSED:
        return 1;
    case DL_BREAKER_OPEN:
        if (now - b->opened_at < b->cooldown_ms)
            return 0;
        move(b, DL_BREAKER_HALF_OPEN, now);
        if (moved != NULL)
            *moved = 1;
        b->probing = 1;
        return 2;
    default:
        if (b->probing)
            return 0;
        b->probing = 1;
        return 2;
    }
}

int dl_breaker_success(dl_breaker_t *b)
{
    b->consecutive = 0;
    if (b->state != DL_BREAKER_HALF_OPEN)
        return 0;
    move(b, DL_BREAKER_CLOSED, 0);
    return 1;
}

int dl_breaker_timeout(dl_breaker_t *b, uint64_t now)
{
    if (b->consecutive < 1 << 30)
        b->consecutive++;
    if (b->state == DL_BREAKER_HALF_OPEN) {
        move(b, DL_BREAKER_OPEN, now);
        return 1;
    }
    if (b->state == DL_BREAKER_CLOSED && b->threshold > 0 && b->consecutive >= b->threshold) {
        move(b, DL_BREAKER_OPEN, now);
        return 1;
    }
    return 0;
}

int dl_breaker_probe_failed(dl_breaker_t *b, uint64_t now)
{
    if (b->state != DL_BREAKER_HALF_OPEN)
        return 0;
    move(b, DL_BREAKER_OPEN, now);
    return 1;
}

int dl_breaker_reset(dl_breaker_t *b)
{
    b->consecutive = 0;
    if (b->state == DL_BREAKER_CLOSED)
        return 0;
    move(b, DL_BREAKER_CLOSED, 0);
    return 1;
}

DL_TEST_HOOK uint64_t dl_breaker_remaining(const dl_breaker_t *b, uint64_t now)
{
    if (b->state != DL_BREAKER_OPEN || now - b->opened_at >= b->cooldown_ms)
        return 0;
    return b->cooldown_ms - (now - b->opened_at);
}

const char *dl_breaker_state_name(int state)
{
    switch (state) {
    case DL_BREAKER_CLOSED:
        return "closed";
    case DL_BREAKER_HALF_OPEN:
        return "half_open";
    default:
        return "open";
    }
}
