/*
 * log.c - the runtime's line logger: "time level [reqid] message" on stderr.
 * One write(2) per line so lines from worker threads never interleave. The
 * buffered asynchronous logger with a writer thread replaces the sink later;
 * callers only see dl_log()/dl_log_req(), which check the level first.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int dl_log_min_level = DL_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

int dl_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < (int)DL_ARRAY_SIZE(level_names); i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return DL_LOG_WARN;
    return -1;
}

void dl_log_write(int level, const char *reqid, const char *fmt, ...)
{
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    if (level < 0 || level > DL_LOG_ERROR)
        level = DL_LOG_ERROR;
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level]);
    if (reqid && *reqid)
        n += snprintf(line + n, sizeof(line) - (size_t)n, "[%s] ", reqid);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    DL_UNUSED(w);
}
