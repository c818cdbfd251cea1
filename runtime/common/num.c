/*
 * num.c - number formatting shared by the JSON and msgpack codecs and the
 * metrics exposition (see num.h).
 */
#include "common/num.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

size_t dl_num_format_i64(int64_t v, char *p)
{
    char tmp[24];
    char *q = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        q -= 2;
        memcpy(q, digit_pairs + 2 * r, 2);
    }
    if (u >= 10) {
        q -= 2;
        memcpy(q, digit_pairs + 2 * u, 2);
    } else {
        *--q = (char)('0' + u);
    }
    if (v < 0)
        *--q = '-';
    size_t n = (size_t)(tmp + sizeof(tmp) - q);
    memcpy(p, q, n);
    return n;
}

size_t dl_num_format_double(double d, char *p)
{
    if (d > -9007199254740992.0 && d < 9007199254740992.0) {
        int64_t i = (int64_t)d;
        if ((double)i == d)
            return dl_num_format_i64(i, p);
    }
    if (isnan(d) || isinf(d))
        return 0;
    /* Shortest precision that reads back to the same double. */
    for (int prec = 14; prec < 17; prec++) {
        int len = snprintf(p, DL_NUM_ROOM, "%.*g", prec, d);
        if (strtod(p, NULL) == d)
            return (size_t)len;
    }
    return (size_t)snprintf(p, DL_NUM_ROOM, "%.17g", d);
}
