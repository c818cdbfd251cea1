/*
 * main.c - the `devloop` program: a thin command line over libdevloop.
 *
 *   devloop serve APP_DIR [--listen HOST:PORT [--tls-cert FILE --tls-key FILE]...
 *                          [--https-redirect]]... [--canonical-host HOST[:PORT]]
 *                          [--workers N] [--log-level L] [--no-watch] [--pid-file FILE]
 *                          [--hsts VALUE|off] [--no-http2]
 *   devloop config APP_DIR [serve's flags] [--json]   (= serve ... --print-config)
 *   devloop check APP_DIR
 *   devloop test APP_DIR [--tap] [FILE...]    FILE: relative to the current directory
 *   devloop new DIR
 *   devloop reload APP_DIR | --pid-file FILE
 *   devloop version
 *
 * Every command refuses an option it does not know (exit 2, naming it);
 * "--" ends the options, so a path may start with "-". An address another
 * process holds, or a pid file another instance holds, stops `serve` with
 * exit 1 (server.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <luajit.h>
#include <uv.h>

#include "devloop.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: devloop serve APP_DIR [--listen HOST:PORT [--tls-cert FILE --tls-key FILE]...\n"
            "                                       [--https-redirect]]...\n"
            "                     [--workers N] [--log-level L] [--no-watch] [--pid-file FILE]\n"
            "                     [--hsts VALUE|off] [--no-http2] [--canonical-host HOST[:PORT]]\n"
            "                     [--print-config [--json]]\n"
            "       devloop config APP_DIR [serve's flags] [--json]\n"
            "       devloop check APP_DIR\n"
            "       devloop test APP_DIR [--tap] [FILE...]\n"
            "                     FILE paths are relative to the current directory;\n"
            "                     none: every APP_DIR/tests/*.lua\n"
            "       devloop new DIR\n"
            "       devloop reload APP_DIR | --pid-file FILE\n"
            "       devloop version\n"
            "  '--' ends the options (for a path that starts with '-').\n");
}

static int is_option(const char *a)
{
    return a[0] == '-' && a[1] != '\0';
}

/* An option the command does not take is a usage error naming it. */
static int unknown_option(const char *cmd, const char *a)
{
    fprintf(stderr, "devloop %s: unknown option %s\n", cmd, a);
    usage(stderr);
    return 2;
}

/* The one argument of a command that takes no option: 0 and *out, or 2. */
static int sole_argument(int argc, char **argv, const char *what, const char **out)
{
    int opts = 1;
    *out = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (opts && strcmp(a, "--") == 0) {
            opts = 0;
        } else if (opts && is_option(a)) {
            return unknown_option(argv[1], a);
        } else if (*out != NULL) {
            fprintf(stderr, "devloop %s: unexpected argument %s\n", argv[1], a);
            usage(stderr);
            return 2;
        } else {
            *out = a;
        }
    }
    if (*out == NULL) {
        fprintf(stderr, "devloop %s: missing %s\n", argv[1], what);
        usage(stderr);
        return 2;
    }
    return 0;
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

/* An app folder exists and holds an app (app.lua or routes/): a typo in the
 * path must not serve an empty app from a folder made for it. */
static int app_dir_ok(const char *dir)
{
    struct stat st;
    char path[4096];
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "devloop: %s: no such app folder\n", dir);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/app.lua", dir);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
        return 1;
    snprintf(path, sizeof(path), "%s/routes", dir);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 1;
    fprintf(stderr, "devloop: %s is not an app folder: it has neither app.lua nor routes/ "
                    "(devloop new DIR makes one)\n", dir);
    return 0;
}

/* ================================================================ config */

/* serve's flags that take a value, so their values are not taken for flags */
static int flag_takes_value(const char *a)
{
    static const char *const with[] = {"--listen", "-l", "--workers", "-w", "--log-level",
                                       "--pid-file", "--tls-cert", "--tls-key", "--hsts",
                                       "--canonical-host"};
    for (size_t i = 0; i < sizeof(with) / sizeof(with[0]); i++)
        if (strcmp(a, with[i]) == 0)
            return 1;
    return 0;
}

/* The settings serve would use, with their sources, from its parsed flags
 * (cmd_serve checked them); nothing is started, bound, opened or created. */
