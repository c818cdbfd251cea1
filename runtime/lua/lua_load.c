/*
 * lua_load.c - loading an app folder into a generation: app.lua, routes/
 * (with its subfolders) and jobs/, each module in its own environment, then
 * the built-in routes; every error as one line that names the file, the line
 * and the cause. Also the runtime's hooks into its Lua library around a load
 * (_begin_load, _end_load, _abort_load) and after it (start hooks, reloads).
 */
#include <dirent.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua/embedded.h"
#include "lua/lua_vm.h"
#include "lua/lua_vm_internal.h"

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

/* ============================================================ load errors */

/* The error handler of a module's load; its upvalue is the module's chunk
 * source ("@path" or "=path"). Returns { message with traceback, line }:
 * line is where the module itself was when an error raised in another file
 * (a lib/ module it requires, a function it calls) happened, else 0. */
static int traceback_handler(lua_State *L)
{
    lua_settop(L, 1);
    const char *msg = dl_lua_errtext(L); /* replaces the value at 1: stays anchored */
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
        dl_gen_free(vm, g);
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
        dl_vm_reap_generations(vm);
    }
    return 0;
}

/* ====================================================== after a load */

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
