/*
 * embedded.h - the Lua library (the .lua files of scripts/devloop/) compiled into the binary.
 * DEVLOOP_SCRIPTS_DIR, when set, makes the runtime read them from disk instead
 * (dev builds).
 */
#ifndef DL_EMBEDDED_H
#define DL_EMBEDDED_H

#include <stddef.h>

typedef struct {
    const char *module; /* "devloop", "devloop.batch", ... */
    const char *file;   /* "init.lua" */
    const char *data;
    size_t len;
} dl_embedded_t;

extern const dl_embedded_t dl_embedded_scripts[];
/* the .lua files of routes/: the built-in routes every app gets (/metrics, /health, /stats) */
extern const dl_embedded_t dl_embedded_routes[];

#endif
