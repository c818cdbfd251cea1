/*
 * test_response.c - pieces of runtime/core/response.c that protocols share:
 * walking a handler's own header lines.
 */
#include <string.h>

#include "core/response.h"
#include "unit.h"

DL_TEST(core_response_header_lines)
{
    /* trimmed values, a line without a colon or a name skipped, a last line
     * without CRLF, an empty value */
    const char lines[] = "X-A:  one \r\nno colon here\r\n: nameless\r\nX-B:\ttwo\t\r\nX-C:\r\nX-D: last";
    dl_hdr_lines_t it;
    const char *n, *v;
    size_t nl, vl;
    const char *want[][2] = {{"X-A", "one"}, {"X-B", "two"}, {"X-C", ""}, {"X-D", "last"}};
    dl_hdr_lines_init(&it, lines, sizeof(lines) - 1);
    for (size_t i = 0; i < 4; i++) {
        EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 1);
        EXPECT_EQ(nl, strlen(want[i][0]));
        EXPECT(memcmp(n, want[i][0], nl) == 0);
        EXPECT_EQ(vl, strlen(want[i][1]));
        EXPECT(memcmp(v, want[i][1], vl) == 0);
    }
    EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 0);
    EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 0);
    /* no lines at all */
    dl_hdr_lines_init(&it, NULL, 0);
    EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 0);
}
