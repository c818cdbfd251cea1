/*
 * fuzz_cursor.c - libFuzzer harness for the pagination cursors of
 * scripts/devloop/db.lua (read_cursor behind Collection:cursor_page), run in
 * the runtime's own Lua VM (dl_vm_new, the embedded scripts) with the
 * collection's find replaced by a stub that records the query it is given.
 *
 * The first input byte's bit 0 chooses what the rest is: 0, a cursor as a
 * client sends it (it must be refused unless it happens to be signed); 1, the
 * cursor's JSON body, which the harness signs the way the runtime does, so
 * the fuzzer reaches the decoding behind the signature check. Bit 1 picks the
 * listing's sort field (created_at or name). Invariants: cursor_page never
 * raises; a refusal is nil, one of read_cursor's messages and "EBADCURSOR";
 * an accepted cursor gives find a query that JSON can encode.
 *
 * The Lua code is not compiled with coverage instrumentation, so a line hook
 * feeds (previous line, line) pairs to libFuzzer as extra counters: the
 * fuzzer then sees which Lua branches an input reached.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>

#include "devloop.h"
#include "fuzz.h"
#include "common/internal.h"
#include "lua/lua_vm.h"
#include "server/worker.h"

#define LUA_COV_SIZE 4096
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[LUA_COV_SIZE];
static uintptr_t prev_loc;

static void on_line(lua_State *L, lua_Debug *ar)
{
    if (lua_getinfo(L, "S", ar) == 0)
        return;
    uintptr_t loc = ((uintptr_t)ar->source * 31u) ^ ((uintptr_t)ar->currentline * 2654435761u);
    uintptr_t edge = (loc ^ (prev_loc >> 1)) % LUA_COV_SIZE;
    if (lua_cov[edge] < 255)
        lua_cov[edge]++;
    prev_loc = loc;
}

static const char harness_lua[] =
    "local db = require 'devloop.db'\n"
    "local codec = require 'devloop.codec'\n"
    "local crypto = require 'devloop.crypto'\n"
    "local core = require 'devloop.db_core'\n"
    "local coll = db.collection('fuzz')\n"
    "local seen\n"
    "coll.find = function(self, q, opts) seen = q; return codec.array({}) end\n"
    "return function(input, signed, field)\n"
    "  local cursor = input\n"
    "  if signed then cursor = crypto.hex(input) .. '.' .. core.sign(input) end\n"
    "  seen = nil\n"
    "  local page, err, code = coll:cursor_page(nil, { cursor = cursor, field = field })\n"
    "  if page == nil then\n"
    "    assert(type(err) == 'string', 'a refused cursor gives a ' .. type(err) .. ' message')\n"
    "    assert(err == 'malformed cursor' or err == 'tampered cursor' or\n"
    "           err == 'cursor does not fit this listing' or err:find('^cursor has no '),\n"
    "           'a cursor refused with: ' .. err)\n"
    "    assert(code == 'EBADCURSOR', 'a refused cursor gives code ' .. tostring(code))\n"
    "    assert(seen == nil, 'a refused cursor still queried')\n"
    "    return 'refused'\n"
    "  end\n"
    "  assert(type(seen) == 'table', 'find got no query')\n"
    "  local text, jerr = codec.json_encode(seen)\n"
    "  assert(text, 'the query does not encode: ' .. tostring(jerr))\n"
    "  if input == '' then return 'first page' end\n"
    "  assert(signed, 'an unsigned cursor was accepted')\n"
    "  return 'accepted'\n"
    "end\n";

static dl_vm_t *vm;
static int fn_ref;

/* The VM goes at exit: what it holds outside LuaJIT's own heap (the private
 * api.shared dictionary of a VM without a server) is otherwise reported as
 * leaked, LeakSanitizer not seeing LuaJIT's memory. */
static void free_vm(void)
{
    dl_vm_free(vm);
    vm = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("DEVLOOP_SECRET", "fuzz-cursor-secret", 1); /* the same signatures every run */
    static dl_config_t cfg;
    dl_config_init(&cfg);
    static dl_lua_host_t host; /* a check-only VM's: the settings table, no loop */
    dl_worker_host_base(&host);
    host.cfg = &cfg;
    vm = dl_vm_new(&host);
    if (vm == NULL)
        abort();
    atexit(free_vm);
    lua_State *L = vm->L;
    /* line hooks do not run in compiled traces */
    if (luaL_dostring(L, "if jit then jit.off() end") != 0 ||
        luaL_loadbuffer(L, harness_lua, sizeof(harness_lua) - 1, "=fuzz_cursor") != 0 ||
        lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "fuzz_cursor: %s\n", lua_tostring(L, -1));
        abort();
    }
    fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, on_line, LUA_MASKLINE, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    lua_State *L = vm->L;
    int signed_ = data[0] & 1;
    const char *field = (data[0] & 2) ? "name" : NULL;
    prev_loc = 0;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    lua_pushboolean(L, signed_);
    if (field)
        lua_pushstring(L, field);
    else
        lua_pushnil(L);
    int rc = lua_pcall(L, 3, 1, 0);
    DL_FUZZ_CHECK(rc == 0, "cursor_page raised or broke an invariant: %s", lua_tostring(L, -1));
    lua_settop(L, 0);
    return 0;
}
