/* logger.c: see logger.h. */
#include <stdarg.h>
#include <stdio.h>

#include "logger.h"

void replica_logger_printf(const replica_logger *logger, ps_log_level level, const char *fmt, ...) {
    if (!logger || !logger->fn)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    logger->fn(logger->arg, level, buf);
}
