/*
 * lua_vm.c - one LuaJIT state per worker.
 *
 * Loads an app folder into a generation (its routes in a router), turns each
 * request into a task (a coroutine running the route's handler), resumes
 * tasks when their I/O completes and turns a handler's return values into a
 * response. One function resumes, dl_task_resume(), and it handles yield,
 * return and error in one place (OpenResty's ngx_http_lua_run_thread).
 */
#include "lua/lua_vm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "core/request.h"
#include "lua/embedded.h"
#include "lua/lua_error.h"
#include "common/internal.h"
#include "core/upload.h"

#define CO_POOL_MAX 256

char dl__gzip_body_marker;
char dl__file_body_marker;
static char vm_key;   /* registry: lightuserdata(&vm_key) -> lightuserdata(vm) */
static char req_key;  /* request table: lightuserdata(&req_key) -> lightuserdata(req) */

dl_vm_t *dl_vm_of(lua_State *L)
{
    lua_pushlightuserdata(L, &vm_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    dl_vm_t *vm = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return vm;
}

const dl_lua_host_t *dl_lua_host(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    return vm && vm->host && vm->host->loop ? vm->host : NULL;
}

/* ======================================================= module loading */

/* package.preload loader for the embedded Lua library (or DEVLOOP_SCRIPTS_DIR). */
static int load_embedded(lua_State *L)
{
    const dl_embedded_t *e = lua_touserdata(L, lua_upvalueindex(1));
    const char *dir = getenv("DEVLOOP_SCRIPTS_DIR");
    if (dir && *dir) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->file);
        if (luaL_loadfile(L, path) != 0)
            return lua_error(L);
    } else {
        char name[256];
        snprintf(name, sizeof(name), "=[devloop]/%s", e->file);
        if (luaL_loadbuffer(L, e->data, e->len, name) != 0)
            return lua_error(L);
    }
    lua_pushstring(L, e->module);
    lua_call(L, 1, 1);
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

extern int luaopen_cjson(lua_State *L);

/* __newindex of a module's environment: modules may not create globals. */
static int env_newindex(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    luaL_where(L, 1);
    lua_pushfstring(L, "assignment to undeclared global '%s' (declare it local)",
                    k ? k : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

dl_vm_t *dl_vm_new(const dl_lua_host_t *host, const dl_config_t *cfg)
{
    dl_vm_t *vm = dl_calloc(1, sizeof(*vm));
    if (vm == NULL)
        return NULL;
    vm->host = host;
    vm->cfg = cfg;
    vm->co_pool = dl_calloc(CO_POOL_MAX, sizeof(lua_State *));
    vm->co_pool_refs = dl_calloc(CO_POOL_MAX, sizeof(int));
    lua_State *L = vm->L = luaL_newstate();
    if (L == NULL || vm->co_pool == NULL || vm->co_pool_refs == NULL) {
        if (L)
            lua_close(L);
        dl_free(vm->co_pool);
        dl_free(vm->co_pool_refs);
        dl_free(vm);
        return NULL;
    }
    luaL_openlibs(L);
    lua_pushlightuserdata(L, &vm_key);
    lua_pushlightuserdata(L, vm);
    lua_rawset(L, LUA_REGISTRYINDEX);
    dl_json_init_markers(L);

    preload(L, "cjson", luaopen_cjson);
    for (const dl_lua_module_t *m = host ? host->modules : NULL; m && m->name; m++)
        preload(L, m->name, m->open); /* the devloop.* bindings, by the host's table */
    if (host && host->preload)
        host->preload(L); /* the embedder's (dl_add_lua_module) */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (const dl_embedded_t *e = dl_embedded_scripts; e->module; e++) {
        lua_pushlightuserdata(L, (void *)e);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, e->module);
    }
    lua_pop(L, 2);

    /* the request metatable: lazy fields come from devloop.core */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, dl__req_index);
    lua_setfield(L, -2, "__index");
    vm->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, 0, 2);
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, env_newindex);
    lua_setfield(L, -2, "__newindex");
    vm->env_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* math.random differs per process and worker (LuaJIT's default seed is
     * fixed: two processes would draw the same "random" ids) */
    {
        uint64_t seed[4];
        dl_prng_seed(seed);
        lua_getglobal(L, "math");
        lua_getfield(L, -1, "randomseed");
        lua_pushnumber(L, (lua_Number)(seed[0] % 4294967291ULL));
        lua_call(L, 1, 0);
        lua_pop(L, 1);
    }
    /* the runtime's Lua library loads once per VM, before any app module, so
     * its state (coalescing tables, TTL presets) outlives reloads */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "devloop");
    if (lua_pcall(L, 1, 0, 0) != 0) {
        dl_log(DL_LOG_ERROR, "cannot load the devloop Lua library: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return vm;
}

static void gen_free(dl_vm_t *vm, dl_gen_t *g)
{
    if (g == NULL)
        return;
    dl_route_t *r = g->routes;
    while (r) {
        dl_route_t *next = r->next;
        if (vm->L) {
            luaL_unref(vm->L, LUA_REGISTRYINDEX, r->handler_ref);
            if (r->precheck_ref)
                luaL_unref(vm->L, LUA_REGISTRYINDEX, r->precheck_ref);
        }
        dl_free(r->pattern);
        dl_free(r);
        r = next;
    }
    dl_router_free(g->router);
    dl_free(g);
}

static void task_free(dl_task_t *t, int reuse);

/* Frees retired generations whose last request has ended. */
static void reap_generations(dl_vm_t *vm)
{
    dl_gen_t **pp = &vm->old;
    int freed = 0;
    while (*pp) {
        dl_gen_t *g = *pp;
        if (g->refs == 0) {
            *pp = g->next_old;
            gen_free(vm, g);
            freed = 1;
        } else {
            pp = &g->next_old;
        }
    }
    /* the old handlers' closures are garbage now: collect them while idle */
    if (freed && vm->L)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
}

int dl_vm_generations(dl_vm_t *vm)
{
    int n = vm->gen ? 1 : 0;
    for (dl_gen_t *g = vm->old; g; g = g->next_old)
        n++;
    return n;
}

void dl_vm_unpin(dl_vm_t *vm, dl_req_t *req)
{
    dl_gen_t *g = req->gen;
    if (g == NULL)
        return;
    req->gen = NULL;
    req->route = NULL;
    g->refs--;
    if (g->refs == 0 && g != vm->gen)
        reap_generations(vm);
}

void dl_vm_cancel_tasks(dl_vm_t *vm)
{
    if (vm == NULL)
        return;
    while (vm->tasks) {
        dl_task_t *t = vm->tasks;
        if (t->cancel)
            t->cancel(t->cancel_data);
        if (t->req && t->parent == NULL && !t->detached) {
            t->req->task = NULL;
            t->req->ctx->release(t->req->ctx, t->req);
        }
        task_free(t, 0);
    }
}

void dl_vm_free(dl_vm_t *vm)
{
    if (vm == NULL)
        return;
    dl_vm_cancel_tasks(vm);
    gen_free(vm, vm->gen);
    gen_free(vm, vm->loading);
    while (vm->old) {
        dl_gen_t *g = vm->old;
        vm->old = g->next_old;
        gen_free(vm, g);
    }
    lua_close(vm->L);
    vm->L = NULL;
    while (vm->spare_tasks) {
        dl_task_t *t = vm->spare_tasks;
        vm->spare_tasks = t->next;
        dl_free(t);
    }
    dl_buf_free(&vm->scratch);
    dl_free(vm->co_pool);
    dl_free(vm->co_pool_refs);
    dl_free(vm);
}

/* ============================================================ app loading */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
    char **names;
    int n, cap;
} name_list_t;

/* Adds dir/rel's *.lua (rel "" for dir itself) to l as relative paths, and
 * with recurse those of its subfolders; dot entries and symbolic links to
 * folders are skipped (a link loop would never end). */
static void list_lua_in(const char *dir, const char *rel, int recurse, name_list_t *l)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s%s%s", dir, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char sub[1024];
        int sl = snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        if (sl < 0 || (size_t)sl >= sizeof(sub))
            continue;
        size_t len = strlen(de->d_name);
        if (len >= 5 && strcmp(de->d_name + len - 4, ".lua") == 0) {
            if (l->n == l->cap) {
                int cap = l->cap ? l->cap * 2 : 16;
                char **nn = dl_realloc(l->names, sizeof(char *) * (size_t)cap);
                if (nn == NULL)
                    break;
                l->names = nn;
                l->cap = cap;
            }
            char *name = dl_strdup(sub);
            if (name != NULL)
                l->names[l->n++] = name;
            continue;
        }
        struct stat st;
        char full[1200];
        snprintf(full, sizeof(full), "%s/%s", dir, sub);
        if (recurse && lstat(full, &st) == 0 && S_ISDIR(st.st_mode))
            list_lua_in(dir, sub, recurse, l);
    }
    closedir(d);
}

/* Lists dir/\*.lua, and with recurse dir/\*\*\/\*.lua too, as paths relative
 * to dir in sorted order (every load declares in the same order); returns
 * the count (0 when the folder is absent). */
static int list_lua(const char *dir, int recurse, char ***out)
{
    name_list_t l = {NULL, 0, 0};
    list_lua_in(dir, "", recurse, &l);
    if (l.n > 0)
        qsort(l.names, (size_t)l.n, sizeof(char *), cmp_str);
    *out = l.names;
    return l.n;
}

