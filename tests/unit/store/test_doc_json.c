/*
 * test_doc_json.c - the store's JSON document tree (runtime/store/doc_json.c):
 * \u escapes decode through the shared reader (common/json_str.c), and a lone
 * surrogate stays an error in the store.
 */
#include <string.h>

#include "common/buf.h"
#include "common/internal.h"
#include "store/doc_json.h"
#include "unit.h"

/* The decoded string of JSON text s, or NULL with the message in err. */
static const dl_doc_t *str_of(dl_doc_arena_t *a, const char *s, char *err, size_t errlen)
{
    err[0] = '\0';
    return dl_doc_parse(a, s, NULL, "t", err, errlen);
}

DL_TEST(doc_json_u_escapes)
{
    dl_doc_arena_t a = {NULL};
    char err[128];
    const dl_doc_t *v = str_of(&a, "\"a\\u00e9\\u20ac\\ud83d\\ude00\\u0041z\"", err, sizeof(err));
    EXPECT(v != NULL);
    EXPECT_EQ(v->type, DL_DOC_STR);
    EXPECT_MEM(v->s, v->len, "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "Az", (size_t)12);
    v = str_of(&a, "{\"k\\u0000\":\"\\u0000\"}", err, sizeof(err));
    EXPECT(v != NULL);
    EXPECT_MEM(v->keys[0], v->klens[0], "k\0", (size_t)2);
    EXPECT_MEM(v->items[0]->s, v->items[0]->len, "\0", (size_t)1);
    dl_doc_arena_free(&a);
}

DL_TEST(doc_json_u_escape_errors)
{
    static const struct {
        const char *in, *err;
    } cases[] = {
        {"\"\\ud83d\"", "t: malformed JSON (lone surrogate at offset 0)"},
        {"\"\\ude00\"", "t: malformed JSON (lone surrogate at offset 0)"},
        {"\"\\ud83dx\"", "t: malformed JSON (lone surrogate at offset 0)"},
        {"\"\\ud83d\\u0041\"", "t: malformed JSON (lone surrogate at offset 0)"},
        {"\"\\ud83d\\ud83d\"", "t: malformed JSON (lone surrogate at offset 0)"},
        {"[1,\"\\ud83d\\u12\"]", "t: malformed JSON (lone surrogate at offset 3)"},
        {"\"\\u12\"", "t: malformed JSON (bad \\u escape at offset 0)"},
        {"\"\\u12g4\"", "t: malformed JSON (bad \\u escape at offset 0)"},
    };
    for (size_t k = 0; k < DL_ARRAY_SIZE(cases); k++) {
        dl_doc_arena_t a = {NULL};
        char err[128];
        EXPECT(str_of(&a, cases[k].in, err, sizeof(err)) == NULL);
        EXPECT_STR(err, cases[k].err);
        dl_doc_arena_free(&a);
    }
}
