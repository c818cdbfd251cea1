/*
 * test_watch.c - runtime/server/watch.c through watch.h, on a temporary app
 * folder and the loop: which folders are watched (hidden ones, node_modules/
 * and the top data/ and logs/ are not), a saved .lua file reaching the
 * callback once per burst after the debounce, files that are not Lua left
 * alone, new and vanished folders picked up by the rescan, a file added with
 * dl_watch_add_file() wherever it is, the refusals, and stopping (also from
 * the callback) with every handle closed. Nothing here measures time: the
 * loop runs until the callback comes, or for a while to show it does not.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/internal.h"
#include "server/watch.h"
#include "unit.h"

#define DEBOUNCE_MS 30

typedef struct {
    int calls;
    dl_watch_t *stop_me; /* stopped from the callback when set */
} seen_t;

static void on_change(void *arg)
{
    seen_t *s = arg;
    s->calls++;
    if (s->stop_me != NULL) {
        dl_watch_stop(s->stop_me);
        s->stop_me = NULL;
    }
}

static void on_tick(uv_timer_t *t)
{
    DL_UNUSED(t);
}

/* Runs the loop until s->calls reaches want, or for at most ms. */
static void run_until(uv_loop_t *loop, seen_t *s, int want, uint64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + ms;
    while (s->calls < want && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Waits for the next callback (10 s at most); 1 when it came. */
static int next_call(uv_loop_t *loop, seen_t *s)
{
    int want = s->calls + 1;
    run_until(loop, s, want, 10000);
    return s->calls >= want;
}

/* Runs the loop well past the debounce; 1 when no callback came. */
static int quiet(uv_loop_t *loop, seen_t *s)
{
    int before = s->calls;
    run_until(loop, s, before + 1, DEBOUNCE_MS * 10);
    return s->calls == before;
}

static void put(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        DL_FAIL_AT("cannot write %s", path);
        return;
    }
    fputs(text, f);
    fclose(f);
}

static void mk(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (mkdir(path, 0755) != 0)
        DL_FAIL_AT("cannot make %s", path);
}

static void rm_rf(const char *dir)
{
    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        DL_FAIL_AT("%s failed", cmd);
}

/* A temporary app folder: routes/, routes/api/, lib/ and the ones not watched. */
static void make_app(char *root)
{
    strcpy(root, "/tmp/dl-unit-watch-XXXXXX");
    if (mkdtemp(root) == NULL) {
        DL_FAIL_AT("mkdtemp");
        return;
    }
    mk(root, "routes");
    mk(root, "routes/api");
    mk(root, "lib");
    mk(root, ".git");
    mk(root, "node_modules");
    mk(root, "data");
    mk(root, "logs");
    mk(root, "lib/data"); /* data/ is skipped at the top only */
    mk(root, "lib/.cache");
    put(root, "app.lua", "return {}\n");
}

static void finish(uv_loop_t *loop, dl_watch_t *w, const char *root)
{
    dl_watch_stop(w);
    uv_run(loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(loop), 0);
    rm_rf(root);
}

DL_TEST(watch_refuses_what_is_not_a_folder)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    dl_watch_t *w = (dl_watch_t *)1;
    EXPECT_EQ(dl_watch_start(&loop, "/nonexistent/dl-unit-watch", 10, on_change, &s, &w),
              DL_ENOENT);
    EXPECT(w == NULL);
    w = (dl_watch_t *)1;
    EXPECT_EQ(dl_watch_start(&loop, "/etc/hostname", 10, on_change, &s, &w), DL_ENOENT);
    EXPECT(w == NULL);
    EXPECT_EQ(dl_watch_count(NULL), 0);
    dl_watch_stop(NULL);
    EXPECT_EQ(dl_watch_add_file(NULL, "/tmp/x"), DL_EINVAL);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

DL_TEST(watch_folders_watched)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64];
    make_app(root);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    /* root, routes, routes/api, lib, lib/data */
    EXPECT_EQ(dl_watch_count(w), 5);
    EXPECT_EQ(s.calls, 0);
    finish(&loop, w, root);
}