/* ============================================================ error text */

/* A line being written: appends stop quietly at the end of the array. */
typedef struct {
    char s[400];
    size_t len;
} line_t;

static void put(line_t *o, const char *fmt, ...)
{
    if (o->len >= sizeof(o->s) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->s + o->len, sizeof(o->s) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len = DL_MIN(sizeof(o->s) - 1, o->len + (size_t)n);
}

/* Appends the value at idx, short: strings quoted and cut, tables "{...}". */
static void put_short(lua_State *L, int idx, line_t *o)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t sl;
        const char *s = lua_tolstring(L, idx, &sl);
        put(o, "\"%.*s%s", (int)DL_MIN(sl, 60), s, sl > 60 ? "...\"" : "\"");
        break;
    }
    case LUA_TNUMBER:
        put(o, "%.14g", (double)lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        put(o, "%s", lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TTABLE:
        put(o, "{...}");
        break;
    default:
        put(o, "(a %s)", luaL_typename(L, idx));
    }
}

/*
 * core._error_text(v): a raised value as one readable line for a log or a
 * job's error. A string is itself; a value with __tostring says what that
 * gives; a table shows its first fields: error object is a table: {status =
 * 418, message = "x"}. (Lua's own handlers only say "(error object is not a
 * string)".) Raises only if a __tostring does.
 */
int dl__error_text(lua_State *L)
{
    lua_settop(L, 1);
    int t = lua_type(L, 1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        lua_tostring(L, 1);
        return 1;
    }
    if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
        return 1;
    lua_settop(L, 1);
    line_t o = {.len = 0};
    if (t == LUA_TNIL) {
        put(&o, "error object is nil");
    } else if (t != LUA_TTABLE) {
        put(&o, "error object is a %s", luaL_typename(L, 1));
        if (t == LUA_TBOOLEAN) {
            put(&o, ": ");
            put_short(L, 1, &o);
        }
    } else {
        put(&o, "error object is a table: {");
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            if (n == 8) {
                lua_pop(L, 2);
                put(&o, ", ...");
                break;
            }
            if (n++ > 0)
                put(&o, ", ");
            if (lua_type(L, -2) == LUA_TSTRING) {
                put(&o, "%s", lua_tostring(L, -2));
            } else {
                put(&o, "[");
                put_short(L, -2, &o);
                put(&o, "]");
            }
            put(&o, " = ");
            put_short(L, -1, &o);
            lua_pop(L, 1);
        }
        put(&o, "}");
    }
    lua_pushlstring(L, o.s, o.len);
    return 1;
}

/* The text of the raised value at the top of L (replaced by it); never
 * raises: a __tostring that fails gives a fixed text. */
static const char *error_text(lua_State *L)
{
    if (lua_type(L, -1) == LUA_TSTRING)
        return lua_tostring(L, -1);
    lua_pushcfunction(L, dl__error_text);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "error object is not a string (and its __tostring failed)");
    }
    return lua_tostring(L, -1);
}

/* The text of the value at the top of co (a task's coroutine, perhaps dead:
 * nothing is called on it), into out. */
static void error_text_of(dl_vm_t *vm, lua_State *co, char *out, size_t len)
{
    lua_pushvalue(co, -1);
    lua_xmove(co, vm->L, 1);
    snprintf(out, len, "%s", error_text(vm->L));
    lua_pop(vm->L, 1);
}

/* The error handler of a module's load; its upvalue is the module's chunk
 * source ("@path" or "=path"). Returns { message with traceback, line }:
 * line is where the module itself was when an error raised in another file
 * (a lib/ module it requires, a function it calls) happened, else 0. */
static int traceback_handler(lua_State *L)
{
    lua_settop(L, 1);
    const char *msg = error_text(L); /* replaces the value at 1: stays anchored */
    const char *source = lua_tostring(L, lua_upvalueindex(1));
    int line = 0;
    lua_Debug ar;
    for (int level = 1; source && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && strcmp(ar.source, source) == 0) {
            line = ar.currentline;
            break;
        }
    }
    lua_createtable(L, 2, 0);
    /* keep "file:line: message" on the first line; the trace follows for the log */
    luaL_traceback(L, L, msg, 1);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, line);
    lua_rawseti(L, -2, 2);
    return 1;
}

/*
 * Appends one line for a module's load error (msg, without its traceback)
 * that names the file, the line and the cause. Lua's require puts the cause
 * of a lib/ module's syntax error on a second line ("error loading module
 * 'm' from file 'f':\n\tf:3: '=' expected near 'x'") and lists every path it
 * tried on more lines; both are folded into the one line here. An error raised
 * in another file says where in this module it came from (site).
 */
static void append_load_error(dl_buf_t *out, const char *path, const char *app_dir,
                              const char *msg, size_t len, int site)
{
    static const char loading[] = "error loading module '";
    char module[128] = "";
    const char *end = msg + len;
    if (len > sizeof(loading) - 1 && memcmp(msg, loading, sizeof(loading) - 1) == 0) {
        const char *name = msg + sizeof(loading) - 1;
        const char *q = memchr(name, '\'', (size_t)(end - name));
        const char *cause = q ? strstr(q, ":\n\t") : NULL;
        if (cause && cause < end) {
            snprintf(module, sizeof(module), "%.*s", (int)(q - name), name);
            msg = cause + 3; /* the cause alone: "f:3: '=' expected near 'x'" */
        }
    }
    const char *nl = memchr(msg, '\n', (size_t)(end - msg));
    size_t first = nl ? (size_t)(nl - msg) : (size_t)(end - msg);
    int here = strncmp(msg, path, strlen(path)) == 0;
    /* messages already start with the file name when Lua knows the line */
    if (!here && site == 0)
        dl_buf_appendf(out, "%s: ", path);
    if (nl && first > 0 && msg[first - 1] == ':' && strstr(msg, " not found:") != NULL) {
        /* require's search list: the places in the app, the rest counted */
        dl_buf_append(out, msg, first - 1);
        size_t alen = strlen(app_dir), others = 0;
        const char *sep = ": ";
        for (const char *p = nl; p && p < end; p = memchr(p + 1, '\n', (size_t)(end - p - 1))) {
            const char *item = p + 1 + (p[1] == '\t');
            const char *stop = memchr(item, '\n', (size_t)(end - item));
            size_t n = stop ? (size_t)(stop - item) : (size_t)(end - item);
            if (n > 9 && memcmp(item, "no file '", 9) == 0 && n > 9 + alen &&
                memcmp(item + 9, app_dir, alen) == 0) {
                dl_buf_appendf(out, "%s%.*s", sep, (int)n, item);
                sep = ", ";
            } else if (n > 0) {
                others++;
            }
        }
        if (others)
            dl_buf_appendf(out, " (nor in the %zu other places Lua looks)", others);
    } else {
        /* any other message on one line */
        for (const char *p = msg; p < end; p++)
            if (*p != '\t')
                dl_buf_append_char(out, *p == '\n' ? ' ' : *p);
    }
    if (!here && site > 0) {
        if (module[0])
            dl_buf_appendf(out, " (module '%s' required at %s:%d)", module, path, site);
        else
            dl_buf_appendf(out, " (from %s:%d)", path, site);
    }
    dl_buf_append_char(out, '\n');
}

/* Pushes require("devloop")[name] when it is a function (returns 1); else
 * pushes nothing (returns 0). The runtime's hooks into its Lua library. */
