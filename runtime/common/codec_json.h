/*
 * codec_json.h - JSON between Lua values and text, plus the table
 * classification shared with codec_msgpack (which tables are arrays).
 */
#ifndef DL_CODEC_JSON_H
#define DL_CODEC_JSON_H

#include <stddef.h>

#include <lua.h>

#include "common/buf.h"
#include "common/json_str.h" /* dl_json_put_string(), shared with every JSON writer */

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

/* Table kinds returned by dl_codec_table_kind() and friends. */
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
 * Classifies the table at idx. Returns DL_CODEC_ARRAY with *n = element count
 * (t[1..*n] is encoded), or DL_CODEC_OBJECT with *n = number of pairs.
 *   - metatable registry["devloop.array"]: array of lua_objlen(t) elements;
 *   - metatable registry["devloop.object"]: object;
 *   - otherwise an empty table is an object, a table whose keys are exactly
 *     1..n (n > 0) an array, anything else an object.
 * Looks the markers up in the registry; needs 3 free stack slots and leaves
 * the stack unchanged.
 */
int dl_codec_table_kind(lua_State *L, int idx, size_t *n);

/**
 * The same with the markers already on the stack at absolute slots mt_array
 * and mt_object (0 when absent). With want_count == 0, *n is left undefined
 * for objects, which lets the scan stop at the first non-index key.
 */
int dl_codec_classify(lua_State *L, int idx, int mt_array, int mt_object, int want_count,
                      size_t *n);

/**
 * The classification for encoders that stream an object's pairs without
 * counting them first (the markers as for dl_codec_classify()). Returns
 *   - DL_CODEC_ARRAY with *n elements, nothing pushed;
 *   - DL_CODEC_OBJECT, nothing pushed: iterate from a nil key;
 *   - DL_CODEC_OBJECT_PAIR: an object whose first key and value lua_next has
 *     already pushed; continue the lua_next loop from them.
 * Needs 3 free stack slots.
 */
int dl_codec_classify_stream(lua_State *L, int idx, int mt_array, int mt_object, size_t *n);

/**
 * Appends compact JSON for the value at idx to out. nil and the null sentinel
 * (lightuserdata NULL) become null; tables follow dl_codec_table_kind();
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
