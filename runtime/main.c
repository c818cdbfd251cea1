/*
 * main.c - the `devloop` program: a thin command line over libdevloop.
 *
 *   devloop serve APP_DIR [--listen HOST:PORT]... [--workers N] [--log-level L]
 *   devloop check APP_DIR
 *   devloop version
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <luajit.h>
#include <uv.h>

#include "devloop.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: devloop serve APP_DIR [--listen HOST:PORT]... [--workers N] [--log-level L]\n"
            "                     [--no-watch] [--pid-file FILE]\n"
            "       devloop check APP_DIR\n"
            "       devloop reload APP_DIR | --pid-file FILE\n"
            "       devloop version\n");
}

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 100000)
        return -1;
    *out = (int)v;
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    dl_config_t cfg;
    dl_config_init(&cfg);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;
        if (strcmp(a, "--listen") == 0 || strcmp(a, "-l") == 0) {
            if (val == NULL || cfg.n_listen >= DL_MAX_LISTEN) {
                fprintf(stderr, "devloop: --listen needs HOST:PORT (at most %d)\n", DL_MAX_LISTEN);
                return 2;
            }
            cfg.listen[cfg.n_listen++] = val;
            i++;
        } else if (strcmp(a, "--workers") == 0 || strcmp(a, "-w") == 0) {
            if (val == NULL || parse_int(val, &cfg.workers) != 0 || cfg.workers < 1) {
                fprintf(stderr, "devloop: --workers needs a positive number\n");
                return 2;
            }
            i++;
        } else if (strcmp(a, "--log-level") == 0) {
            if (val == NULL || dl_log_level_parse(val) < 0) {
                fprintf(stderr, "devloop: --log-level needs debug, info, warn or error\n");
                return 2;
            }
            cfg.log_level = dl_log_level_parse(val);
            i++;
        } else if (strcmp(a, "--no-watch") == 0) {
            cfg.watch = 0;
        } else if (strcmp(a, "--pid-file") == 0) {
            if (val == NULL) {
                fprintf(stderr, "devloop: --pid-file needs a path\n");
                return 2;
            }
            cfg.pid_file = val;
            i++;
        } else if (strcmp(a, "--tls-cert") == 0 || strcmp(a, "--tls-key") == 0) {
            fprintf(stderr, "devloop: %s: TLS is not available in this build yet\n", a);
            return 2;
        } else if (a[0] == '-') {
            fprintf(stderr, "devloop: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (cfg.app_dir == NULL) {
            cfg.app_dir = a;
        } else {
            fprintf(stderr, "devloop: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (cfg.app_dir == NULL) {
        usage(stderr);
        return 2;
    }
    char err[8192];
    dl_runtime_t *rt;
    int rc = dl_runtime_new(&cfg, &rt, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "devloop: cannot load %s:\n%s", cfg.app_dir, err);
        return 1;
    }
    rc = dl_runtime_run(rt, 1);
    dl_runtime_free(rt);
    return rc == 0 ? 0 : 1;
}

/* devloop reload: SIGHUP to the server whose pid file names it. */
static int cmd_reload(int argc, char **argv)
{
    char path[1200];
    if (argc == 4 && strcmp(argv[2], "--pid-file") == 0)
        snprintf(path, sizeof(path), "%s", argv[3]);
    else if (argc == 3)
        snprintf(path, sizeof(path), "%s/data/devloop.pid", argv[2]);
    else {
        usage(stderr);
        return 2;
    }
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f == NULL || fscanf(f, "%d", &pid) != 1 || pid <= 1) {
        fprintf(stderr, "devloop: no running server found (%s: %s)\n", path,
                f ? "no pid in it" : strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    if (kill(pid, SIGHUP) != 0) {
        fprintf(stderr, "devloop: cannot signal pid %d from %s: %s\n", pid, path, strerror(errno));
        return 1;
    }
    printf("devloop: reload requested (pid %d)\n", pid);
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    char err[65536];
    int n = dl_app_check(argv[2], err, sizeof(err));
    if (n) {
        fputs(err, stderr);
        fprintf(stderr, "devloop: %d error%s in %s\n", n, n == 1 ? "" : "s", argv[2]);
        return 1;
    }
    printf("%s: ok\n", argv[2]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc, argv);
    if (strcmp(argv[1], "check") == 0)
        return cmd_check(argc, argv);
    if (strcmp(argv[1], "reload") == 0)
        return cmd_reload(argc, argv);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("devloop %s (%s, libuv %s)\n", DL_VERSION_STRING, LUAJIT_VERSION,
               uv_version_string());
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "devloop: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