static int push_library_fn(lua_State *L, const char *name)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "devloop");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        dl_log(DL_LOG_ERROR, "cannot load the devloop Lua library: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    if (lua_isfunction(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

/* Calls require("devloop")[name]() if it exists, logging an error it raises. */
static void call_library(lua_State *L, const char *name)
{
    if (push_library_fn(L, name) && lua_pcall(L, 0, 0, 0) != 0) {
        dl_log(DL_LOG_ERROR, "devloop.%s: %s", name, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/*
 * Loads one module (the file at path, or the embedded chunk e, named path)
 * in its own environment; appends an error line on failure. A job processor
 * (job_type set) must return a function(data, job), which is registered for
 * that type in the generation being loaded.
 */
static int load_module(dl_vm_t *vm, const char *path, const dl_embedded_t *e,
                       const char *job_type, dl_buf_t *errors)
{
    lua_State *L = vm->L;
    char chunkname[300];
    snprintf(chunkname, sizeof(chunkname), "=%s", path);
    /* the source Lua gives the chunk: "@path" for a file */
    if (e)
        lua_pushstring(L, chunkname);
    else
        lua_pushfstring(L, "@%s", path);
    lua_pushcclosure(L, traceback_handler, 1);
    int base = lua_gettop(L);
    int rc = e ? luaL_loadbuffer(L, e->data, e->len, chunkname) : luaL_loadfile(L, path);
    if (rc == 0) {
        lua_newtable(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->env_mt_ref);
        lua_setmetatable(L, -2);
        lua_setfenv(L, -2);
        rc = lua_pcall(L, 0, job_type ? 1 : 0, base);
    }
    if (rc == 0 && job_type) {
        if (!lua_isfunction(L, -1)) {
            lua_pushfstring(L, "%s: a job processor must return a function(data, job)", path);
            rc = LUA_ERRRUN;
        } else if (push_library_fn(L, "_register_processor")) {
            lua_pushstring(L, job_type);
            lua_pushvalue(L, -3);
            lua_call(L, 2, 0);
        }
    }
    int failed = 0;
    if (rc != 0) {
        int site = 0;
        if (lua_istable(L, -1)) { /* from traceback_handler */
            lua_rawgeti(L, -1, 2);
            site = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
            lua_rawgeti(L, -1, 1);
        }
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL)
            msg = "error object is not a string";
        const char *trace = strstr(msg, "\nstack traceback:");
        append_load_error(errors, path, vm->app_dir, msg, trace ? (size_t)(trace - msg) : strlen(msg),
                          site);
        dl_log(DL_LOG_DEBUG, "%s", msg);
        failed = 1;
    }
    lua_settop(L, base - 1);
    return failed;
}

/* Module-level state starts fresh in each generation: app modules required
 * by the last generation are dropped from package.loaded (its handlers keep
 * their own references), and the app's lib/ folder is on package.path. */
static void reset_app_modules(dl_vm_t *vm, const char *app_dir)
{
    lua_State *L = vm->L;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    int loaded = lua_gettop(L);
    if (vm->baseline_ref == 0 || vm->baseline_ref == LUA_NOREF) {
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, loaded) != 0) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushboolean(L, 1);
            lua_rawset(L, -4);
        }
        vm->baseline_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pushfstring(L, "%s/lib/?.lua;%s/lib/?/init.lua;", app_dir, app_dir);
        lua_getfield(L, loaded - 1, "path");
        lua_concat(L, 2);
        lua_setfield(L, loaded - 1, "path");
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->baseline_ref);
        int base = lua_gettop(L);
        lua_newtable(L); /* keys to drop: no table writes during lua_next */
        int drop = lua_gettop(L);
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, loaded) != 0) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_rawget(L, base);
            int keep = lua_toboolean(L, -1);
            lua_pop(L, 1);
            if (!keep) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, drop, ++n);
            }
        }
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, drop, i);
            lua_pushnil(L);
            lua_rawset(L, loaded);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
}

int dl_vm_load_app(dl_vm_t *vm, const char *app_dir, dl_buf_t *errors)
{
    struct stat st;
    if (stat(app_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        dl_buf_appendf(errors, "%s: not a directory\n", app_dir);
        return 1;
    }
    dl_gen_t *g = dl_calloc(1, sizeof(*g));
    if (g == NULL || (g->router = dl_router_new()) == NULL) {
        dl_free(g);
        dl_buf_appendf(errors, "%s: out of memory\n", app_dir);
        return 1;
    }
    g->id = vm->gen ? vm->gen->id + 1 : 1;
    vm->loading = g;
    snprintf(vm->app_dir, sizeof(vm->app_dir), "%s", app_dir);
    reset_app_modules(vm, app_dir);
    /* start hooks, job processors and tokens are declared afresh by each
     * load; a broken tokens file fails it */
    int nerr = 0;
    if (push_library_fn(vm->L, "_begin_load") && lua_pcall(vm->L, 0, 0, 0) != 0) {
        dl_buf_appendf(errors, "%s\n", lua_tostring(vm->L, -1));
        lua_pop(vm->L, 1);
        nerr++;
    }

    char path[1200];
    snprintf(path, sizeof(path), "%s/app.lua", app_dir);
    if (stat(path, &st) == 0)
        nerr += load_module(vm, path, NULL, NULL, errors);

    static const char *dirs[] = {"routes", "jobs"};
    for (size_t d = 0; d < DL_ARRAY_SIZE(dirs); d++) {
        char dir[900];
        snprintf(dir, sizeof(dir), "%s/%s", app_dir, dirs[d]);
        char **names;
        /* routes/ declares in its subfolders too; jobs/TYPE.lua names its type */
        int n = list_lua(dir, d == 0, &names);
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            /* routes/x.lua declares routes; jobs/TYPE.lua returns TYPE's processor */
            char type[256];
            snprintf(type, sizeof(type), "%.*s", (int)(strlen(names[i]) - 4), names[i]);
            nerr += load_module(vm, path, NULL, d == 1 ? type : NULL, errors);
            dl_free(names[i]);
        }
        dl_free(names);
        /* the built-in routes come after the app's, which may move or
         * disable them (api.builtin_routes) */
        if (d == 0 && nerr == 0)
            for (const dl_embedded_t *e = dl_embedded_routes; e->module; e++) {
                snprintf(path, sizeof(path), "[devloop]/routes/%s", e->file);
                nerr += load_module(vm, path, e, NULL, errors);
            }
    }
    vm->loading = NULL;
    if (nerr) {
        call_library(vm->L, "_abort_load");
        gen_free(vm, g);
        return nerr;
    }
    /* switch: new requests route in g; the old generation retires and is
     * freed when its last request ends */
    dl_gen_t *prev = vm->gen;
    vm->gen = g;
    call_library(vm->L, "_end_load");
    if (prev) {
        prev->next_old = vm->old;
        vm->old = prev;
        reap_generations(vm);
    }
    return 0;
}

/* ================================================================ routing */

void dl_vm_route(dl_vm_t *vm, dl_req_t *req)
{
    req->body_limit = vm->cfg->max_body;
    if (vm->gen == NULL) {
        req->route_status = DL_ROUTE_NOT_FOUND;
        return;
    }
    req->route_status = dl_router_match(vm->gen->router, req->method, req->head.data,
                                        req->path_len, &req->match);
    if (req->route_status == DL_ROUTE_FOUND) {
        req->route = req->match.data;
        req->gen = vm->gen;
        vm->gen->refs++;
        if (req->route->body_limit)
            req->body_limit = req->route->body_limit;
        req->upload_limit = req->route->upload_limit;
    }
}

int dl_vm_precheck(dl_vm_t *vm, dl_req_t *req, char *msg, size_t msglen)
{
    if (req->route == NULL || req->route->precheck_ref == 0)
        return 0;
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->route->precheck_ref);
    size_t alen;
    const char *authz = dl_req_header(req, "authorization", &alen);
    if (authz)
        lua_pushlstring(L, authz, alen);
    else
        lua_pushnil(L);
    int status = 0;
    if (lua_pcall(L, 1, 2, 0) != 0) {
        dl_log_req(DL_LOG_ERROR, req->id, "%s: check before the body failed: %s",
                   req->route->pattern, lua_tostring(L, -1));
    } else if (lua_type(L, -2) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, -2);
        if (v >= 400 && v <= 599)
            status = (int)v;
        snprintf(msg, msglen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "refused");
    }
    lua_settop(L, top);
    return status;
}

/* ================================================================== tasks */

dl_task_t *dl_task_current(lua_State *L)
{
    dl_task_t *t = lua_getexdata(L);
    return (t && t->co == L) ? t : NULL;
}

void dl_task_park(dl_task_t *t, void (*cancel)(void *), void *data)
{
    t->cancel = cancel;
    t->cancel_data = data;
}

static dl_task_t *task_new(dl_vm_t *vm, dl_req_t *req)
{
    dl_task_t *t = vm->spare_tasks;
    if (t != NULL) {
        vm->spare_tasks = t->next;
        memset(t, 0, sizeof(*t));
    } else if ((t = dl_calloc(1, sizeof(*t))) == NULL) {
        return NULL;
    }
    lua_State *L = vm->L;
    if (vm->n_co_pool > 0) {
        vm->n_co_pool--;
        t->co = vm->co_pool[vm->n_co_pool];
        t->co_ref = vm->co_pool_refs[vm->n_co_pool];
    } else {
        t->co = lua_newthread(L);
        t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_setexdata(t->co, t);
    t->vm = vm;
    t->req = req;
    t->results_ref = LUA_NOREF;
    t->error_ref = LUA_NOREF;
    t->next = vm->tasks;
    if (vm->tasks)
        vm->tasks->prev = t;
    vm->tasks = t;
    vm->n_tasks++;
    return t;
}

static void guard_leave(dl_task_t *t);

static void task_free(dl_task_t *t, int reuse)
{
    dl_vm_t *vm = t->vm;
    lua_State *L = vm->L;
    guard_leave(t);
    if (t->prev)
        t->prev->next = t->next;
    else
        vm->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    vm->n_tasks--;
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->error_ref);
        lua_setexdata(t->co, NULL);
        /* a coroutine that returned normally can run another function */
        if (reuse && vm->n_co_pool < CO_POOL_MAX && lua_status(t->co) == 0) {
            lua_settop(t->co, 0);
            vm->co_pool[vm->n_co_pool] = t->co;
            vm->co_pool_refs[vm->n_co_pool] = t->co_ref;
            vm->n_co_pool++;
        } else {
            luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        }
    }
    /* Not freed: a coroutine the app created inside this task inherited its
     * exdata (lua_newthread copies it) and may be kept and resumed after the
     * task ended, when dl_task_current() and the guard read this memory. A
     * spare stays valid until the VM goes, and its co no longer matches. */
    memset(t, 0, sizeof(*t));
    t->vm = vm;
    t->next = vm->spare_tasks;
    vm->spare_tasks = t;
}

/* ====================================================== start-hook limit */

