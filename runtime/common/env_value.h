/*
 * env_value.h - the one parser of environment values: whole numbers, sizes
 * with units, durations with units and on/off words, each in a range. Every
 * module that reads a numeric variable goes through it (config.c's table,
 * the Redis pool, the SQLite store), so one variable never accepts `10s`
 * while another refuses it.
 */
#ifndef DL_ENV_VALUE_H
#define DL_ENV_VALUE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DL_ENV_COUNT, /* a whole number */
    DL_ENV_SIZE,  /* bytes: 512k, 2MB, 1GiB; bare: bytes */
    DL_ENV_MS,    /* milliseconds: 500ms, 10s, 2m, 1h; bare: ms */
    DL_ENV_S,     /* seconds: 10s, 2m, 1h; bare: s */
    DL_ENV_BOOL   /* 1/0, true/false, on/off, yes/no */
} dl_env_kind_t;

/**
 * The value of the variable name, read as kind, in *out: def when it is unset
 * or empty. A value that does not parse or is outside min..max is DL_EINVAL
 * with "NAME=value: expected ... from min to max" in err (when err is not
 * NULL), and *out is def.
 */
int dl_env_value(const char *name, dl_env_kind_t kind, uint64_t def, uint64_t min, uint64_t max,
                 uint64_t *out, char *err, size_t errlen);

#endif
