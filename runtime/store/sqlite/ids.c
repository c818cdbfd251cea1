/*
 * sqlite/ids.c - new document ids: 4-byte seconds, 5 random bytes per process, a 3-byte
 * counter, as 24 hex digits that increase with creation time.
 */
#include "store/sqlite/sqlite_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/env_value.h"
#include "common/internal.h"
#include "common/json_str.h"

static pthread_mutex_t id_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t id_pid;
static unsigned char id_rand[5];
static uint32_t id_counter;

void dl_store_gen_id(char out[25])
{
    unsigned char b[12];
    pthread_mutex_lock(&id_mu);
    if (id_pid != getpid()) {
        unsigned char r[8];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            uint64_t x = (uint64_t)time(NULL) * 6364136223846793005ULL ^ (uint64_t)getpid();
            memcpy(r, &x, sizeof(r));
        }
        memcpy(id_rand, r, 5);
        /* start in the lower half so 8M ids per second still increase */
        id_counter = ((uint32_t)r[5] << 16 | (uint32_t)r[6] << 8 | r[7]) & 0x7FFFFF;
        id_pid = getpid();
    }
    uint32_t cnt = id_counter++ & 0xFFFFFF;
    uint32_t t = (uint32_t)time(NULL);
    pthread_mutex_unlock(&id_mu);
    b[0] = (unsigned char)(t >> 24);
    b[1] = (unsigned char)(t >> 16);
    b[2] = (unsigned char)(t >> 8);
    b[3] = (unsigned char)t;
    memcpy(b + 4, id_rand, 5);
    b[9] = (unsigned char)(cnt >> 16);
    b[10] = (unsigned char)(cnt >> 8);
    b[11] = (unsigned char)cnt;
    dl_hex(b, sizeof(b), out);
    out[24] = '\0';
}