/*
 * An on_start hook runs under a time limit (cfg->start_timeout_ms). A hook
 * that yields (db, sleep) lets the loop run, so a timer can end the wait for
 * it (scripts/devloop/lifecycle.lua races it under `devloop test`). A hook
 * that never yields (`while true do end`) holds the loop, and no timer fires:
 * while its task runs, an instruction-count hook looks at the clock and, past the limit,
 * yields the task from inside the hook (LuaJIT allows it), where no pcall in
 * the hook's code can catch it; dl_task_resume() then ends the task with the
 * message. Compiled code does not call count hooks, so the traces are
 * flushed when the limit is set and the JIT is off while a guarded task runs.
 * The limit counts the hook's whole run under `devloop test` (the tests wait
 * for it) and each stretch without yielding under `serve` (a long seed that
 * yields is fine; a hook that holds the worker is not).
 *
 * The limit (a dl_guard_t) covers the hook's task and every task it starts,
 * directly or not (api.parallel children, api.with_timeout's function, also
 * once detached, core._spawn): each holds a reference, so a loop in any of
 * them is stopped the same way. Tasks started otherwise (requests, jobs) have
 * none: no count hook is set for them and they keep the JIT.
 */
#define GUARD_COUNT 1000 /* instructions between clock checks */

/* path relative to the app folder when inside it (for messages) */
static const char *app_relative(const dl_vm_t *vm, const char *path)
{
    size_t n = strlen(vm->app_dir);
    if (n > 0 && strncmp(path, vm->app_dir, n) == 0 && path[n] == '/')
        return path + n + 1;
    return path;
}

static void format_ms(char *out, size_t len, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, len, "%llums", (unsigned long long)ms);
}

static void guard_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    /* the task whose coroutine (or a coroutine it created) is running; tasks
     * with no guard that run meanwhile (woken by a guarded one) run on */
    dl_task_t *t = lua_getexdata(L);
    if (t == NULL) {
        /* a coroutine made outside any task (at load time: app.lua, a lib/
         * module) and resumed by the guarded task: it runs under its limit */
        dl_vm_t *owner = dl_vm_of(L);
        t = owner ? owner->guard.running : NULL;
    }
    if (t == NULL || t->guard == NULL)
        return;
    dl_vm_t *vm = t->vm;
    dl_guard_t *g = t->guard;
    uint64_t from = g->whole ? g->start_ns : vm->guard.armed_ns;
    if (uv_hrtime() - from < g->limit_ns)
        return;
    char lim[32], where[300] = "";
    format_ms(lim, sizeof(lim), g->limit_ns / 1000000);
    lua_Debug d;
    if (lua_getstack(L, 0, &d) && lua_getinfo(L, "Sl", &d) && d.currentline > 0) {
        const char *src = d.source[0] == '=' || d.source[0] == '@' ? d.source + 1 : d.source;
        snprintf(where, sizeof(where), " (stopped at %s:%d)", app_relative(vm, src),
                 d.currentline);
    }
    if (g->whole)
        snprintf(g->msg, sizeof(g->msg), "%.200s: on_start hook did not finish within %s%.200s",
                 g->label, lim, where);
    else
        snprintf(g->msg, sizeof(g->msg),
                 "%.200s: on_start hook ran %s without yielding and was stopped: this worker "
                 "served nothing meanwhile (DEVLOOP_START_TIMEOUT_MS)%.200s",
                 g->label, lim, where);
    if (g->first[0] == '\0')
        snprintf(g->first, sizeof(g->first), "%s", g->msg);
    if (t->co == L && lua_isyieldable(L)) {
        g->tripped = 1;
        lua_yield(L, 0);
        return;
    }
    /* in a coroutine of the task's own, or inside a C call (a gsub callback):
     * raise instead, again at each count until the task's coroutine is reached */
    luaL_error(L, "%s", g->msg);
}

static void guard_arm(dl_vm_t *vm)
{
    vm->guard.armed = 1;
    vm->guard.armed_ns = uv_hrtime();
    luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_sethook(vm->L, guard_hook, LUA_MASKCOUNT, GUARD_COUNT);
}

static void guard_disarm(dl_vm_t *vm)
{
    vm->guard.armed = 0;
    vm->guard.running = NULL;
    lua_sethook(vm->L, NULL, 0, 0);
    if (vm->guard.jit_on)
        luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
}

/* c, a task that t (the caller, or NULL) starts, runs under t's limit */
static void guard_inherit(dl_task_t *c, const dl_task_t *t)
{
    if (t == NULL || t->guard == NULL)
        return;
    c->guard = t->guard;
    c->guard->refs++;
}

static void guard_leave(dl_task_t *t)
{
    dl_guard_t *g = t->guard;
    t->guard = NULL;
    if (g && g->root == t)
        g->root = NULL;
    if (g && --g->refs == 0)
        dl_free(g);
}

/* 1 when the JIT compiler is on (jit.status()) */
static int jit_is_on(lua_State *L)
{
    int on = 0;
    lua_getglobal(L, "jit");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "status");
        if (lua_isfunction(L, -1) && lua_pcall(L, 0, 1, 0) == 0)
            on = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return on;
}

/*
 * core._guard(): the start-hook limit in ms (0: none).
 * core._guard(label, whole): puts the calling task, and every task it starts
 * from now on, under that limit (see above); label ("app.lua:12") starts the
 * message.
 */
int dl__guard(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    uint64_t ms = vm && vm->cfg ? vm->cfg->start_timeout_ms : 0;
    if (lua_gettop(L) == 0) {
        lua_pushnumber(L, (lua_Number)ms);
        return 1;
    }
    const char *label = luaL_checkstring(L, 1);
    int whole = lua_toboolean(L, 2);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL)
        return luaL_error(L, "core._guard: not in a task");
    if (ms == 0)
        return 0;
    dl_guard_t *g = dl_calloc(1, sizeof(*g));
    if (g == NULL)
        return luaL_error(L, "out of memory");
    g->refs = 1;
    g->whole = whole;
    g->limit_ns = ms * 1000000;
    g->start_ns = uv_hrtime();
    snprintf(g->label, sizeof(g->label), "%s", label);
    guard_leave(t);
    t->guard = g;
    g->root = t;
    /* traces compiled before now would run without calling the hook */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
    if (!vm->guard.armed) {
        vm->guard.jit_on = jit_is_on(L);
        guard_arm(vm); /* the task is running: this resume counts */
        vm->guard.running = t;
    }
    return 0;
}

typedef struct {
    uv_timer_t timer;
    dl_task_t *parent; /* NULL once the race is decided */
    dl_task_t *child;  /* NULL once the child ended */
} race_t;

static void on_race_closed(uv_handle_t *h)
{
    dl_free(h->data);
}

static void race_decided(race_t *r)
{
    r->parent = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_race_closed);
}

static void finish_main(dl_task_t *t, int ok);
static void finish_child(dl_task_t *t, int ok);

/* A task with no request (start hooks, jobs): errors go to the log. */
static void finish_background(dl_task_t *t, int ok)
{
    if (!ok) {
        char text[1024];
        error_text_of(t->vm, t->co, text, sizeof(text));
        dl_log(DL_LOG_ERROR, "background task failed: %s", text);
    }
    task_free(t, ok);
}

int dl_vm_spawn(dl_vm_t *vm, int nargs)
{
    /* the function and its nargs arguments are on top of vm->L */
    dl_task_t *t = task_new(vm, NULL);
    if (t == NULL) {
        lua_pop(vm->L, nargs + 1);
        return DL_ENOMEM;
    }
    lua_xmove(vm->L, t->co, nargs + 1);
    dl_task_resume(t, nargs);
    return 0;
}

/* core._spawn(fn, ...): runs fn(...) now in a task of its own with no
 * request (background work: job runs); returns at fn's first yield. */
int dl__spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    dl_vm_t *vm = dl_vm_of(L);
    if (vm == NULL || dl_lua_host(L) == NULL)
        return luaL_error(L, "spawn is only available while serving");
    int nargs = lua_gettop(L) - 1;
    dl_task_t *t = task_new(vm, NULL);
    if (t == NULL)
        return luaL_error(L, "out of memory");
    /* started by a start hook (from any coroutine of its task): its limit */
    guard_inherit(t, lua_getexdata(L));
    lua_checkstack(t->co, nargs + 2);
    lua_xmove(L, t->co, nargs + 1);
    dl_task_resume(t, nargs);
    return 0;
}

void dl_vm_start(dl_vm_t *vm)
{
    if (push_library_fn(vm->L, "_run_start"))
        dl_vm_spawn(vm, 0);
}

void dl_vm_reloaded(dl_vm_t *vm)
{
    if (push_library_fn(vm->L, "_run_reload"))
        dl_vm_spawn(vm, 0);
}

void dl_task_resume_string(dl_task_t *t, const char *s, size_t len, const char *err)
{
    if (err == NULL) {
        lua_pushlstring(t->co, s ? s : "", len);
        dl_task_resume(t, 1);
    } else {
        dl_task_resume(t, dl_lua_fail(t->co, err, NULL));
    }
}

/* An error value that answers on purpose: a table with a number `status`
 * (api.fail's, or error({status = 404, message = "..."})). It goes to
 * finish_main (or api.parallel's caller) as it is, with no traceback. */