static int print_config(const dl_config_t *cfg, int argc, char **argv, int json)
{
    const char *flags[64];
    int n = 0;
    for (int i = 2; i < argc && n < 63; i++) {
        const char *a = argv[i];
        if (a[0] != '-')
            continue;
        flags[n++] = strcmp(a, "-l") == 0 ? "--listen" : strcmp(a, "-w") == 0 ? "--workers" : a;
        if (flag_takes_value(a))
            i++;
    }
    flags[n] = NULL;
    char err[8192];
    if (dl_config_print(cfg, flags, json, stdout, err, sizeof(err)) != 0) {
        fprintf(stderr, "devloop: %s", err); /* as serve says it (a configuration error) */
        return 1;
    }
    return 0;
}

static int cmd_serve(int argc, char **argv);

/* devloop config APP_DIR [flags]: serve's flag parsing, then the settings. */
static int cmd_config(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 2, sizeof(char *));
    if (args == NULL)
        return 1;
    args[0] = argv[0];
    args[1] = argv[1]; /* messages name the command the user typed */
    args[2] = "--print-config"; /* first: a "--" among the user's arguments ends options */
    for (int i = 2; i < argc; i++)
        args[i + 1] = argv[i];
    int rc = cmd_serve(argc + 1, args);
    free(args);
    return rc;
}

static int cmd_serve(int argc, char **argv)
{
    dl_config_t cfg;
    dl_config_init(&cfg);
    int print = 0, json = 0;
    int opts = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;
        if (opts && flag_takes_value(a) && val != NULL && strncmp(val, "--", 2) == 0) {
            /* `--pid-file --no-watch` would write the pid to ./--no-watch */
            fprintf(stderr, "devloop %s: %s needs a value, not the option %s\n", argv[1], a,
                    val);
            usage(stderr);
            return 2;
        }
        if (!opts || !is_option(a)) {
            if (cfg.app_dir != NULL) {
                fprintf(stderr, "devloop %s: unexpected argument %s\n", argv[1], a);
                usage(stderr);
                return 2;
            }
            cfg.app_dir = a;
        } else if (strcmp(a, "--") == 0) {
            opts = 0;
        } else if (strcmp(a, "--listen") == 0 || strcmp(a, "-l") == 0) {
            if (val == NULL || cfg.n_listen >= DL_MAX_LISTEN) {
                fprintf(stderr, "devloop: --listen needs HOST:PORT (at most %d)\n", DL_MAX_LISTEN);
                return 2;
            }
            cfg.listen[cfg.n_listen++] = val;
            i++;
        } else if (strcmp(a, "--workers") == 0 || strcmp(a, "-w") == 0) {
            /* the runtime runs at most 256 workers (server.c) */
            if (val == NULL || parse_int(val, &cfg.workers) != 0 || cfg.workers < 1 ||
                cfg.workers > 256) {
                fprintf(stderr, "devloop: --workers needs a number from 1 to 256\n");
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
            if (val == NULL || *val == '\0') { /* "" would quietly mean no pid file */
                fprintf(stderr, "devloop: --pid-file needs a path\n");
                return 2;
            }
            cfg.pid_file = val;
            i++;
        } else if (strcmp(a, "--tls-cert") == 0 || strcmp(a, "--tls-key") == 0 ||
                   strcmp(a, "--https-redirect") == 0) {
            /* these belong to the --listen before them (README, Command line) */
            if (cfg.n_listen == 0) {
                fprintf(stderr, "devloop: %s must follow the --listen HOST:PORT it applies to\n",
                        a);
                return 2;
            }
            dl_listen_opts_t *lo = &cfg.listen_opts[cfg.n_listen - 1];
            if (strcmp(a, "--https-redirect") == 0) {
                lo->https_redirect = 1;
                continue;
            }
            int is_cert = strcmp(a, "--tls-cert") == 0;
            if (val == NULL) {
                fprintf(stderr, "devloop: %s needs a PEM file\n", a);
                return 2;
            }
            if (is_cert) {
                if (lo->n_certs >= DL_MAX_TLS_CERTS) {
                    fprintf(stderr, "devloop: at most %d certificates per listener\n",
                            DL_MAX_TLS_CERTS);
                    return 2;
                }
                if (lo->n_certs > 0 && lo->tls_key[lo->n_certs - 1] == NULL) {
                    fprintf(stderr, "devloop: --tls-cert %s: the certificate before it has no "
                                    "--tls-key\n", val);
                    return 2;
                }
                lo->tls_cert[lo->n_certs++] = val;
            } else {
                if (lo->n_certs == 0 || lo->tls_key[lo->n_certs - 1] != NULL) {
                    fprintf(stderr, "devloop: --tls-key %s needs a --tls-cert before it\n", val);
                    return 2;
                }
                lo->tls_key[lo->n_certs - 1] = val;
            }
            i++;
        } else if (strcmp(a, "--hsts") == 0) {
            if (val == NULL) {
                fprintf(stderr, "devloop: --hsts needs a header value (or off)\n");
                return 2;
            }
            cfg.hsts = strcmp(val, "off") == 0 ? "" : val;
            i++;
        } else if (strcmp(a, "--canonical-host") == 0) {
            if (val == NULL || val[0] == '\0') {
                fprintf(stderr, "devloop: --canonical-host needs HOST[:PORT], the host HTTPS "
                                "redirects name\n");
                return 2;
            }
            /* the runtime reads it (and checks it) with the environment,
             * where embedders set it too; the flag wins over the variable */
            setenv("DEVLOOP_CANONICAL_HOST", val, 1);
            i++;
        } else if (strcmp(a, "--no-http2") == 0) {
            cfg.http2 = 0;
        } else if (strcmp(a, "--print-config") == 0) {
            print = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else {
            return unknown_option(argv[1], a);
        }
    }
    if (cfg.app_dir == NULL) {
        fprintf(stderr, "devloop %s: missing APP_DIR\n", argv[1]);
        usage(stderr);
        return 2;
    }
    for (int l = 0; l < cfg.n_listen; l++) {
        const dl_listen_opts_t *lo = &cfg.listen_opts[l];
        if (lo->n_certs > 0 && lo->tls_key[lo->n_certs - 1] == NULL) {
            fprintf(stderr, "devloop: --tls-cert %s has no --tls-key\n",
                    lo->tls_cert[lo->n_certs - 1]);
            return 2;
        }
    }
    if (json && !print) {
        fprintf(stderr, "devloop: --json goes with --print-config (or devloop config)\n");
        return 2;
    }
    if (!app_dir_ok(cfg.app_dir))
        return 1;
    if (print)
        return print_config(&cfg, argc, argv, json);
    char err[8192];
    dl_runtime_t *rt;
    int rc = dl_runtime_new(&cfg, &rt, err, sizeof(err));
    if (rc == DL_ESCRIPT) {
        fprintf(stderr, "devloop: cannot load %s:\n%s", cfg.app_dir, err);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "devloop: %s", err); /* a configuration or an address in use */
        return 1;
    }
    rc = dl_runtime_run(rt, 1);
    dl_runtime_free(rt);
    return rc == 0 ? 0 : 1;
}

