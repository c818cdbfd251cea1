/*
 * num.h - the one number formatter: every JSON text the runtime writes (the
 * codecs, /metrics, log fields) spells its numbers here, so one double reads
 * the same everywhere.
 */
#ifndef DL_NUM_H
#define DL_NUM_H

#include <stddef.h>
#include <stdint.h>

/** Room a formatted number needs, the terminating NUL included. */
#define DL_NUM_ROOM 32

/**
 * Writes v in decimal at p and returns its length: at most 20 bytes, and
 * nothing past them (no NUL). Async-signal-safe (log.c numbers its files from a crash
 * handler).
 */
size_t dl_num_format_i64(int64_t v, char *p);

/**
 * Writes a finite d at p (DL_NUM_ROOM bytes): integral values with
 * |d| < 2^53 as integers (-0 as "0"), others with the first of
 * %.14g..%.17g that reads back equal (so 0.1 is "0.1", 1e21 is "1e+21" and
 * 5e-324 is "4.9406564584125e-324"). Returns the length, or 0 and writes
 * nothing for NaN or an infinity: each caller has its own spelling for those
 * (an error in the codecs, NaN/+Inf/-Inf in /metrics, null in documents).
 */
size_t dl_num_format_double(double d, char *p);

#endif /* DL_NUM_H */