static int is_status_error(lua_State *L, int idx)
{
    if (!lua_istable(L, idx))
        return 0;
    lua_pushliteral(L, "status");
    lua_rawget(L, idx < 0 ? idx - 1 : idx);
    int yes = lua_type(L, -1) == LUA_TNUMBER;
    lua_pop(L, 1);
    return yes;
}

void dl_task_resume(dl_task_t *t, int nargs)
{
    dl_vm_t *vm = t->vm;
    t->cancel = NULL;
    t->cancel_data = NULL;
    /* the outermost resume sets the count hook (when its task has a guard, or
     * gets one: core._guard) and lifts it; resumes nested in it (api.parallel
     * children, joins) run under it */
    int outer = !vm->guard.armed;
    if (outer && t->guard) {
        guard_arm(vm);
        vm->guard.running = t;
    }
    int rc = lua_resume(t->co, nargs);
    if (outer && vm->guard.armed)
        guard_disarm(vm);
    if (rc == LUA_YIELD && t->guard && t->guard->tripped) {
        /* the count hook stopped a start hook's task that ran past its limit */
        t->guard->tripped = 0;
        lua_settop(t->co, 0);
        lua_pushstring(t->co, t->guard->msg);
        rc = LUA_ERRRUN;
    } else if (rc == 0 && t->guard && t->guard->root == t && t->guard->first[0]) {
        /* a task the hook started was stopped (the hook may have caught its
         * error, or not waited for it): the hook did not keep to its limit */
        lua_settop(t->co, 0);
        lua_pushstring(t->co, t->guard->first);
        rc = LUA_ERRRUN;
    } else if (rc == LUA_YIELD) {
        if (t->cancel == NULL && !t->joining) {
            /* a plain coroutine.yield() from the handler: nothing will wake it */
            lua_settop(t->co, 0);
            lua_pushliteral(t->co, "attempt to yield from a handler outside an I/O call");
            rc = LUA_ERRRUN;
        } else {
            return;
        }
    }
    int ok = rc == 0;
    if (!ok && !is_status_error(t->co, -1)) {
        /* message + the coroutine's traceback, for the log; a value that is
         * not a string is shown as text (dl__error_text) */
        lua_State *L = vm->L;
        lua_pushvalue(t->co, -1);
        lua_xmove(t->co, L, 1);
        luaL_traceback(L, t->co, error_text(L), 0);
        lua_remove(L, -2);
        lua_xmove(L, t->co, 1);
    }
    if (t->parent)
        finish_child(t, ok);
    else if (t->req == NULL || t->detached)
        finish_background(t, ok);
    else
        finish_main(t, ok);
}

/* ======================================================= api.parallel */

/*
 * Pushes a join's outcome onto `to`: (false, first error) or (true, results)
 * where results is the table of a parallel join or, with single, slot 0 of it
 * (a race). The refs are let go here, in one place: the values are on the
 * stack now.
 */
static void release_join(lua_State *L, dl_task_t *p)
{
    luaL_unref(L, LUA_REGISTRYINDEX, p->results_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, p->error_ref);
    p->results_ref = p->error_ref = LUA_NOREF;
}

static void push_outcome(lua_State *to, dl_task_t *p, int single)
{
    if (p->error_ref != LUA_NOREF) {
        lua_pushboolean(to, 0);
        lua_rawgeti(to, LUA_REGISTRYINDEX, p->error_ref);
    } else {
        lua_pushboolean(to, 1);
        lua_rawgeti(to, LUA_REGISTRYINDEX, p->results_ref);
        if (single) {
            lua_rawgeti(to, -1, 0);
            lua_remove(to, -2);
        }
    }
    release_join(to, p);
}

/* A child task ended: record its first result (or error); wake the parent. */
static void finish_child(dl_task_t *t, int ok)
{
    dl_task_t *p = t->parent;
    lua_State *L = t->vm->L;
    lua_State *co = t->co;
    if (ok) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->results_ref);
        if (lua_gettop(co) > 0)
            lua_xmove(co, L, 1);
        else
            lua_pushnil(L);
        lua_rawseti(L, -2, t->index);
        lua_pop(L, 1);
    } else if (p->error_ref == LUA_NOREF) {
        lua_xmove(co, L, 1);
        p->error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    race_t *race = t->race;
    task_free(t, ok);
    p->waiting--;
    if (race) {
        /* a race the child won: hand (ok, value) to the parent */
        race->child = NULL;
        if (race->parent == NULL || !p->joining)
            return;
        p->joining = 0;
        race_decided(race);
        push_outcome(p->co, p, 1);
        dl_task_resume(p, 2);
        return;
    }
    if (p->waiting == 0 && p->joining) {
        p->joining = 0;
        push_outcome(p->co, p, 0);
        dl_task_resume(p, 2);
    }
}

/* core._parallel(f1, f2, ...) -> true, {r1, r2, ...} | false, err */
int dl__parallel(lua_State *L)
{
    dl_task_t *t = dl_task_current(L);
    if (t == NULL)
        return luaL_error(L, "api.parallel can only run inside a handler");
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++)
        luaL_checktype(L, i, LUA_TFUNCTION);
    if (t->results_ref != LUA_NOREF || t->waiting)
        return luaL_error(L, "api.parallel is already running in this task");
    lua_createtable(L, n, 0);
    t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->error_ref = LUA_NOREF;
    for (int i = 1; i <= n; i++) {
        dl_task_t *c = task_new(t->vm, t->req);
        if (c == NULL)
            return luaL_error(L, "out of memory");
        guard_inherit(c, t);
        c->parent = t;
        c->index = i;
        t->waiting++;
        lua_pushvalue(L, i);
        lua_xmove(L, c->co, 1);
        dl_task_resume(c, 0); /* children that finish at once are counted now */
    }
    if (t->waiting > 0) {
        t->joining = 1;
        return lua_yield(L, 0);
    }
    push_outcome(L, t, 0);
    return 2;
}

/* ====================================================== api.with_timeout */

/*
 * core._race(ms, fn): runs fn in a child task and returns (true, result) when
 * it ends first, or (false, "timeout") when ms pass first; the losing child
 * runs on detached and its end is ignored. Health checks use it so that a
 * stuck backend cannot hang them.
 */
static void on_race_timeout(uv_timer_t *h)
{
    race_t *r = h->data;
    dl_task_t *p = r->parent;
    if (p == NULL)
        return;
    if (r->child) {
        r->child->parent = NULL;
        r->child->detached = 1;
        r->child->race = NULL;
    }
    /* the parent stops waiting on this join: it may join again later */
    p->waiting = 0;
    p->joining = 0;
    race_decided(r);
    release_join(p->co, p);
    lua_pushboolean(p->co, 0);
    lua_pushliteral(p->co, "timeout");
    dl_task_resume(p, 2);
}

static void cancel_race(void *data)
{
    race_t *r = data;
    if (r->child) {
        r->child->parent = NULL;
        r->child->detached = 1;
        r->child->race = NULL;
    }
    race_decided(r);
}

int dl__race(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || dl_lua_host(L) == NULL)
        return luaL_error(L, "with_timeout can only run inside a handler");
    dl_task_t *c = task_new(t->vm, t->req);
    race_t *r = dl_calloc(1, sizeof(*r));
    if (c == NULL || r == NULL) {
        if (c)
            task_free(c, 0);
        dl_free(r);
        return luaL_error(L, "out of memory");
    }
    guard_inherit(c, t);
    /* the child reports to us through finish_child's race branch; t->race
     * stays as it is: it is t's own, when t is itself a raced function */
    c->race = r;
    r->parent = t;
    r->child = c;
    lua_pushvalue(L, 2);
    lua_xmove(L, c->co, 1);
    c->parent = t;
    c->index = 0;
    t->waiting = 1;
    lua_createtable(L, 1, 0);
    t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->error_ref = LUA_NOREF;
    dl_task_resume(c, 0);
    if (t->waiting == 0) {
        /* finished at once */
        dl_free(r);
        push_outcome(L, t, 1);
        return 2;
    }
    uv_timer_init(t->vm->host->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_race_timeout, (uint64_t)(ms > 0 ? ms : 0), 0);
    t->joining = 1;
    dl_task_park(t, cancel_race, r);
    return lua_yield(L, 0);
}

/* ============================================================== responses */

/* Headers the runtime owns: a handler may not set them. */
static int reserved_header(const char *s, size_t n)
{
    return dl_strncasecmp_eq(s, n, "content-length", 14) ||
           dl_strncasecmp_eq(s, n, "transfer-encoding", 17) ||
           dl_strncasecmp_eq(s, n, "connection", 10) || dl_strncasecmp_eq(s, n, "date", 4) ||
           dl_strncasecmp_eq(s, n, "x-request-id", 12);
}

typedef struct {
    dl_resp_t resp;
    dl_buf_t hdrs;
    char ctype[128];
    char err[160]; /* why the headers were refused, naming the header */
} resp_build_t;