/* serve's options that take a value (cmd_serve's): to find the app in a
 * running server's command line */
static const char *const serve_value_options[] = {
    "--listen", "-l", "--workers", "-w", "--log-level", "--pid-file", "--tls-cert",
    "--tls-key", "--hsts", "--canonical-host",
};

/* The absolute app folder a `devloop serve` process serves, from its command
 * line and working directory; 0 when it cannot be told. */
static int served_app(int pid, char *out, size_t outlen)
{
    char path[64], args[8192], cwd[4096], full[8400];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(args, 1, sizeof(args) - 1, f);
    fclose(f);
    args[n] = '\0';
    const char *argv[256];
    int argc = 0;
    for (size_t i = 0; i < n && argc < 256; i += strlen(args + i) + 1)
        argv[argc++] = args + i;
    if (argc < 3 || strcmp(argv[1], "serve") != 0)
        return 0;
    const char *app = NULL;
    for (int i = 2, opts = 1; i < argc && app == NULL; i++) {
        if (!opts || !is_option(argv[i])) {
            app = argv[i];
        } else if (strcmp(argv[i], "--") == 0) {
            opts = 0;
        } else {
            for (size_t k = 0; k < sizeof(serve_value_options) / sizeof(char *); k++)
                if (strcmp(argv[i], serve_value_options[k]) == 0)
                    i++;
        }
    }
    snprintf(path, sizeof(path), "/proc/%d/cwd", pid);
    ssize_t len = readlink(path, cwd, sizeof(cwd) - 1);
    if (app == NULL || len <= 0)
        return 0;
    cwd[len] = '\0';
    snprintf(full, sizeof(full), "%s/%s", cwd, app);
    return realpath(app[0] == '/' ? app : full, out) != NULL && strlen(out) < outlen;
}

