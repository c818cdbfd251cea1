/*
 * embed.c - a small tool that embeds devloop: it serves an app folder from
 * its own main(), stopping on SIGTERM/SIGINT like `devloop serve`.
 *
 *   devloop_embed APP_DIR [HOST:PORT]
 *   devloop_embed --version
 *
 * Built against an installed libdevloop: cc embed.c $(pkg-config --cflags --libs devloop)
 */
#include <stdio.h>
#include <string.h>

#include <devloop.h>

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        /* the header's version and the linked library's */
        printf("devloop_embed: header %s, library %s\n", DEVLOOP_VERSION, dl_version());
        return strcmp(DEVLOOP_VERSION, dl_version()) == 0 ? 0 : 1;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s APP_DIR [HOST:PORT]\n", argv[0]);
        return 2;
    }
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = argv[1];
    cfg.workers = 1;
    if (argc > 2)
        cfg.listen[cfg.n_listen++] = argv[2];
    char err[4096];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s", err);
        return 1;
    }
    int rc = dl_runtime_run(rt, 1);
    dl_runtime_free(rt);
    return rc == 0 ? 0 : 1;
}