/* Reads the handler's headers table at idx into rb; returns an error message or NULL. */
static const char *collect_headers(lua_State *co, int idx, resp_build_t *rb)
{
    if (lua_isnoneornil(co, idx))
        return NULL;
    if (!lua_istable(co, idx)) {
        snprintf(rb->err, sizeof(rb->err), "headers must be a table, got %s",
                 lua_typename(co, lua_type(co, idx)));
        return rb->err;
    }
    lua_pushnil(co);
    while (lua_next(co, idx) != 0) {
        size_t nlen, vlen;
        if (lua_type(co, -2) != LUA_TSTRING) {
            lua_pop(co, 2);
            return "header names must be strings";
        }
        const char *name = lua_tolstring(co, -2, &nlen);
        if (!dl_http_token_ok(name, nlen)) {
            lua_pop(co, 2);
            return "a header name is not a token (letters, digits and !#$%&'*+-.^_`|~)";
        }
        if (reserved_header(name, nlen)) {
            snprintf(rb->err, sizeof(rb->err), "header %.*s is set by the runtime, not by handlers",
                     (int)DL_MIN(nlen, 40), name);
            lua_pop(co, 2);
            return rb->err;
        }
        int is_table = lua_istable(co, -1);
        int nvals = is_table ? (int)lua_objlen(co, -1) : 1;
        for (int i = 1; i <= nvals; i++) {
            if (is_table)
                lua_rawgeti(co, -1, i);
            else
                lua_pushvalue(co, -1);
            int t = lua_type(co, -1);
            if (t != LUA_TSTRING && t != LUA_TNUMBER) {
                snprintf(rb->err, sizeof(rb->err), "header %.*s: values must be strings or "
                         "numbers, not %s", (int)DL_MIN(nlen, 40), name, lua_typename(co, t));
                lua_pop(co, 3);
                return rb->err;
            }
            const char *v = lua_tolstring(co, -1, &vlen);
            if (!dl_http_value_ok(v, vlen)) {
                snprintf(rb->err, sizeof(rb->err), "header %.*s: its value contains a control "
                         "character", (int)DL_MIN(nlen, 40), name);
                lua_pop(co, 3);
                return rb->err;
            }
            if (dl_strncasecmp_eq(name, nlen, "content-type", 12)) {
                size_t cl = DL_MIN(vlen, sizeof(rb->ctype) - 1);
                memcpy(rb->ctype, v, cl);
                rb->ctype[cl] = '\0';
                rb->resp.content_type = rb->ctype;
                rb->resp.content_type_len = cl;
            } else {
                if (dl_strncasecmp_eq(name, nlen, "cache-control", 13))
                    rb->resp.has_cache_control = 1;
                dl_buf_append(&rb->hdrs, name, nlen);
                dl_buf_append(&rb->hdrs, ": ", 2);
                dl_buf_append(&rb->hdrs, v, vlen);
                dl_buf_append(&rb->hdrs, "\r\n", 2);
            }
            lua_pop(co, 1);
        }
        lua_pop(co, 1);
    }
    return NULL;
}

static void respond_500(dl_task_t *t, const char *log_msg)
{
    dl_req_t *req = t->req;
    dl_log_req(DL_LOG_ERROR, req->id, "%s %.*s: %s", req->method_name, (int)req->path_len,
               req->head.data, log_msg);
    req->task = NULL;
    dl_req_respond_error(req, 500, NULL);
}

static void release_req_table(dl_vm_t *vm, dl_req_t *req)
{
    if (req->table_ref == LUA_NOREF || req->table_ref == 0)
        return;
    lua_State *L = vm->L;
    /* cut the table off the C request: a handler that kept it sees nil fields */
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->table_ref);
    lua_pushlightuserdata(L, &req_key);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, req->table_ref);
    req->table_ref = LUA_NOREF;
}

/* "routes/x.lua:12": the app line that raised the error in co (library
 * frames, api.fail's own, skipped); "" when there is none. */
static void raise_site(dl_vm_t *vm, lua_State *co, char *out, size_t len)
{
    lua_Debug d;
    out[0] = '\0';
    for (int level = 0; level < 20 && lua_getstack(co, level, &d); level++) {
        if (!lua_getinfo(co, "Sl", &d) || d.currentline <= 0)
            continue;
        if (strncmp(d.source, "=[devloop]/", 11) == 0)
            continue;
        const char *src = d.source[0] == '=' || d.source[0] == '@' ? d.source + 1 : d.source;
        snprintf(out, len, " at %s:%d", app_relative(vm, src), d.currentline);
        return;
    }
}

/*
 * A handler raised a table with a number status (api.fail(status, message,
 * details) or error({status = 404, message = "..."})): status 400-599
 * answers with it, in the runtime's error shape {"error": status text,
 * "message", "details"?, "requestId"}; the message is the app's own, shown for
 * 5xx too. Any other status is a 500 whose log line says why. 5xx are logged
 * as errors, 4xx at debug level (a refusal, not a fault).
 */
static void respond_status_error(dl_task_t *t)
{
    dl_req_t *req = t->req;
    lua_State *co = t->co;
    int e = lua_gettop(co);
    char where[320];
    raise_site(t->vm, co, where, sizeof(where));
    lua_pushliteral(co, "status");
    lua_rawget(co, e);
    lua_Number st = lua_tonumber(co, -1);
    lua_pop(co, 1);
    lua_pushliteral(co, "message");
    lua_rawget(co, e);
    if (lua_type(co, -1) != LUA_TSTRING) {
        lua_pop(co, 1);
        lua_pushliteral(co, "error");
        lua_rawget(co, e);
    }
    const char *msg = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
    if (st != floor(st) || st < 400 || st > 599) {
        char m[1200], text[600];
        lua_pushvalue(co, e);
        error_text_of(t->vm, co, text, sizeof(text));
        snprintf(m, sizeof(m), "handler of route %s raised status %.14g, outside 400-599%s: %s",
                 req->route ? req->route->pattern : "?", (double)st, where, text);
        respond_500(t, m);
        return;
    }
    int status = (int)st;
    dl_log_req(status >= 500 ? DL_LOG_ERROR : DL_LOG_DEBUG, req->id, "%s %.*s: %d%s: %s",
               req->method_name, (int)req->path_len, req->head.data, status, where,
               msg ? msg : "(no message)");
    lua_pushliteral(co, "details");
    lua_rawget(co, e);
    dl_buf_t body = DL_BUF_INIT, d = DL_BUF_INIT;
    int with_details = 0;
    if (!lua_isnil(co, -1)) {
        char err[160];
        with_details = dl_json_encode(co, lua_gettop(co), &d, err, sizeof(err)) == 0;
        if (!with_details)
            dl_log_req(DL_LOG_ERROR, req->id, "%s %.*s: the details of a %d cannot be encoded "
                       "(sent without them): %s", req->method_name, (int)req->path_len,
                       req->head.data, status, err);
    }
    dl_resp_error_body(&body, status, msg, req->id, with_details ? d.data : NULL, d.len);
    dl_buf_free(&d);
    dl_resp_t resp = {.status = status,
                      .content_type = "application/json",
                      .content_type_len = 16,
                      .body = body.data,
                      .body_len = body.len};
    req->task = NULL;
    dl_req_respond(req, &resp);
    dl_buf_free(&body);
}