/*
 * devloop reload: SIGHUP to the server holding the pid file. A file no
 * process holds (server.c locks it while it runs) is stale: its pid may
 * since belong to another program, so nothing is signalled.
 */
static int cmd_reload(int argc, char **argv)
{
    const char *app = NULL, *pid_file = NULL;
    for (int i = 2, opts = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && strcmp(a, "--") == 0) {
            opts = 0;
        } else if (opts && strcmp(a, "--pid-file") == 0) {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                fprintf(stderr, "devloop reload: --pid-file needs a path%s%s\n",
                        i + 1 < argc ? ", not the option " : "", i + 1 < argc ? argv[i + 1] : "");
                return 2;
            }
            pid_file = argv[++i];
        } else if (opts && is_option(a)) {
            return unknown_option("reload", a);
        } else if (app != NULL) {
            fprintf(stderr, "devloop reload: unexpected argument %s\n", a);
            usage(stderr);
            return 2;
        } else {
            app = a;
        }
    }
    if ((app == NULL) == (pid_file == NULL)) {
        fprintf(stderr, "devloop reload: give APP_DIR or --pid-file FILE (one of them)\n");
        usage(stderr);
        return 2;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s", pid_file ? pid_file : app);
    if (app)
        snprintf(path, sizeof(path), "%s/data/devloop.pid", app);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "devloop: no running server found (%s: %s)\n", path, strerror(errno));
        return 1;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    char text[32] = "";
    ssize_t n = read(fd, text, sizeof(text) - 1);
    int lk = fcntl(fd, F_OFD_GETLK, &fl), e = errno;
    close(fd);
    int pid = n > 0 ? atoi(text) : 0;
    if (lk != 0) {
        fprintf(stderr, "devloop: cannot tell whether %s is held: %s\n", path, strerror(e));
        return 1;
    }
    if (fl.l_type == F_UNLCK) {
        if (pid > 1)
            fprintf(stderr, "devloop: %s is stale: no devloop holds it (the pid in it, %d, is "
                            "not a server of it); nothing signalled\n", path, pid);
        else
            fprintf(stderr, "devloop: no running server found (%s is stale: no devloop holds "
                            "it)\n", path);
        return 1;
    }
    if (pid <= 1) {
        fprintf(stderr, "devloop: the server holding %s is still starting; try again\n", path);
        return 1;
    }
    if (kill(pid, SIGHUP) != 0) {
        fprintf(stderr, "devloop: cannot signal pid %d from %s: %s\n", pid, path, strerror(errno));
        return 1;
    }
    char served[4096];
    if (served_app(pid, served, sizeof(served)))
        printf("devloop: reload requested from pid %d (serving %s); its log says how it went\n",
               pid, served);
    else
        printf("devloop: reload requested from pid %d; its log says how it went\n", pid);
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    const char *app;
    if (sole_argument(argc, argv, "APP_DIR", &app) != 0)
        return 2;
    char err[65536];
    int n = dl_app_check(app, err, sizeof(err));
    if (n) {
        fputs(err, stderr);
        fprintf(stderr, "devloop: %d error%s in %s\n", n, n == 1 ? "" : "s", app);
        return 1;
    }
    printf("%s: ok\n", app);
    return 0;
}


/* ================================================================== test */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* the .lua files of APP_DIR/tests, sorted; returns the count (names malloc'ed) */
static int default_test_files(const char *app, char ***out)
{
    char dir[1100];
    snprintf(dir, sizeof(dir), "%s/tests", app);
    DIR *d = opendir(dir);
    *out = NULL;
    if (d == NULL)
        return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || e->d_name[0] == '.' || strcmp(e->d_name + len - 4, ".lua") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, (size_t)cap * sizeof(char *));
        }
        char *p = malloc(strlen(dir) + len + 2);
        sprintf(p, "%s/%s", dir, e->d_name);
        (*out)[n++] = p;
    }
    closedir(d);
    if (n > 1)
        qsort(*out, (size_t)n, sizeof(char *), cmp_str);
    return n;
}

/*
 * Each file runs in a runtime of its own (one worker, no socket, a fresh
 * embedded store in a scratch folder): the app starts, its start hooks run,
 * then the file's tests (devloop.test), and the runtime stops.
 */
