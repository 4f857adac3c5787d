/* log.c: see log.h. One write(2) per record so lines from threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static char log_prefix[128] = "ps";
static ps_log_level log_min = PS_LOG_INFO;

void ps_log_init(const char *program, const char *instance) {
    if (instance && *instance)
        snprintf(log_prefix, sizeof log_prefix, "%s[%s]", program, instance);
    else
        snprintf(log_prefix, sizeof log_prefix, "%s", program);
}

void ps_log_set_level(ps_log_level level) {
    log_min = level;
}

void ps_log(ps_log_level level, const char *fmt, ...) {
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < log_min)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_prefix, names[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n +
                 (m < 0 ? 0
                        : ((size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m
                                                                   : sizeof line - (size_t)n - 2));
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