/* The main task ended: its return values become the response. */
static void finish_main(dl_task_t *t, int ok)
{
    dl_vm_t *vm = t->vm;
    dl_req_t *req = t->req;
    lua_State *co = t->co;
    release_req_table(vm, req);
    if (!ok) {
        if (is_status_error(co, -1))
            respond_status_error(t);
        else
            respond_500(t, lua_tostring(co, -1));
        task_free(t, 0);
        return;
    }
    int n = lua_gettop(co);
    int bi = 1;
    const char *pattern = req->route ? req->route->pattern : "?";
    /* `return nil, { status = 404, message = "..." }`: the failure idiom with
     * an error table answers as api.fail would (as batch operations do) */
    if (n >= 2 && lua_isnil(co, 1) && is_status_error(co, 2)) {
        lua_settop(co, 2);
        respond_status_error(t);
        task_free(t, 0);
        return;
    }
    /* `return false [, why]`: not an answer; a 200 "false" would hide the mistake */
    if (n >= 1 && lua_type(co, 1) == LUA_TBOOLEAN && !lua_toboolean(co, 1)) {
        char m[512];
        if (n >= 2 && lua_type(co, 2) == LUA_TSTRING)
            snprintf(m, sizeof(m), "a handler returned false: route %s, with \"%.300s\"", pattern,
                     lua_tostring(co, 2));
        else
            snprintf(m, sizeof(m), "a handler returned false: route %s (return a body, a status "
                     "and a body, or nothing for a 204)", pattern);
        respond_500(t, m);
        task_free(t, 0);
        return;
    }
    /* `return "404", "x"`: a status given as a string would be sent as the
     * body, with the next value read as headers */
    if (n >= 2 && lua_type(co, 1) == LUA_TSTRING && lua_isnumber(co, 1) && !lua_isnil(co, 2) &&
        !lua_istable(co, 2)) {
        char m[256];
        snprintf(m, sizeof(m), "handler of route %s: status must be a number, got string \"%.40s\"",
                 pattern, lua_tostring(co, 1));
        respond_500(t, m);
        task_free(t, 0);
        return;
    }
    /* `return nil, err` (Lua's failure idiom, as every api call returns it):
     * a 500 whose log line carries err */
    if (n >= 2 && lua_isnil(co, 1) && !lua_isnil(co, 2)) {
        char m[512];
        snprintf(m, sizeof(m), "handler of route %s returned nil, %s",
                 req->route ? req->route->pattern : "?",
                 lua_type(co, 2) == LUA_TSTRING ? lua_tostring(co, 2) : luaL_typename(co, 2));
        respond_500(t, m);
        task_free(t, 0);
        return;
    }
    resp_build_t rb;
    memset(&rb.resp, 0, sizeof(rb.resp));
    dl_buf_init(&rb.hdrs);
    rb.resp.status = 200;
    if (n >= 1 && lua_type(co, 1) == LUA_TNUMBER) {
        lua_Number s = lua_tonumber(co, 1);
        /* 1xx are interim answers the runtime sends itself: one given as a
         * final answer would make the next pipelined answer this one's */
        if (s != floor(s) || s < 200 || s > 599) {
            char m[160];
            snprintf(m, sizeof(m), "handler of route %s returned status %.14g, outside 200-599",
                     req->route ? req->route->pattern : "?", (double)s);
            respond_500(t, m);
            task_free(t, 0);
            return;
        }
        rb.resp.status = (int)s;
        bi = 2;
    }
    const char *herr = collect_headers(co, bi + 1, &rb);
    if (herr) {
        dl_buf_free(&rb.hdrs);
        respond_500(t, herr);
        task_free(t, 0);
        return;
    }
    rb.resp.headers = rb.hdrs.data;
    rb.resp.headers_len = rb.hdrs.len;
    if (n >= bi + 2 && lua_touserdata(co, bi + 2) == &dl__gzip_body_marker &&
        lua_type(co, bi) == LUA_TSTRING)
        rb.resp.body_gzip = 1;
    if (n >= bi + 2 && lua_touserdata(co, bi + 2) == &dl__file_body_marker &&
        lua_type(co, bi) == LUA_TSTRING) {
        /* body is a file path; then offset and length (default: the rest) */
        const char *path = lua_tostring(co, bi);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        /* a 7th value true: a temporary copy, gone once open (the fd keeps it),
         * whether or not it can be sent */
        if (fd >= 0 && n >= bi + 5 && lua_toboolean(co, bi + 5))
            unlink(path);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            if (fd >= 0)
                close(fd);
            dl_buf_free(&rb.hdrs);
            respond_500(t, "cannot open the file to send");
            task_free(t, 0);
            return;
        }
        uint64_t size = (uint64_t)st.st_size;
        uint64_t off = n >= bi + 3 ? (uint64_t)DL_MAX(0, lua_tonumber(co, bi + 3)) : 0;
        uint64_t len = n >= bi + 4 && !lua_isnil(co, bi + 4)
                           ? (uint64_t)DL_MAX(0, lua_tonumber(co, bi + 4)) : size - DL_MIN(off, size);
        if (off > size || len > size - off) {
            close(fd);
            dl_buf_free(&rb.hdrs);
            respond_500(t, "file range outside the file");
            task_free(t, 0);
            return;
        }
        rb.resp.has_file = 1;
        rb.resp.file_fd = fd;
        rb.resp.file_off = off;
        rb.resp.file_len = len;
        if (rb.resp.content_type == NULL) {
            rb.resp.content_type = "application/octet-stream";
            rb.resp.content_type_len = 24;
        }
        rb.resp.body = NULL;
        dl_req_respond(req, &rb.resp);
        dl_buf_free(&rb.hdrs);
        task_free(t, 0);
        return;
    }

    dl_buf_t *out = &vm->scratch;
    dl_buf_reset(out);
    int bt = n >= bi ? lua_type(co, bi) : LUA_TNIL;
    if (bt == LUA_TNIL) {
        /* nothing, `return nil` or `return nil, nil[, headers]`: no content;
         * an explicit status with no body keeps its status */
        if (bi == 1)
            rb.resp.status = 204;
    } else if (bt == LUA_TSTRING) {
        rb.resp.body = lua_tolstring(co, bi, &rb.resp.body_len);
        if (rb.resp.content_type == NULL) {
            rb.resp.content_type = "text/plain; charset=utf-8";
            rb.resp.content_type_len = 25;
        }
    } else {
        char err[160];
        const char *ct;
        size_t ctlen;
        int rc = dl_resp_codec(req, &ct, &ctlen) == DL_CODEC_MSGPACK
                     ? dl_msgpack_encode(co, bi, out, err, sizeof(err))
                     : dl_json_encode(co, bi, out, err, sizeof(err));
        if (rb.resp.content_type == NULL) {
            rb.resp.content_type = ct;
            rb.resp.content_type_len = ctlen;
        }
        if (rc != 0) {
            dl_buf_free(&rb.hdrs);
            char msg[220];
            snprintf(msg, sizeof(msg), "cannot encode the response: %s", err);
            respond_500(t, msg);
            task_free(t, 0);
            return;
        }
        rb.resp.body = out->data;
        rb.resp.body_len = out->len;
    }
    req->task = NULL;
    dl_req_respond(req, &rb.resp);
    dl_buf_free(&rb.hdrs);
    /* keep the encoder buffer unless one huge response grew it */
    if (out->cap > (1u << 20))
        dl_buf_free(out);
    task_free(t, 1);
}

/* =============================================================== dispatch */

static int has_prefix_ci(const char *s, size_t len, const char *p)
{
    size_t pl = strlen(p);
    return len >= pl && dl_strncasecmp_eq(s, pl, p, pl);
}

/* What push_form_kv() fills: the table on top of L, and the values it may
 * still add (SIZE_MAX: no limit). */
typedef struct {
    lua_State *L;
    size_t left;
} form_t;

static int push_form_kv(const char *k, size_t klen, const char *v, size_t vlen, void *arg);

/* An upload's fields (as a form body) and req.files. Their bytes are capped
 * (DL_UPLOAD_MAX_FIELDS_BYTES) and each costs a part header, so they need no
 * element count. */
static void push_upload(dl_req_t *req, lua_State *co)
{
    int nfields;
    const dl_buf_t *fb = dl_upload_fields(req->upload, &nfields);
    lua_newtable(co);
    form_t form = {co, SIZE_MAX};
    const char *p = fb->data;
    for (int i = 0; i < nfields; i++) {
        uint32_t kl, vl;
        memcpy(&kl, p, 4);
        const char *k = p + 4;
        memcpy(&vl, k + kl, 4);
        const char *v = k + kl + 4;
        push_form_kv(k, kl, v, vl, &form);
        p = v + vl;
    }
    lua_setfield(co, -2, "body");
    dl_upload_file_t *files;
    int n = dl_upload_files(req->upload, &files);
    lua_createtable(co, n, 0);
    for (int i = 0; i < n; i++) {
        dl_upload_file_t *f = &files[i];
        lua_createtable(co, 0, 6);
        lua_pushstring(co, f->field);
        lua_setfield(co, -2, "field");
        lua_pushstring(co, f->filename);
        lua_setfield(co, -2, "filename");
        lua_pushstring(co, f->content_type);
        lua_setfield(co, -2, "content_type");
        lua_pushnumber(co, (lua_Number)f->size);
        lua_setfield(co, -2, "size");
        lua_pushstring(co, f->sha256);
        lua_setfield(co, -2, "sha256");
        lua_pushstring(co, f->path);
        lua_setfield(co, -2, "path");
        lua_rawseti(co, -2, i + 1);
    }
    lua_setfield(co, -2, "files");
}

/* Decodes the body by Content-Type onto the stack of co. Returns 0, or with
 * nothing pushed DL_ETOOBIG (more than max_elements values: the bytes were
 * under the limit but not what they would cost decoded, about 72 bytes per
 * empty table), DL_ECODEC (malformed) or DL_ENOMEM, with a message in err. */
static int push_body(dl_req_t *req, lua_State *co, size_t max_elements, char *err, size_t errlen)
{
    if (req->body.len == 0) {
        lua_pushnil(co);
        return 0;
    }
    dl_codec_limits_t lim = {max_elements, DL_CODEC_BODY_DEPTH};
    size_t ctlen = 0;
    const char *ct = dl_req_header(req, "content-type", &ctlen);
    if (ct && (has_prefix_ci(ct, ctlen, "application/json") ||
               (ctlen > 5 && memmem(ct, ctlen, "+json", 5))))
        return dl_json_decode_limited(co, req->body.data, req->body.len, &lim, err, errlen);
    if (ct && (has_prefix_ci(ct, ctlen, "application/msgpack") ||
               has_prefix_ci(ct, ctlen, "application/x-msgpack") ||
               has_prefix_ci(ct, ctlen, "application/vnd.msgpack")))
        return dl_msgpack_decode_limited(co, req->body.data, req->body.len, &lim, err, errlen);
    if (ct && has_prefix_ci(ct, ctlen, "application/x-www-form-urlencoded")) {
        /* the table is one value, like a decoded map */
        form_t form = {co, max_elements > 0 ? max_elements - 1 : SIZE_MAX};
        lua_newtable(co);
        int rc = dl_parse_query(req->body.data, req->body.len, 1, push_form_kv, &form);
        if (rc != 0) {
            lua_pop(co, 1);
            if (rc == DL_ETOOBIG)
                snprintf(err, errlen, "more than %zu elements", max_elements);
            else
                snprintf(err, errlen, "%s", dl_strerror(rc));
        }
        return rc;
    }
    lua_pushlstring(co, req->body.data, req->body.len);
    return 0;
}

