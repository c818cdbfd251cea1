/*
 * watch.h - watches an app folder tree for changed Lua files (uv_fs_event on
 * every folder, since inotify is not recursive) and reports each burst of
 * changes once, after a quiet period (debounce).
 */
#ifndef DL_WATCH_H
#define DL_WATCH_H

#include <uv.h>

typedef struct dl_watch_s dl_watch_t;
typedef void (*dl_watch_cb)(void *arg);

/**
 * Starts watching dir and its subfolders (hidden ones, data/ and
 * node_modules/ excepted) on loop. cb runs on loop's thread once per burst of
 * changes to .lua files, debounce_ms after the last one. Returns 0 or a
 * negative uv/DL error; *out is freed by dl_watch_stop().
 */
int dl_watch_start(uv_loop_t *loop, const char *dir, uint64_t debounce_ms, dl_watch_cb cb,
                   void *arg, dl_watch_t **out);

/**
 * Also reports changes to the file at path (created, written, renamed over
 * or deleted), wherever it is: its folder gets a handle that reacts to that
 * name only. The folder must exist (DL_ENOENT otherwise); the file need not.
 */
int dl_watch_add_file(dl_watch_t *w, const char *path);

/** Stops watching; memory is freed once the handles have closed. NULL is a no-op. */
void dl_watch_stop(dl_watch_t *w);

/** Number of folders being watched (tests). */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int dl_watch_count(const dl_watch_t *w);
#endif

#endif
