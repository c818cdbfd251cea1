/*
 * test_runtime_config.c - dl_runtime_new() copies the configuration whole
 * (devloop.h): a string the caller frees or reuses after the call is not
 * read later, when the runtime runs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devloop.h"
#include "unit.h"

static void *run_thread(void *rt)
{
    dl_runtime_run(rt, 0);
    return NULL;
}

DL_TEST(runtime_copies_pid_file)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/dl_cfgcopy_XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/routes", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/routes/r.lua", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("local api = require \"devloop\"\napi.get(\"/x\", function() return {} end)\n", f);
    fclose(f);
    setenv("DEVLOOP_LOG_DIR", "-", 1);

    char *pid_file = malloc(256);
    REQUIRE(pid_file != NULL);
    snprintf(pid_file, 256, "%s/given.pid", dir);
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = dir;
    cfg.workers = 1;
    cfg.no_listen = 1;
    cfg.watch = 0;
    cfg.pid_file = pid_file;
    cfg.log_level = DL_LOG_ERROR;
    char err[2048];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
        DL_FAIL_AT("dl_runtime_new: %s", err);
        return;
    }
    /* the caller reuses its buffer once dl_runtime_new() returned */
    snprintf(pid_file, 256, "%s/reused.pid", dir);

    pthread_t th;
    pthread_create(&th, NULL, run_thread, rt);
    dl_response_t res;
    /* an answer means the runtime runs: its pid file is written by then */
    EXPECT_EQ(dl_runtime_request(rt, "GET", "/x", NULL, NULL, 0, 5000, &res), 0);
    dl_response_free(&res);
    char given[256], reused[256];
    snprintf(given, sizeof(given), "%s/given.pid", dir);
    snprintf(reused, sizeof(reused), "%s/reused.pid", dir);
    EXPECT_EQ(access(given, F_OK), 0);
    EXPECT_EQ(access(reused, F_OK), -1);
    dl_runtime_stop(rt);
    pthread_join(th, NULL);
    dl_runtime_free(rt);
    free(pid_file);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        DL_FAIL_AT("cannot remove %s", dir);
}
