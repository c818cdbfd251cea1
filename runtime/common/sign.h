/*
 * sign.h - keyed hashes that tamper-check values the runtime hands out and
 * gets back (pagination cursors). SipHash-2-4 with a process key taken from
 * DEVLOOP_SECRET (so cursors survive restarts and agree across processes) or
 * random bytes when it is unset.
 */
#ifndef DL_SIGN_H
#define DL_SIGN_H

#include <stddef.h>
#include <stdint.h>

/** SipHash-2-4 of data under a 16-byte key. */
uint64_t dl_siphash(const uint8_t key[16], const void *data, size_t len);

/** 128-bit signature of s as 32 lowercase hex digits plus NUL; any thread. */
void dl_runtime_sign(const char *s, size_t n, char out[33]);

#endif
