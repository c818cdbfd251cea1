/*
 * env_value.c - the one parser of environment values (env_value.h). Strict:
 * digits then an optional unit, nothing else (no sign, spaces, hex or
 * exponent), and no overflow; a typo in an on/off word is an error too, so
 * it cannot silently leave a feature on or off.
 */
#include "common/env_value.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "common/internal.h"

/* The multiplier of a unit suffix for kind, or 0 when it is not one. */
static uint64_t unit_of(dl_env_kind_t kind, const char *u)
{
    static const struct { const char *name; uint64_t mult; } sizes[] = {
        {"", 1}, {"b", 1}, {"k", 1024}, {"kb", 1024}, {"kib", 1024}, {"m", 1024 * 1024},
        {"mb", 1024 * 1024}, {"mib", 1024 * 1024}, {"g", 1024 * 1024 * 1024},
        {"gb", 1024 * 1024 * 1024}, {"gib", 1024 * 1024 * 1024},
    };
    if (kind == DL_ENV_COUNT)
        return u[0] == '\0';
    if (kind == DL_ENV_SIZE) {
        for (size_t i = 0; i < DL_ARRAY_SIZE(sizes); i++)
            if (strcasecmp(u, sizes[i].name) == 0)
                return sizes[i].mult;
        return 0;
    }
    /* durations, in the variable's unit: ms or s */
    uint64_t ms = strcasecmp(u, "ms") == 0   ? 1
                  : strcasecmp(u, "s") == 0  ? 1000
                  : strcasecmp(u, "m") == 0  ? 60000
                  : strcasecmp(u, "h") == 0  ? 3600000
                  : u[0] == '\0'             ? (kind == DL_ENV_MS ? 1 : 1000)
                                             : 0;
    if (kind == DL_ENV_S)
        return ms != 0 && ms % 1000 == 0 ? ms / 1000 : 0;
    return ms;
}

int dl_env_value(const char *name, dl_env_kind_t kind, uint64_t def, uint64_t min, uint64_t max,
                 uint64_t *out, char *err, size_t errlen)
{
    static const char *const what[] = {"a whole number", "a size (bytes, or 512k, 2MB, 1GiB)",
                                       "a duration (ms, or 500ms, 10s, 2m)",
                                       "a duration (seconds, or 10s, 2m, 1h)"};
    const char *s = getenv(name);
    *out = def;
    if (s == NULL || *s == '\0')
        return 0;
    if (kind == DL_ENV_BOOL) {
        /* a typo must not silently leave a feature on or off */
        static const char *const yes[] = {"1", "true", "on", "yes"},
                                 *const no[] = {"0", "false", "off", "no"};
        for (int i = 0; i < 4; i++)
            if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
                *out = strcasecmp(s, yes[i]) == 0;
                return 0;
            }
        if (err != NULL)
            snprintf(err, errlen, "%s=%s: expected 1/0, true/false, on/off or yes/no", name,
                     s);
        return DL_EINVAL;
    }
    const char *p = s;
    uint64_t n = 0;
    int ok = *p >= '0' && *p <= '9';
    while (ok && *p >= '0' && *p <= '9') {
        if (n > (UINT64_MAX - 9) / 10)
            ok = 0;
        else
            n = n * 10 + (uint64_t)(*p++ - '0');
    }
    uint64_t mult = ok ? unit_of(kind, p) : 0;
    if (mult == 0 || (n != 0 && mult > UINT64_MAX / n) || n * mult < min ||
        n * mult > max) {
        if (err != NULL)
            snprintf(err, errlen, "%s=%s: expected %s from %llu to %llu", name, s,
                     what[kind], (unsigned long long)min, (unsigned long long)max);
        return DL_EINVAL;
    }
    *out = n * mult;
    return 0;
}

