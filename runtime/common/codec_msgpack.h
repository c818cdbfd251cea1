/*
 * codec_msgpack.h - MessagePack between Lua values and bytes, with the same
 * table rules and markers as codec_json.h (both in codec.h).
 */
#ifndef DL_CODEC_MSGPACK_H
#define DL_CODEC_MSGPACK_H

#include <stddef.h>

#include <lua.h>

#include "common/buf.h"
#include "common/codec.h" /* dl_codec_limits_t */

/**
 * Appends the MessagePack form of the value at idx to out. nil and the null
 * sentinel become nil; integral numbers in [-2^63, 2^63) the smallest int
 * form, other numbers (NaN and Inf included) float64; strings str; tables
 * follow dl_codec_classify_stream() (array or map). Map keys must be strings or
 * numbers: integral ones stay ints, others become str as JSON prints them.
 * Depth limit 128. Returns 0, or DL_ECODEC / DL_ENOMEM with a message in err
 * (which may be NULL); on error out may hold a partial document. Leaves the
 * stack unchanged.
 */
int dl_msgpack_encode(lua_State *L, int idx, dl_buf_t *out, char *err, size_t errlen);

/**
 * Decodes exactly one MessagePack object of len bytes and pushes it. nil
 * becomes the null sentinel, str and bin Lua strings, arrays get the
 * "devloop.array" metatable and empty maps the "devloop.object" one; map keys
 * must be str or int (the last duplicate wins); ext types, the reserved byte
 * 0xc1, trailing or missing bytes and nesting deeper than 256 are errors.
 * Returns 0 with one value pushed, or DL_ECODEC with nothing pushed and a
 * message in err ("truncated input", "trailing bytes at byte 9", ...).
 * Raises only on Lua OOM.
 */
int dl_msgpack_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

/**
 * dl_msgpack_decode() within lim (NULL: none but the default depth), as
 * dl_json_decode_limited() does: DL_ETOOBIG with "more than N elements" in
 * err, checked against each array and map header before its elements are
 * built; deeper nesting than lim->max_depth is DL_ECODEC.
 */
int dl_msgpack_decode_limited(lua_State *L, const char *s, size_t len,
                              const dl_codec_limits_t *lim, char *err, size_t errlen);

#endif /* DL_CODEC_MSGPACK_H */