DL_TEST(watch_lua_save_reaches_the_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64], dir[128];
    make_app(root);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    EXPECT(quiet(&loop, &s)); /* nothing happens by itself */

    /* written in place, deep in the tree */
    snprintf(dir, sizeof(dir), "%s/routes/api", root);
    put(dir, "users.lua", "return 1\n");
    EXPECT(next_call(&loop, &s));
    EXPECT_EQ(s.calls, 1);

    /* a burst of saves: one callback */
    snprintf(dir, sizeof(dir), "%s/lib", root);
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "m%d.lua", i);
        put(dir, name, "return 2\n");
    }
    EXPECT(next_call(&loop, &s));
    EXPECT(quiet(&loop, &s));
    EXPECT_EQ(s.calls, 2);

    /* written to a temporary file, then renamed over */
    char tmp[256], dst[256];
    snprintf(tmp, sizeof(tmp), "%s/app.lua.tmp~", root);
    snprintf(dst, sizeof(dst), "%s/app.lua", root);
    put(root, "app.lua.tmp~", "return {x = 1}\n");
    EXPECT_EQ(rename(tmp, dst), 0);
    EXPECT(next_call(&loop, &s));

    /* deleted */
    EXPECT_EQ(unlink(dst), 0);
    EXPECT(next_call(&loop, &s));
    EXPECT_EQ(s.calls, 4);
    finish(&loop, w, root);
}

DL_TEST(watch_ignores_other_files_and_folders)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64], dir[128];
    make_app(root);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    /* not Lua */
    put(root, "notes.txt", "x");
    put(root, "config.json", "{}");
    snprintf(dir, sizeof(dir), "%s/routes", root);
    put(dir, "readme.md", "x");
    put(dir, "x.lua.bak", "x");
    /* in folders not watched */
    snprintf(dir, sizeof(dir), "%s/data", root);
    put(dir, "x.lua", "x");
    snprintf(dir, sizeof(dir), "%s/logs", root);
    put(dir, "x.lua", "x");
    snprintf(dir, sizeof(dir), "%s/node_modules", root);
    put(dir, "x.lua", "x");
    snprintf(dir, sizeof(dir), "%s/.git", root);
    put(dir, "x.lua", "x");
    snprintf(dir, sizeof(dir), "%s/lib/.cache", root);
    put(dir, "x.lua", "x");
    EXPECT(quiet(&loop, &s));
    EXPECT_EQ(s.calls, 0);
    /* but lib/data is an ordinary folder below the top */
    snprintf(dir, sizeof(dir), "%s/lib/data", root);
    put(dir, "x.lua", "x");
    EXPECT(next_call(&loop, &s));
    finish(&loop, w, root);
}

DL_TEST(watch_new_and_vanished_folders)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64], dir[128];
    make_app(root);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    EXPECT_EQ(dl_watch_count(w), 5);
    /* a new folder is a change, and the rescan watches it */
    mk(root, "routes/admin");
    EXPECT(next_call(&loop, &s));
    EXPECT_EQ(dl_watch_count(w), 6);
    snprintf(dir, sizeof(dir), "%s/routes/admin", root);
    put(dir, "index.lua", "return 1\n");
    EXPECT(next_call(&loop, &s));
    /* a folder that goes loses its handle */
    rm_rf(dir);
    EXPECT(next_call(&loop, &s));
    EXPECT_EQ(dl_watch_count(w), 5);
    finish(&loop, w, root);
}

DL_TEST(watch_runtime_folders_at_the_top_are_not_changes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64];
    strcpy(root, "/tmp/dl-unit-watch-XXXXXX");
    REQUIRE(mkdtemp(root) != NULL);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    EXPECT_EQ(dl_watch_count(w), 1);
    mk(root, "data");
    mk(root, "logs");
    EXPECT(quiet(&loop, &s));
    mk(root, "lib");
    EXPECT(next_call(&loop, &s));
    EXPECT_EQ(dl_watch_count(w), 2); /* lib; data and logs still not watched */
    finish(&loop, w, root);
}

