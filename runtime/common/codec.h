/*
 * codec.h - what the JSON and MessagePack codecs share: the marker
 * metatables, which tables are arrays, the nesting and size limits, and the
 * frame of an encoder and of a decoder (their state, how a document is
 * started and finished, the per-table and per-key steps of the encoders).
 * The frame is for codec_json.c and codec_msgpack.c only; its per-table and
 * per-key steps are static inline because they sit on the encoders' hot
 * path, where a call per value would show.
 */
#ifndef DL_CODEC_H
#define DL_CODEC_H

#include <stddef.h>

#include <lua.h>

#include "common/buf.h"
#include "common/internal.h"

/* ---- markers, classification, limits --------------------------------- */

/* Registry keys of the marker metatables. A table whose metatable is
 * registry["devloop.array"] always encodes as an array, one with
 * registry["devloop.object"] as an object; both tables hold a field
 * __jsontype = "array" / "object". */
#define DL_CODEC_ARRAY_MT "devloop.array"
#define DL_CODEC_OBJECT_MT "devloop.object"

/* Nesting limits: encoders stop at DL_CODEC_ENCODE_DEPTH (which also ends
 * cycles), decoders at DL_CODEC_DECODE_DEPTH. Request bodies stop sooner, at
 * DL_CODEC_BODY_DEPTH: MongoDB's own document limit (and sqlite_store's), so
 * a body that decodes can be stored, and below the encoder's, so it can be
 * sent back even inside a few levels of a handler's own tables. */
#define DL_CODEC_ENCODE_DEPTH 128
#define DL_CODEC_DECODE_DEPTH 128 /* = the encoders': what decodes can be written back */
#define DL_CODEC_BODY_DEPTH 100

/** Bounds on what decoding untrusted input (a request body) may build. */
typedef struct {
    size_t max_elements; /* values built: the top one, array items and map values (map
                            keys are not counted); 0: no limit */
    int max_depth;       /* nested arrays and maps; 0: DL_CODEC_DECODE_DEPTH */
} dl_codec_limits_t;

/* Table kinds returned by dl_codec_classify_stream(). */
#define DL_CODEC_OBJECT 0
#define DL_CODEC_ARRAY 1
#define DL_CODEC_OBJECT_PAIR 2 /* dl_codec_classify_stream() only */

/**
 * Creates the two marker metatables in the registry if they are absent.
 * Idempotent; leaves the stack as it found it. Raises only on Lua OOM.
 */
void dl_json_init_markers(lua_State *L);

/**
 * Pushes registry["devloop.array"] then registry["devloop.object"], creating
 * them first if needed (2 slots; the caller has checked the stack).
 */
void dl_codec_push_markers(lua_State *L);

/**
 * Classifies the table at idx for encoders, which stream an object's pairs
 * without counting them first. The markers are on the stack at absolute
 * slots mt_array and mt_object (0 when absent):
 *   - metatable registry["devloop.array"]: array of lua_objlen(t) elements;
 *   - metatable registry["devloop.object"]: object;
 *   - otherwise an empty table is an object, a table whose keys are exactly
 *     1..n (n > 0) an array, anything else an object.
 * Returns
 *   - DL_CODEC_ARRAY with *n elements, nothing pushed;
 *   - DL_CODEC_OBJECT, nothing pushed: iterate from a nil key;
 *   - DL_CODEC_OBJECT_PAIR: an object whose first key and value lua_next has
 *     already pushed; continue the lua_next loop from them.
 * Needs 3 free stack slots.
 */
int dl_codec_classify_stream(lua_State *L, int idx, int mt_array, int mt_object, size_t *n);

/* ---- encoders --------------------------------------------------------- */

typedef struct {
    lua_State *L;
    dl_buf_t *out;
    int mt_array; /* stack slot of the marker, 0 when absent */
    int mt_object;
    char *err;
    size_t errlen;
} dl_codec_enc_t;

/** Formats the message into e->err and returns rc. */
int dl_codec_enc_fail(dl_codec_enc_t *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Fills e for encoding into out, makes *idx absolute and pushes the markers.
 * Returns the stack top to hand to dl_codec_enc_end(), or DL_ENOMEM (with a
 * message) when the Lua stack cannot grow.
 */
int dl_codec_enc_begin(dl_codec_enc_t *e, lua_State *L, int *idx, dl_buf_t *out, char *err,
                       size_t errlen);

/**
 * Restores the stack to base and turns rc, or an out-of-memory buffer, into
 * the encoder's result (DL_ENOMEM gets its message here).
 */
int dl_codec_enc_end(dl_codec_enc_t *e, int base, int rc);

/**
 * Opens the table at idx, one level deeper than its parent (depth counts
 * this table): checks the depth and the stack, then classifies it as
 * dl_codec_classify_stream() does. Returns the kind, or a negative DL_E*.
 */
static inline int dl_codec_enc_open_table(dl_codec_enc_t *e, int idx, int depth, size_t *n)
{
    if (depth > DL_CODEC_ENCODE_DEPTH)
        return dl_codec_enc_fail(e, DL_ECODEC, "nesting deeper than %d", DL_CODEC_ENCODE_DEPTH);
    if (!lua_checkstack(e->L, 4))
        return dl_codec_enc_fail(e, DL_ENOMEM, "out of Lua stack");
    return dl_codec_classify_stream(e->L, idx, e->mt_array, e->mt_object, n);
}

/**
 * A pair's key must be a string or a number (read with lua_tonumber, never
 * converted in place, which would break lua_next): the error for a key of
 * type kt, DL_ECODEC with its message.
 */
int dl_codec_enc_bad_key(dl_codec_enc_t *e, int kt);

/* ---- decoders --------------------------------------------------------- */

typedef struct {
    lua_State *L;
    int mt_array; /* stack slots of the markers */
    int mt_object;
    int max_depth;
    size_t elements_left; /* values still allowed; SIZE_MAX without a limit */
    size_t max_elements;
    char *err;
    size_t errlen;
} dl_codec_dec_t;

/** Formats the message into d->err and returns DL_ECODEC. */
int dl_codec_dec_fail(dl_codec_dec_t *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** The element budget is spent: DL_ETOOBIG, which callers answer with 413. */
int dl_codec_dec_too_many(dl_codec_dec_t *d);

/**
 * Fills d for a decode within lim (NULL: none but the default depth) and
 * pushes the markers. Returns the stack top to hand to dl_codec_dec_end(),
 * or DL_ECODEC (with a message) when the Lua stack cannot grow.
 */
int dl_codec_dec_begin(dl_codec_dec_t *d, lua_State *L, const dl_codec_limits_t *lim, char *err,
                       size_t errlen);

/**
 * Leaves the decoded value alone on the stack above base when rc is 0, or
 * nothing above base otherwise; returns rc.
 */
int dl_codec_dec_end(lua_State *L, int base, int rc);

#endif /* DL_CODEC_H */
