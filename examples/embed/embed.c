/*
 * embed.c - a small tool that embeds devloop: it serves an app folder from
 * its own main(), stopping on SIGTERM/SIGINT like `devloop serve`, and gives
 * the app's Lua a C module of its own ("embedtool") with one asynchronous
 * function completed from a thread of the tool.
 *
 *   devloop_embed APP_DIR [HOST:PORT]     (examples/embed/app uses embedtool)
 *   devloop_embed --version
 *
 * Built against an installed libdevloop: cc embed.c $(pkg-config --cflags --libs devloop)
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <devloop.h>
#include <lauxlib.h>
#include <lua.h>

/* ------------------------------------------------ the tool's Lua module */

typedef struct {
    dl_pending_t *pending;
    char *text;
    long ms;
} job_t;

/* another thread: waits, upper-cases, completes the suspended Lua call */
static void *upper_thread(void *arg)
{
    job_t *j = arg;
    struct timespec ts = {j->ms / 1000, (j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    for (char *p = j->text; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    dl_pending_complete(j->pending, 1, j->text, strlen(j->text));
    free(j->text);
    free(j);
    return NULL;
}

/* embedtool.upper_later(s, ms) -> S, after ms milliseconds, without blocking the worker */
static int l_upper_later(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    long ms = (long)luaL_optinteger(L, 2, 10);
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->text = malloc(len + 1)) == NULL) {
        free(j);
        return luaL_error(L, "out of memory");
    }
    memcpy(j->text, s, len + 1);
    j->ms = ms < 0 ? 0 : ms;
    j->pending = dl_pending_new(L);
    if (j->pending == NULL) {
        free(j->text);
        free(j);
        return luaL_error(L, "upper_later must be called from a handler");
    }
    pthread_t th;
    if (pthread_create(&th, NULL, upper_thread, j) != 0) {
        dl_pending_complete(j->pending, 0, "cannot start a thread", 21);
        free(j->text);
        free(j);
    } else {
        pthread_detach(th);
    }
    return lua_yield(L, 0);
}

static int l_version(lua_State *L)
{
    lua_pushstring(L, dl_version());
    return 1;
}

static int luaopen_embedtool(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"upper_later", l_upper_later}, {"version", l_version},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        /* the header's version and the linked library's */
        printf("devloop_embed: header %s, library %s\n", DEVLOOP_VERSION, dl_version());
        return strcmp(DEVLOOP_VERSION, dl_version()) == 0 ? 0 : 1;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s APP_DIR [HOST:PORT]\n", argv[0]);
        return 2;
    }
    if (dl_add_lua_module("embedtool", luaopen_embedtool) != 0) {
        fprintf(stderr, "cannot register embedtool\n");
        return 1;
    }
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = argv[1];
    cfg.workers = 1;
    if (argc > 2)
        cfg.listen[cfg.n_listen++] = argv[2];
    char err[4096];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s", err);
        return 1;
    }
    int rc = dl_runtime_run(rt, 1);
    dl_runtime_free(rt);
    return rc == 0 ? 0 : 1;
}