static void handler_route(void *arg, dl_req_t *r)
{
    dl_vm_route(arg, r);
}

static int handler_precheck(void *arg, dl_req_t *r, char *msg, size_t msglen)
{
    return dl_vm_precheck(arg, r, msg, msglen);
}

static void handler_dispatch(void *arg, dl_req_t *r)
{
    dl_vm_dispatch(arg, r);
}

static void handler_unpin(void *arg, dl_req_t *r)
{
    dl_vm_unpin(arg, r);
}

void dl_vm_handler(dl_vm_t *vm, dl_handler_t *h)
{
    h->arg = vm;
    h->route = handler_route;
    h->precheck = handler_precheck;
    h->dispatch = handler_dispatch;
    h->unpin = handler_unpin;
}

void dl_vm_dispatch(dl_vm_t *vm, dl_req_t *req)
{
    dl_route_t *route = req->route;
    dl_task_t *t = task_new(vm, req);
    if (t == NULL) {
        dl_req_respond_error(req, 503, "out of memory");
        return;
    }
    req->task = t;
    lua_State *co = t->co;
    lua_checkstack(co, 8);
    lua_rawgeti(co, LUA_REGISTRYINDEX, route->handler_ref);

    /* the request table: eager cheap fields, lazy query/headers via __index */
    lua_createtable(co, 0, 8);
    lua_pushlightuserdata(co, &req_key);
    lua_pushlightuserdata(co, req);
    lua_rawset(co, -3);
    lua_pushstring(co, req->method_name);
    lua_setfield(co, -2, "method");
    lua_pushlstring(co, req->head.data, req->path_len);
    lua_setfield(co, -2, "path");
    lua_pushstring(co, req->id);
    lua_setfield(co, -2, "id");
    /* params only when the route has some; __index makes an empty one on demand */
    if (req->match.n_params > 0)
        lua_createtable(co, 0, req->match.n_params);
    for (int i = 0; i < req->match.n_params; i++) {
        dl_route_param_t *p = &req->match.params[i];
        lua_pushlstring(co, p->name, p->name_len);
        char *v = dl_strndup(p->value, p->value_len);
        if (v) {
            size_t vl = dl_url_decode(v, p->value_len, 0);
            lua_pushlstring(co, v, vl);
            dl_free(v);
        } else {
            lua_pushlstring(co, p->value, p->value_len);
        }
        lua_rawset(co, -3);
    }
    if (req->match.n_params > 0)
        lua_setfield(co, -2, "params");
    if (req->upload) {
        push_upload(req, co);
    } else {
        char err[200];
        int rc = push_body(req, co, vm->cfg->max_body_elements, err, sizeof(err));
        if (rc != 0) {
            char msg[260];
            int st = 400;
            const char *what = "malformed request body: ";
            if (rc == DL_ETOOBIG) {
                st = 413;
                what = "request body has ";
            } else if (rc == DL_ENOMEM) {
                st = 503;
                what = "request body: ";
            }
            snprintf(msg, sizeof(msg), "%s%s", what, err);
            lua_settop(co, 0);
            req->task = NULL;
            task_free(t, 1);
            dl_req_respond_error(req, st, msg);
            return;
        }
        lua_setfield(co, -2, "body");
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->req_mt_ref);
    lua_setmetatable(co, -2);
    lua_pushvalue(co, -1);
    req->table_ref = luaL_ref(co, LUA_REGISTRYINDEX);
    dl_task_resume(t, 1);
}

/* ======================================================= lazy req fields */

static int push_form_kv(const char *k, size_t klen, const char *v, size_t vlen, void *arg)
{
    form_t *form = arg;
    lua_State *L = form->L;
    if (form->left == 0)
        return DL_ETOOBIG;
    form->left--;
    lua_pushlstring(L, k, klen);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushlstring(L, v, vlen);
        lua_rawset(L, -3);
    } else if (t == LUA_TTABLE) {
        /* a third or later value for this key */
        lua_pushlstring(L, v, vlen);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 2);
    } else {
        /* a repeated key becomes an array of its values */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushlstring(L, v, vlen);
        lua_rawseti(L, -2, 2);
        lua_rawset(L, -3);
    }
    return 0;
}

static int headers_index(lua_State *L)
{
    /* case-insensitive look-up: keys are stored lower-case */
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    if (k == NULL || n > 256)
        return 0;
    char low[257];
    for (size_t i = 0; i < n; i++)
        low[i] = (char)dl_tolower((unsigned char)k[i]);
    lua_pushlstring(L, low, n);
    lua_rawget(L, 1);
    return 1;
}

static void push_headers(lua_State *L, dl_req_t *req)
{
    lua_createtable(L, 0, req->n_headers);
    char low[256];
    for (int i = 0; i < req->n_headers; i++) {
        dl_header_t *h = &req->headers[i];
        const char *name = req->head.data + h->name_off;
        size_t nl = DL_MIN(h->name_len, sizeof(low));
        for (size_t j = 0; j < nl; j++)
            low[j] = (char)dl_tolower((unsigned char)name[j]);
        lua_pushlstring(L, low, nl);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, req->head.data + h->value_off, h->value_len);
        } else {
            /* repeated headers join with ", " (RFC 9110 5.3) */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, req->head.data + h->value_off, h->value_len);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

/* __index of request tables: query, headers, raw_body, built on first use. */
int dl__req_index(lua_State *L)
{
    lua_pushlightuserdata(L, &req_key);
    lua_rawget(L, 1);
    dl_req_t *req = lua_touserdata(L, -1);
    lua_pop(L, 1);
    const char *k = lua_tostring(L, 2);
    if (req == NULL || k == NULL)
        return 0;
    if (strcmp(k, "query") == 0) {
        /* the target's length is capped (max_uri), so its pairs need no count */
        form_t form = {L, SIZE_MAX};
        lua_newtable(L);
        if (req->url_len > req->path_len + 1)
            dl_parse_query(req->head.data + req->path_len + 1, req->url_len - req->path_len - 1,
                           0, push_form_kv, &form);
    } else if (strcmp(k, "headers") == 0) {
        push_headers(L, req);
    } else if (strcmp(k, "params") == 0) {
        lua_newtable(L);
    } else if (strcmp(k, "raw_body") == 0) {
        lua_pushlstring(L, req->body.data ? req->body.data : "", req->body.len);
    } else if (strcmp(k, "target") == 0) {
        lua_pushlstring(L, req->head.data, req->url_len);
    } else if (strcmp(k, "http_version") == 0) {
        lua_pushstring(L, req->http_major == 2 ? "2" : req->http_minor == 0 ? "1.0" : "1.1");
    } else if (strcmp(k, "route") == 0) {
        lua_pushstring(L, req->route ? req->route->pattern : "");
    } else {
        return 0;
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* cached for the next access */
    return 1;
}

/* ==================================================== route registration */

/* core._route(methods_mask, pattern, opts, handler) -> true | nil, err */
int dl__route(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    unsigned methods = (unsigned)luaL_checkinteger(L, 1);
    const char *pattern = luaL_checkstring(L, 2);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    if (vm == NULL || vm->loading == NULL) {
        return dl_lua_fail(L, "routes can only be declared while the app loads", NULL);
    }
    size_t body_limit = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "body_limit");
        if (!lua_isnil(L, -1)) {
            lua_Number v = lua_tonumber(L, -1);
            if (v <= 0) {
                return dl_lua_fail(L, "body_limit must be a positive number of bytes", NULL);
            }
            body_limit = (size_t)v;
        }
        lua_pop(L, 1);
    }
    /* upload = true | {max_bytes = N}: multipart bodies streamed to files */
    size_t upload_limit = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "upload");
        if (lua_toboolean(L, -1)) {
            upload_limit = DL_UPLOAD_DEFAULT_MAX;
            if (lua_istable(L, -1)) {
                lua_getfield(L, -1, "max_bytes");
                if (!lua_isnil(L, -1)) {
                    lua_Number v = lua_tonumber(L, -1);
                    if (v <= 0) {
                        return dl_lua_fail(
                            L, "upload.max_bytes must be a positive number of bytes", NULL);
                    }
                    upload_limit = (size_t)v;
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    dl_route_t *r = dl_calloc(1, sizeof(*r));
    if (r == NULL || (r->pattern = dl_strdup(pattern)) == NULL) {
        dl_free(r);
        return luaL_error(L, "out of memory");
    }
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "_precheck"); /* set by scripts/devloop/routing.lua for auth */
        if (lua_isfunction(L, -1))
            r->precheck_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    r->methods = methods;
    r->body_limit = body_limit;
    r->upload_limit = upload_limit;
    char err[256];
    int rc = dl_router_add(vm->loading->router, methods, pattern, r, err, sizeof(err));
    if (rc != 0) {
        if (r->precheck_ref)
            luaL_unref(L, LUA_REGISTRYINDEX, r->precheck_ref);
        dl_free(r->pattern);
        dl_free(r);
        return dl_lua_fail(L, err, NULL);
    }
    lua_pushvalue(L, 4);
    r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    r->next = vm->loading->routes;
    vm->loading->routes = r;
    vm->loading->n_routes++;
    lua_pushboolean(L, 1);
    return 1;
}
