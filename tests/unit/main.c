/*
 * main.c - the dl_unit runner. Each test runs in its own child process with a
 * timeout, so a crash or hang fails that test alone; output is TAP.
 *   dl_unit            run every test
 *   dl_unit NAME...    run the named tests
 *   dl_unit --list     print the names
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

#define MAX_TESTS 512
#define TIMEOUT_S 60

static struct {
    const char *name;
    dl_unit_fn fn;
} tests[MAX_TESTS];
static int n_tests;
int dl_unit_failures;

void dl_unit_register(const char *name, dl_unit_fn fn)
{
    if (n_tests < MAX_TESTS) {
        tests[n_tests].name = name;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

/* With LeakSanitizer (DL_SANITIZE builds) a test that leaks fails: the child
 * leaves with _exit(), which skips LSan's own check at exit. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static int run_one(int idx, int num)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        alarm(TIMEOUT_S);
        tests[idx].fn();
        if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() != 0) {
            fprintf(stderr, "# %s leaked memory (LeakSanitizer report above)\n", tests[idx].name);
            dl_unit_failures++;
        }
        fflush(stderr);
        _exit(dl_unit_failures ? 1 : 0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (ok)
        printf("ok %d - %s\n", num, tests[idx].name);
    else if (WIFSIGNALED(st))
        printf("not ok %d - %s (signal %d%s)\n", num, tests[idx].name, WTERMSIG(st),
               WTERMSIG(st) == SIGALRM ? ", timeout" : "");
    else
        printf("not ok %d - %s\n", num, tests[idx].name);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < n_tests; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    int failed = 0, num = 0;
    if (argc > 1) {
        printf("1..%d\n", argc - 1);
        for (int a = 1; a < argc; a++) {
            int found = -1;
            for (int i = 0; i < n_tests; i++)
                if (strcmp(tests[i].name, argv[a]) == 0)
                    found = i;
            if (found < 0) {
                printf("not ok %d - %s (no such test)\n", ++num, argv[a]);
                failed++;
                continue;
            }
            failed += run_one(found, ++num);
        }
    } else {
        printf("1..%d\n", n_tests);
        for (int i = 0; i < n_tests; i++)
            failed += run_one(i, ++num);
    }
    return failed ? 1 : 0;
}
