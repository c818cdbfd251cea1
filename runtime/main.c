/*
 * main.c - the `devloop` program: a thin command line over libdevloop.
 *
 *   devloop serve APP_DIR [--listen HOST:PORT [--tls-cert FILE --tls-key FILE]...
 *                          [--https-redirect]]... [--canonical-host HOST[:PORT]]
 *                          [--workers N] [--log-level L]
 *   devloop config APP_DIR [serve's flags] [--json]   (= serve ... --print-config)
 *   devloop check APP_DIR
 *   devloop test APP_DIR [FILE...] [--tap]
 *   devloop new DIR
 *   devloop version
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
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
            "       devloop test APP_DIR [FILE...] [--tap]\n"
            "       devloop new DIR\n"
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
        fprintf(stderr, "devloop: cannot load %s:\n%s", cfg->app_dir, err);
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
    args[1] = "serve";
    for (int i = 2; i < argc; i++)
        args[i] = argv[i];
    args[argc] = "--print-config";
    int rc = cmd_serve(argc + 1, args);
    free(args);
    return rc;
}

static int cmd_serve(int argc, char **argv)
{
    dl_config_t cfg;
    dl_config_init(&cfg);
    int print = 0, json = 0;
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
        } else if (strcmp(a, "--tls-cert") == 0 || strcmp(a, "--tls-key") == 0 ||
                   strcmp(a, "--https-redirect") == 0) {
            /* these belong to the --listen before them (CONTRACT.md section 1) */
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
static int cmd_test(int argc, char **argv)
{
    if (argc < 3) {
        usage(stderr);
        return 2;
    }
    const char *app = argv[2];
    int tap = 0, nfiles = 0;
    char **files = NULL;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--tap") == 0) {
            tap = 1;
            continue;
        }
        files = realloc(files, (size_t)(nfiles + 1) * sizeof(char *));
        files[nfiles++] = strdup(argv[i]);
    }
    if (nfiles == 0)
        nfiles = default_test_files(app, &files);
    if (nfiles == 0) {
        fprintf(stderr, "devloop: no test files (%s/tests/*.lua)\n", app);
        return 1;
    }
    long passed = 0, failed = 0;
    for (int i = 0; i < nfiles; i++) {
        char tmpl[] = "/tmp/devloop-test-XXXXXX";
        char db[1100], result[1100], abs[4096];
        if (realpath(files[i], abs) == NULL || mkdtemp(tmpl) == NULL) {
            fprintf(stderr, "devloop: %s: %s\n", files[i], strerror(errno));
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
        /* the embedded store and cache, whatever the shell has configured:
         * tests must never write to a live MongoDB or Redis */
        unsetenv("MONGO_URI");
        unsetenv("REDIS_URL");
        unsetenv("REDIS_HOST");
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
    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    const char *dir = argv[2];
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
