/*
 * watch.c - the hot-reload file watcher.
 *
 * inotify (behind uv_fs_event on Linux) watches one folder, not a tree, so
 * every folder of the app gets its own handle and the tree is rescanned
 * after each burst to pick up new folders and drop vanished ones. Editors
 * save in three ways (write in place, write a temporary file and rename it
 * over, delete then create); all of them produce events that name a .lua
 * file, which is what triggers. Files the app reads that are not Lua (the
 * tokens file) are added one by one with dl_watch_add_file(): their folder
 * gets a handle of its own that reacts to that one name, wherever the folder
 * is. A timer restarted by every event turns a burst into one callback.
 */
#include "server/watch.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "common/internal.h"

#define MAX_DEPTH 8

typedef struct dir_watch_s {
    uv_fs_event_t ev;
    struct dl_watch_s *owner;
    struct dir_watch_s *next;
    char *path;
    char *only; /* a file added by dl_watch_add_file(): the one name that triggers */
    int seen;   /* found by the current rescan */
} dir_watch_t;

struct dl_watch_s {
    uv_loop_t *loop;
    char *root;
    uint64_t debounce_ms;
    dl_watch_cb cb;
    void *arg;
    uv_timer_t timer;
    dir_watch_t *dirs;
    int pending_closes;
    int stopping;
};

static void fire(uv_timer_t *t);

static void on_dir_closed(uv_handle_t *h)
{
    dir_watch_t *d = h->data;
    dl_watch_t *w = d->owner;
    dl_free(d->path);
    dl_free(d->only);
    dl_free(d);
    w->pending_closes--;
    if (w->stopping && w->pending_closes == 0) {
        dl_free(w->root);
        dl_free(w);
    }
}

static int relevant(const char *filename)
{
    if (filename == NULL)
        return 1;
    size_t n = strlen(filename);
    if (n >= 4 && strcmp(filename + n - 4, ".lua") == 0)
        return 1;
    /* a folder appearing or vanishing may carry .lua files with it */
    return strchr(filename, '.') == NULL;
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    dir_watch_t *d = h->data;
    dl_watch_t *w = d->owner;
    DL_UNUSED(events);
    if (w->stopping)
        return;
    if (status < 0) {
        dl_log(DL_LOG_WARN, "watch %s: %s", d->path, uv_strerror(status));
        return;
    }
    if (d->only ? filename && strcmp(filename, d->only) != 0 : !relevant(filename))
        return;
    /* the runtime's own folders at the top (pid file, database, logs) */
    if (filename && !d->only && strcmp(d->path, w->root) == 0 &&
        (strcmp(filename, "data") == 0 || strcmp(filename, "logs") == 0))
        return;
    /* every event pushes the deadline: one callback per burst of saves */
    uv_timer_start(&w->timer, fire, w->debounce_ms, 0);
}

static dir_watch_t *find_dir(dl_watch_t *w, const char *path)
{
    for (dir_watch_t *d = w->dirs; d; d = d->next)
        if (!d->only && strcmp(d->path, path) == 0)
            return d;
    return NULL;
}

/* A handle on folder path: the tree's (only == NULL) or one file's. */
static int add_dir(dl_watch_t *w, const char *path, const char *only)
{
    dir_watch_t *d = only ? NULL : find_dir(w, path);
    if (d) {
        d->seen = 1;
        return 0;
    }
    d = dl_calloc(1, sizeof(*d));
    if (d == NULL || (d->path = dl_strdup(path)) == NULL ||
        (only && (d->only = dl_strdup(only)) == NULL)) {
        if (d)
            dl_free(d->path);
        dl_free(d);
        return DL_ENOMEM;
    }
    d->owner = w;
    uv_fs_event_init(w->loop, &d->ev);
    d->ev.data = d;
    int rc = uv_fs_event_start(&d->ev, on_fs_event, path, 0);
    w->pending_closes++;
    if (rc != 0) {
        dl_log(DL_LOG_WARN, "cannot watch %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&d->ev, on_dir_closed);
        return rc;
    }
    d->seen = 1;
    d->next = w->dirs;
    w->dirs = d;
    return 0;
}

static void scan(dl_watch_t *w, const char *path, int depth)
{
    (void)add_dir(w, path, NULL);
    if (depth >= MAX_DEPTH)
        return;
    DIR *dir = opendir(path);
    if (dir == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        const char *n = de->d_name;
        if (n[0] == '.' || strcmp(n, "node_modules") == 0 ||
            (depth == 0 && (strcmp(n, "data") == 0 || strcmp(n, "logs") == 0)))
            continue;
        char sub[1024];
        if (snprintf(sub, sizeof(sub), "%s/%s", path, n) >= (int)sizeof(sub))
            continue;
        struct stat st;
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            scan(w, sub, depth + 1);
    }
    closedir(dir);
}

/* Rescans the tree: new folders get a watcher, vanished ones lose theirs. */
static void rescan(dl_watch_t *w)
{
    for (dir_watch_t *d = w->dirs; d; d = d->next)
        d->seen = d->only != NULL; /* a file's folder stays, in the tree or not */
    scan(w, w->root, 0);
    dir_watch_t **pp = &w->dirs;
    while (*pp) {
        dir_watch_t *d = *pp;
        if (!d->seen) {
            *pp = d->next;
            uv_fs_event_stop(&d->ev);
            uv_close((uv_handle_t *)&d->ev, on_dir_closed);
        } else {
            pp = &d->next;
        }
    }
}

static void fire(uv_timer_t *t)
{
    dl_watch_t *w = t->data;
    if (w->stopping)
        return;
    rescan(w);
    w->cb(w->arg);
}

int dl_watch_start(uv_loop_t *loop, const char *dir, uint64_t debounce_ms, dl_watch_cb cb,
                   void *arg, dl_watch_t **out)
{
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return DL_ENOENT;
    dl_watch_t *w = dl_calloc(1, sizeof(*w));
    if (w == NULL || (w->root = dl_strdup(dir)) == NULL) {
        dl_free(w);
        return DL_ENOMEM;
    }
    w->loop = loop;
    w->debounce_ms = debounce_ms;
    w->cb = cb;
    w->arg = arg;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    w->pending_closes = 1; /* the timer */
    scan(w, dir, 0);
    *out = w;
    return 0;
}

int dl_watch_add_file(dl_watch_t *w, const char *path)
{
    if (w == NULL || w->stopping)
        return DL_EINVAL;
    const char *slash = strrchr(path, '/');
    char dir[1024];
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else if (snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path) >= (int)sizeof(dir))
        return DL_EINVAL;
    const char *base = slash ? slash + 1 : path;
    if (*base == '\0')
        return DL_EINVAL;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return DL_ENOENT;
    return add_dir(w, dir, base);
}

static void on_timer_closed(uv_handle_t *h)
{
    dl_watch_t *w = h->data;
    w->pending_closes--;
    if (w->pending_closes == 0) {
        dl_free(w->root);
        dl_free(w);
    }
}

void dl_watch_stop(dl_watch_t *w)
{
    if (w == NULL || w->stopping)
        return;
    w->stopping = 1;
    while (w->dirs) {
        dir_watch_t *d = w->dirs;
        w->dirs = d->next;
        uv_fs_event_stop(&d->ev);
        uv_close((uv_handle_t *)&d->ev, on_dir_closed);
    }
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

DL_TEST_HOOK int dl_watch_count(const dl_watch_t *w)
{
    int n = 0;
    for (const dir_watch_t *d = w ? w->dirs : NULL; d; d = d->next)
        n++;
    return n;
}
