/*
 * codec_json.h - JSON between Lua values and text. The markers, the table
 * classification and the limits it shares with codec_msgpack are in
 * codec.h, included here for the callers that use them with JSON.
 */
#ifndef DL_CODEC_JSON_H
#define DL_CODEC_JSON_H

#include <stddef.h>

#include <lua.h>

#include "common/buf.h"
#include "common/codec.h" /* markers, classification, dl_codec_limits_t */
#include "common/json_str.h" /* dl_json_put_string(), shared with every JSON writer */

/**
 * Appends compact JSON for the value at idx to out. nil and the null sentinel
 * (lightuserdata NULL) become null; tables follow dl_codec_classify_stream();
 * object keys must be strings or numbers (numbers become string keys);
 * strings are written by dl_json_put_string(), so ill-formed UTF-8 in them
 * comes out as U+FFFD. Returns 0, or DL_ECODEC / DL_ENOMEM with a message in err (which may be
 * NULL). On error out may hold a partial document: truncate it to its old
 * length. Leaves the stack unchanged; needs no free slots from the caller.
 */
int dl_json_encode(lua_State *L, int idx, dl_buf_t *out, char *err, size_t errlen);

/**
 * Decodes exactly one JSON text (RFC 8259) of len bytes (no NUL needed) and
 * pushes it. null becomes the null sentinel, arrays get the "devloop.array"
 * metatable, empty objects the "devloop.object" one, other objects none;
 * duplicate keys: the last wins. Returns 0 with one value pushed, or
 * DL_ECODEC / DL_ENOMEM with nothing pushed and a message in err mentioning
 * the 0-based byte offset, e.g. "unexpected character 'x' at byte 12".
 * Strings are not checked for valid UTF-8 (the encoder repairs them on the way
 * out). Nesting is limited to DL_CODEC_DECODE_DEPTH. Raises only on Lua OOM.
 */
int dl_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

/**
 * dl_json_decode() within lim (NULL: none but the default depth). Building
 * more than lim->max_elements values fails with DL_ETOOBIG and "more than N
 * elements" in err, as soon as the count is passed, so a hostile body costs
 * at most that many values; deeper nesting than lim->max_depth is DL_ECODEC.
 */
int dl_json_decode_limited(lua_State *L, const char *s, size_t len, const dl_codec_limits_t *lim,
                           char *err, size_t errlen);

#endif /* DL_CODEC_JSON_H */
