/*
 * rate_limit.c - the sliding window counter of rate_limit.h on the shared
 * dictionary: one atomic increment of the current window's counter, one
 * read of the previous window's, and the increment taken back when the
 * estimate passes the limit, so refused requests never count.
 */
#include "cache/rate_limit.h"

#include <math.h>
#include <string.h>

#include "common/internal.h"
#include "common/num.h"

#define BASE_MAX (DL_RATE_KEY_MAX - 32)

/* base followed by slot's digits into key; its length, or 0 when too long */
static size_t counter_name(char *key, const char *base, size_t blen, int64_t slot)
{
    if (blen == 0 || blen > BASE_MAX)
        return 0;
    memcpy(key, base, blen);
    return blen + dl_num_format_i64(slot, key + blen);
}

int dl_rate_count(dl_shdict_t *d, const char *base, size_t blen, double limit, uint32_t window_s,
                  double now_s, uint64_t mono_ms, dl_rate_result_t *out)
{
    char ck[DL_RATE_KEY_MAX], pk[DL_RATE_KEY_MAX];
    double w = (double)window_s;
    int64_t slot = (int64_t)floor(now_s / w);
    size_t cl = counter_name(ck, base, blen, slot), pl = counter_name(pk, base, blen, slot - 1);
    if (cl == 0 || pl == 0)
        return DL_EINVAL;
    double zero = 0, cur;
    /* both counters live two windows: the current one is read again as
     * the previous one throughout the next window */
    int rc = dl_shdict_incr(d, ck, cl, 1, &zero, (uint64_t)window_s * 2000u, mono_ms, &cur);
    if (rc != 0)
        return rc;
    dl_shdict_value_t v;
    dl_buf_t str = DL_BUF_INIT; /* a string someone stored there: not a count */
    double prev = 0;
    if (dl_shdict_get(d, pk, pl, mono_ms, &v, &str) == 0 && v.type == DL_SHV_NUMBER)
        prev = v.num;
    dl_buf_free(&str);
    out->slot = slot;
    out->covered = 1 - (now_s - (double)slot * w) / w;
    out->to_end = (double)(slot + 1) * w - now_s;
    out->prev = prev;
    out->est = prev * out->covered + cur;
    out->allowed = out->est <= limit;
    out->cur = cur;
    if (!out->allowed) {
        double back;
        dl_shdict_incr(d, ck, cl, -1, NULL, 0, mono_ms, &back);
        out->cur = cur - 1;
        out->est -= 1;
    }
    return 0;
}

void dl_rate_uncount(dl_shdict_t *d, const char *base, size_t blen, int64_t slot, uint64_t mono_ms)
{
    char ck[DL_RATE_KEY_MAX];
    size_t cl = counter_name(ck, base, blen, slot);
    double back;
    if (cl)
        dl_shdict_incr(d, ck, cl, -1, NULL, 0, mono_ms, &back);
}

uint32_t dl_rate_retry_after(double limit, uint32_t window_s, double cur, double prev,
                             double covered, double to_end)
{
    double w = (double)window_s, room = limit - 1, wait = -1;
    if (cur <= room) {
        /* within this window: prev * (covered - x / w) + cur <= room */
        double x = prev > 0 ? w * (covered - (room - cur) / prev) : 0;
        if (x <= to_end)
            wait = x > 0 ? x : 0;
    }
    if (wait < 0) {
        /* after its end: cur * (1 - y / w) <= room */
        double y = cur > 0 ? w * (1 - room / cur) : 0;
        wait = to_end + (y > 0 ? y : 0);
    }
    wait = ceil(wait);
    if (!(wait >= 1))
        return 1;
    return wait > 4e9 ? 4000000000u : (uint32_t)wait;
}
