/*
 * log.h - the asynchronous, buffered logger. Each registered thread owns a
 * lock-free single-producer/single-consumer ring; one writer thread drains all
 * rings and writes console lines to stderr and JSON lines to combined.log and
 * error.log, rotating by size. Producers never block: a record that does not
 * fit is dropped and counted. The printf-style front end is dl_log()/dl_log_req()
 * in internal.h, which check dl_log_min_level before evaluating arguments.
 */
#ifndef DL_LOG_H
#define DL_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "devloop.h"

/* Limits of one record; longer parts are cut (reqid, message) or left out (fields). */
#define DL_LOG_MAX_REQID 128
#define DL_LOG_MAX_MSG 16384
#define DL_LOG_MAX_FIELDS 16384

typedef struct {
    int level;              /* minimum level (LOG_LEVEL / --log-level), sets dl_log_min_level */
    const char *dir;        /* folder for error.log and combined.log; NULL or "": no files */
    size_t max_file_bytes;  /* rotate at this size, default 10 MiB; 0: never rotate */
    int max_files;          /* rotated files kept per log: combined.log.1 .. .N, default 10 */
    size_t ring_bytes;      /* capacity of each thread's ring, default 1 MiB (power of 2 up) */
    int console;            /* 1: also write to stderr */
    int color;              /* -1: when stderr is a TTY, 0 never, 1 always */
    const char *service;    /* "service" field of JSON lines, default "devloop" */
} dl_log_config_t;

/** Minimum level of records kept; read by the dl_log() macros before anything else. */
extern int dl_log_min_level;

/** Fills *cfg with the defaults above (level info, console on, color auto, no files). */
void dl_log_config_init(dl_log_config_t *cfg);

/**
 * Starts the writer thread and installs flushing handlers for SIGSEGV, SIGBUS,
 * SIGFPE, SIGILL and SIGABRT (the previous handlers are restored by
 * dl_logger_stop() and chained to after a crash flush). Creates cfg->dir when
 * missing and opens its files. Strings in cfg are copied. Call from the main
 * thread before the workers start. Returns 0, DL_EINVAL when already started,
 * or a DL_E* (negated errno) when a file or the thread cannot be set up.
 * Before start and after stop, records are written synchronously to stderr.
 */
int dl_logger_start(const dl_log_config_t *cfg);

/**
 * Gives the calling thread its own ring (ring_bytes of the running logger, or
 * 1 MiB before start). Worker threads call it first thing; threads that never
 * do share one mutex-protected fallback ring. A second call is a no-op.
 */
void dl_log_thread_init(void);

/**
 * Hands the calling thread's ring back; records still in it are written (by the
 * writer, or synchronously when the logger is not running). Call before the
 * thread ends, or its ring leaks.
 */
void dl_log_thread_exit(void);

/**
 * Queues one record, timestamped now (ms). reqid may be NULL; fields_json is
 * the text of a JSON object ("{...}") merged at the top level of the JSON line,
 * or NULL. A member named like one of the line's own keys (timestamp, level,
 * message, service, requestId) or like an earlier member is written with "_"
 * in front, as many as make it unique (level -> _level, __level if the record
 * has a _level too); fields that are not an object, or too odd to split, go
 * in as one string, "fields". The console prints reqid, msg and fields_json
 * with control characters (C0, DEL, C1) and line-breaking or reordering
 * characters (U+2028..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C) shown
 * as \n, \r, \t, \xNN or \uXXXX, and ill-formed UTF-8 as \xNN: one record
 * is one line. Borrows every argument for the
 * call only. Records below dl_log_min_level are ignored. Never blocks: when
 * the ring is full the record is dropped and counted. Any thread.
 */
/* OR'ed into dl_log_emit's level: the record goes to the files only (when
 * there are files), not the console; the access log uses it. */
#define DL_LOG_FILE_ONLY 0x100

void dl_log_emit(int level, const char *reqid, const char *msg, size_t mlen,
                 const char *fields_json, size_t flen);

/**
 * Returns once every record queued before the call has been handed to the
 * kernel with write(2) (no fsync). No-op when the logger is not running.
 * Must not be called from the fatal-signal path.
 */
void dl_logger_flush(void);

/**
 * Flushes, stops the writer thread, closes the files and restores the signal
 * handlers. Rings of threads that are still registered stay valid; their
 * records are then written synchronously. Call after the workers have stopped.
 */
void dl_logger_stop(void);

/** Records dropped because a ring was full (all threads, since the process started). */
uint64_t dl_log_dropped(void);

/** Records written (formatted and handed to every enabled sink, or stderr when stopped). */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
uint64_t dl_log_written(void);
#endif

#endif /* DL_LOG_H */