/* Tests never reach a live backend: every variable that selects or sets one
 * up (REDIS_*, MONGO_*, DEVLOOP_DB) is cleared, so each file gets the
 * embedded store and cache, unless the run names its own backend with
 * DEVLOOP_TEST_REDIS_URL / DEVLOOP_TEST_MONGO_URI. Says what it ignored. */
static void isolate_backends(void)
{
    extern char **environ;
    char ignored[1024] = "";
    size_t len = 0;
    for (;;) {
        const char *hit = NULL;
        for (char **e = environ; *e != NULL && hit == NULL; e++)
            if (strncmp(*e, "REDIS_", 6) == 0 || strncmp(*e, "MONGO_", 6) == 0 ||
                strncmp(*e, "DEVLOOP_DB=", 11) == 0)
                hit = *e;
        if (hit == NULL)
            break;
        char *name = strndup(hit, strcspn(hit, "="));
        if (name == NULL)
            break;
        if (len < sizeof(ignored))
            len += (size_t)snprintf(ignored + len, sizeof(ignored) - len, "%s%s",
                                    len ? ", " : "", name);
        unsetenv(name);
        free(name);
    }
    if (ignored[0] != '\0')
        fprintf(stderr, "devloop test: ignoring %s (tests get the embedded store and cache; "
                        "DEVLOOP_TEST_REDIS_URL or DEVLOOP_TEST_MONGO_URI name a backend for "
                        "them)\n", ignored);
    const char *r = getenv("DEVLOOP_TEST_REDIS_URL"), *m = getenv("DEVLOOP_TEST_MONGO_URI");
    if (r != NULL && *r != '\0')
        setenv("REDIS_URL", r, 1);
    if (m != NULL && *m != '\0')
        setenv("MONGO_URI", m, 1);
}

/*
 * Each file runs in a runtime of its own (one worker, no socket, a fresh
 * embedded store in a scratch folder): the app starts, its start hooks run,
 * then the file's tests (devloop.test), and the runtime stops. FILE paths
 * are taken as given (relative to the current directory).
 */
