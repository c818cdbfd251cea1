/*
 * redis_server.c - a redis-server per unit test. The server is exec'd through
 * `sh -c 'exec ...'` so its pid is the one we hold; PR_SET_PDEATHSIG makes
 * the kernel kill it when the test process dies (the runner forks each test,
 * and a failed or timed-out test must not leave servers behind). Readiness is
 * a PING answered on the port, since the port opening alone races the load.
 */
#include "redis_server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dl_test_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int dl_test_redis_available(void)
{
    return access("/usr/bin/redis-server", X_OK) == 0 ||
           system("command -v redis-server >/dev/null 2>&1") == 0;
}

/* 1 when something on the port answers PING ("+PONG" or "-NOAUTH ..."). */
static int answers(int port)
{
    struct sockaddr_in sa;
    struct timeval tv = {0, 200000};
    char buf[64];
    int ok = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        write(fd, "PING\r\n", 6) == 6) {
        ssize_t n = read(fd, buf, sizeof(buf));
        ok = n > 0 && (buf[0] == '+' || buf[0] == '-') &&
             !(n >= 8 && memcmp(buf, "-LOADING", 8) == 0);
    }
    close(fd);
    return ok;
}

static pid_t spawn(const char *extra_args, int port)
{
    char cmd[1024];
    pid_t parent = getpid();
    snprintf(cmd, sizeof(cmd),
             "exec redis-server --port %d --save '' --appendonly no --bind 127.0.0.1 "
             "--daemonize no --logfile '' %s",
             port, extra_args ? extra_args : "");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        if (getenv("DL_TEST_REDIS_VERBOSE") == NULL)
            dup2(null, 2);
        if (null > 2)
            close(null);
    }
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
}

int dl_test_redis_start(const char *extra_args, int *port, pid_t *pid)
{
    int fixed = *port > 0;
    for (int attempt = 0; attempt < (fixed ? 1 : 5); attempt++) {
        int p = fixed ? *port : dl_test_free_port();
        if (p <= 0)
            continue;
        pid_t child = spawn(extra_args, p);
        if (child < 0) {
            perror("fork");
            return -1;
        }
        long long deadline = now_ms() + START_TIMEOUT_MS;
        int st;
        for (;;) {
            if (waitpid(child, &st, WNOHANG) == child)
                break; /* exited: port taken, bad option, ... */
            if (answers(p)) {
                *port = p;
                *pid = child;
                return 0;
            }
            if (now_ms() > deadline) {
                dl_test_redis_stop(child);
                break;
            }
            usleep(5000);
        }
    }
    fprintf(stderr, "# could not start redis-server %s\n", extra_args ? extra_args : "");
    return -1;
}

void dl_test_redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}
