/*
 * fuzz_runtime.h - a real runtime for the connection harnesses (http1, h2):
 * tests/fuzz/app served in process on a loop of the harness
 * (dl_runtime_attach), with no listener; each input goes through a loopback
 * TCP connection its one worker serves as any other (http1/conn.c).
 */
#ifndef DL_FUZZ_RUNTIME_H
#define DL_FUZZ_RUNTIME_H

#include "http1/conn.h"
#include "fuzz.h"
#include "server/worker.h"

/* What one connection wrote: bytes, and whether (and how often) it closed. */
typedef struct {
    dl_fuzz_str_t out;
    int closed;
} dl_fuzz_sink_t;

/*
 * The worker, started on first use: the app copied to a temporary folder
 * (its data/ and the SQLite file stay out of the tree), small limits so
 * short inputs reach them, logging at error level without files. Stopped and
 * removed at exit.
 */
dl_worker_t *dl_fuzz_worker(void);

/* Lets the worker's loop run what is ready (parked handlers, closes), without blocking. */
void dl_fuzz_pump(void);

/*
 * One connection fed the payload cut as split says (bytewise: a byte at a
 * time; split NULL: whole). h2: the connection may turn to HTTP/2 on the
 * preface, as a plain listener's does. The request-id generator restarts
 * from a fixed seed first, so runs are comparable. Fills sink (free its out).
 */
void dl_fuzz_conn_run(const uint8_t *payload, size_t len, const dl_fuzz_split_t *split,
                      int bytewise, int h2, dl_fuzz_sink_t *sink);

#endif