static int cmd_test(int argc, char **argv)
{
    const char *app = NULL;
    int tap = 0, nfiles = 0;
    char **files = NULL;
    for (int i = 2, opts = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && strcmp(a, "--") == 0) {
            opts = 0;
        } else if (opts && strcmp(a, "--tap") == 0) {
            tap = 1;
        } else if (opts && is_option(a)) {
            for (int k = 0; k < nfiles; k++)
                free(files[k]);
            free(files);
            return unknown_option("test", a);
        } else if (app == NULL) {
            app = a;
        } else {
            files = realloc(files, (size_t)(nfiles + 1) * sizeof(char *));
            files[nfiles++] = strdup(a);
        }
    }
    if (app == NULL) {
        fprintf(stderr, "devloop test: missing APP_DIR\n");
        usage(stderr);
        return 2;
    }
    if (nfiles == 0)
        nfiles = default_test_files(app, &files);
    if (nfiles == 0) {
        fprintf(stderr, "devloop: no test files (%s/tests/*.lua)\n", app);
        return 1;
    }
    isolate_backends();
    long passed = 0, failed = 0;
    for (int i = 0; i < nfiles; i++) {
        char tmpl[] = "/tmp/devloop-test-XXXXXX";
        char db[1100], result[1100], abs[4096];
        if (realpath(files[i], abs) == NULL || mkdtemp(tmpl) == NULL) {
            const char *why = strerror(errno);
            char in_app[4200];
            struct stat st;
            snprintf(in_app, sizeof(in_app), "%s/tests/%s", app, files[i]);
            if (stat(in_app, &st) == 0)
                fprintf(stderr, "devloop: %s: %s (FILE is relative to the current directory; "
                                "did you mean %s?)\n", files[i], why, in_app);
            else
                fprintf(stderr, "devloop: %s: %s\n", files[i], why);
            failed++;
            continue;
        }
        snprintf(db, sizeof(db), "%s/test.db", tmpl);
        snprintf(result, sizeof(result), "%s/result", tmpl);
        setenv("DEVLOOP_DB", db, 1);
        setenv("DEVLOOP_TEST_FILE", abs, 1);
        setenv("DEVLOOP_TEST_RESULT", result, 1);
        setenv("DEVLOOP_TEST_TAP", tap ? "1" : "0", 1);
        setenv("DEVLOOP_LOG_DIR", "-", 1);
        if (tap)
            printf("# %s\n", files[i]);
        fflush(stdout);
        dl_config_t cfg;
        dl_config_init(&cfg);
        cfg.app_dir = app;
        cfg.workers = 1;
        cfg.no_listen = 1;
        cfg.watch = 0;
        cfg.pid_file = "";
        if (getenv("LOG_LEVEL") == NULL)
            cfg.log_level = dl_log_level_parse("warn");
        char err[65536];
        dl_runtime_t *rt;
        long p = 0, f = 1;
        if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s", err);
        } else {
            dl_runtime_run(rt, 1);
            dl_runtime_free(rt);
            FILE *rf = fopen(result, "r");
            if (rf == NULL || fscanf(rf, "%ld %ld", &p, &f) != 2) {
                fprintf(stderr, "devloop: %s did not finish\n", files[i]);
                p = 0;
                f = 1;
            }
            if (rf)
                fclose(rf);
        }
        passed += p;
        failed += f;
        nftw(tmpl, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(files[i]);
    }
    free(files);
    printf("%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* =================================================================== new */

static int write_file(const char *dir, const char *name, const char *text)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wx");
    if (f == NULL) {
        fprintf(stderr, "devloop: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    return fclose(f);
}

static int cmd_new(int argc, char **argv)
{
    const char *dir;
    if (sole_argument(argc, argv, "DIR", &dir) != 0)
        return 2;
    char sub[1100];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "devloop: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(sub, sizeof(sub), "%s/routes", dir);
    mkdir(sub, 0755);
    snprintf(sub, sizeof(sub), "%s/tests", dir);
    mkdir(sub, 0755);
    int rc = 0;
    rc |= write_file(dir, "app.lua",
                     "-- loaded first, once per worker: settings, schemas, api.on_start hooks\n"
                     "local api = require \"devloop\"\n"
                     "api.log.info(\"app loaded\")\n");
    rc |= write_file(dir, "routes/hello.lua",
                     "local api = require \"devloop\"\n\n"
                     "api.get(\"/hello/:name\", function(req)\n"
                     "  return { hello = req.params.name, at = api.now() }\n"
                     "end)\n");
    rc |= write_file(dir, "tests/hello_test.lua",
                     "local t = require \"devloop.test\"\n\n"
                     "t.test(\"GET /hello/:name greets by name\", function()\n"
                     "  local r = t.get(\"/hello/ada\")\n"
                     "  t.eq(r.status, 200)\n"
                     "  t.eq(r.json.hello, \"ada\")\n"
                     "end)\n\n"
                     "t.test(\"an unknown path is a JSON 404\", function()\n"
                     "  local r = t.get(\"/nope\")\n"
                     "  t.eq(r.status, 404)\n"
                     "  t.ok(r.json.requestId)\n"
                     "end)\n");
    if (rc != 0)
        return 1;
    printf("created %s: devloop serve %s   (then curl localhost:8080/hello/you)\n"
           "        devloop test %s\n", dir, dir, dir);
    return 0;
}

/* libmongoc's library initializer, before main(), creates /dev/shm/mongoc-PID
 * for its counters with O_EXCL; a file left there by a killed process that
 * had our pid makes it warn on stderr, outside the log (it reads no
 * MONGOC_DISABLE_SHM set from here: it scans the environment it was started
 * with). An executable's preinit_array runs before any shared library's
 * initializer: a file with our pid can only be such a leftover, so it goes. */
static void remove_stale_mongoc_counters(int argc, char **argv, char **envp)
{
    (void)argc, (void)argv, (void)envp;
    char path[48];
    snprintf(path, sizeof(path), "/dev/shm/mongoc-%u", (unsigned)getpid());
    unlink(path);
}
__attribute__((section(".preinit_array"), used)) static void (*const preinit_mongoc)(
    int, char **, char **) = remove_stale_mongoc_counters;

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
    if (strcmp(argv[1], "config") == 0)
        return cmd_config(argc, argv);
    if (strcmp(argv[1], "reload") == 0)
        return cmd_reload(argc, argv);
    if (strcmp(argv[1], "test") == 0)
        return cmd_test(argc, argv);
    if (strcmp(argv[1], "new") == 0)
        return cmd_new(argc, argv);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        for (int i = 2; i < argc; i++) {
            if (is_option(argv[i]))
                return unknown_option(argv[1], argv[i]);
            fprintf(stderr, "devloop %s: unexpected argument %s\n", argv[1], argv[i]);
            usage(stderr);
            return 2;
        }
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
