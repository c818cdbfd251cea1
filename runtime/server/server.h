/*
 * server.h - the runtime: configuration, listening sockets, the workers and
 * the main thread's signal handling.
 */
#ifndef DL_SERVER_H
#define DL_SERVER_H

#include <sys/socket.h>
#include <uv.h>

#include "common/internal.h"
#include "server/worker.h"

struct dl_runtime_s {
    dl_config_t cfg;
    char *app_dir;
    char *listen[DL_MAX_LISTEN];
    dl_worker_shared_t shared;   /* what the workers read (worker.h), and the worker list */
    char *pid_file_opt;   /* cfg.pid_file's copy (NULL: the default) */
    uv_loop_t loop;       /* main thread: signals and stop requests */
    uv_async_t stop_async;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_async_t reload_async;
    struct dl_watch_s *watch;
    uv_mutex_t status_lock;
    dl_reload_status_t status;
    char *pid_file;              /* the pid file we hold (pid_fd's lock), else NULL */
    int pid_fd;
    char pid_note[1400];         /* a stale pid file replaced, logged once the logger runs */
    struct sockaddr_storage laddr[DL_MAX_LISTEN]; /* each listener's address */
    socklen_t laddr_len[DL_MAX_LISTEN];
    int first_fd[DL_MAX_LISTEN]; /* worker 0's socket, bound by dl_runtime_new(); -1 after */
    int lock_fd[DL_MAX_LISTEN];  /* the address's lock for the runtime's life; -1 none */
    uv_poll_t lock_poll[DL_MAX_LISTEN];
    int n_lock_polls;
    int loop_ready;
    int serving;                 /* workers run: in-process requests are taken */
    void *host_embed;            /* host-loop mode (dl_runtime_attach) */
    int stop_requested;
    uint64_t stop_started; /* uv_hrtime() when the workers were told to stop */
    int handle_signals;
};

#endif
