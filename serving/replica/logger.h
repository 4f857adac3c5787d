/* logger.h: where the replica's modules report events a person should see.
 *
 * The modules of ps-serve are a library (unit-tested without a process), and library
 * code never logs. Yet some events must reach the operator: a model that cannot be
 * loaded, a shard stream that stalled, a model that produced NaN. So a module takes a
 * replica_logger in its options and reports through it; main.c passes one that calls
 * ps_log, and the tests pass one that records what was said. A logger with a NULL
 * function drops everything.
 */
#ifndef PS_SERVING_REPLICA_LOGGER_H
#define PS_SERVING_REPLICA_LOGGER_H

#include "log.h"

typedef struct replica_logger {
    /* called with one finished message (no newline); may be NULL */
    void (*fn)(void *arg, ps_log_level level, const char *message);
    void *arg;
} replica_logger;

/* Formats a message (truncated to 1 KiB) and hands it to the logger. */
void replica_logger_printf(const replica_logger *logger, ps_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
