/*
 * redis_server.h - starts a throwaway redis-server for a unit test: on a free
 * (or given) 127.0.0.1 port, no persistence, killed with the test process
 * (PR_SET_PDEATHSIG) if the test dies before dl_test_redis_stop().
 */
#ifndef DL_TEST_REDIS_SERVER_H
#define DL_TEST_REDIS_SERVER_H

#include <sys/types.h>

/**
 * Starts `redis-server --port P --save '' --appendonly no --bind 127.0.0.1`
 * plus extra_args (shell words, may be NULL) and waits until it answers PING
 * (up to 10 s). Uses *port when > 0, else picks a free port and stores it.
 * Returns 0 with *pid, or -1 (message on stderr).
 */
int dl_test_redis_start(const char *extra_args, int *port, pid_t *pid);

/** Kills (SIGKILL, which also ends a SIGSTOPped server) and reaps it. pid <= 0 is a no-op. */
void dl_test_redis_stop(pid_t pid);

/** A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int dl_test_free_port(void);

/** 1 when /usr/bin/redis-server (or redis-server on PATH) exists. */
int dl_test_redis_available(void);

#endif