DL_TEST(watch_added_file)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64], other[64], path[256];
    make_app(root);
    strcpy(other, "/tmp/dl-unit-watch-tok-XXXXXX");
    REQUIRE(mkdtemp(other) != NULL);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    /* the file need not exist yet; its folder must */
    snprintf(path, sizeof(path), "%s/tokens.json", other);
    EXPECT_EQ(dl_watch_add_file(w, path), 0);
    EXPECT_EQ(dl_watch_count(w), 6);
    snprintf(path, sizeof(path), "%s/missing/tokens.json", other);
    EXPECT_EQ(dl_watch_add_file(w, path), DL_ENOENT);
    snprintf(path, sizeof(path), "%s/", other);
    EXPECT_EQ(dl_watch_add_file(w, path), DL_EINVAL); /* no file name */
    char huge[2000];
    memset(huge, 'd', sizeof(huge));
    huge[0] = '/';
    strcpy(huge + sizeof(huge) - 8, "/x.json");
    EXPECT_EQ(dl_watch_add_file(w, huge), DL_EINVAL); /* a folder name too long */
    EXPECT_EQ(dl_watch_count(w), 6);

    /* other files in its folder are not changes */
    put(other, "other.json", "{}");
    put(other, "other.lua", "x");
    EXPECT(quiet(&loop, &s));
    /* created, written, deleted */
    put(other, "tokens.json", "{}");
    EXPECT(next_call(&loop, &s));
    put(other, "tokens.json", "{\"a\": 1}");
    EXPECT(next_call(&loop, &s));
    snprintf(path, sizeof(path), "%s/tokens.json", other);
    EXPECT_EQ(unlink(path), 0);
    EXPECT(next_call(&loop, &s));
    /* the rescans after those calls kept its handle */
    EXPECT_EQ(dl_watch_count(w), 6);
    put(other, "tokens.json", "{}");
    EXPECT(next_call(&loop, &s));
    EXPECT_EQ(s.calls, 4);

    /* a file inside the tree: a handle of its own on that folder */
    snprintf(path, sizeof(path), "%s/tokens.json", root);
    EXPECT_EQ(dl_watch_add_file(w, path), 0);
    put(root, "tokens.json", "{}");
    EXPECT(next_call(&loop, &s));
    finish(&loop, w, root);
    rm_rf(other);
}

/* Stopped from its own callback (as a reload that replaces the watcher
 * might): every handle closes, the loop ends clean. */
DL_TEST(watch_stop_from_the_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64];
    make_app(root);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, DEBOUNCE_MS, on_change, &s, &w) == 0);
    s.stop_me = w;
    put(root, "app.lua", "return 3\n");
    EXPECT(next_call(&loop, &s));
    /* stopped: later saves reach nothing, a second stop is a no-op once closed */
    put(root, "app.lua", "return 4\n");
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(s.calls, 1);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    rm_rf(root);
}

/* Stopped with a callback pending: it never runs. */
DL_TEST(watch_stop_with_a_change_pending)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char root[64];
    make_app(root);
    seen_t s = {0};
    dl_watch_t *w = NULL;
    REQUIRE(dl_watch_start(&loop, root, 60000, on_change, &s, &w) == 0);
    put(root, "app.lua", "return 5\n");
    /* let the event arrive and start the (long) debounce */
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    dl_watch_stop(w);
    EXPECT_EQ(dl_watch_add_file(w, "/tmp/x"), DL_EINVAL); /* stopping: refused */
    uv_run(&loop, UV_RUN_DEFAULT); /* returns: nothing left open */
    EXPECT_EQ(s.calls, 0);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    rm_rf(root);
}
