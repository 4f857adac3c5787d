/* log.h: one-line log records for programs (never called from library code).
 * Format: "2026-11-24T10:00:00.123Z ps-shard[shard-1] INFO message". Goes to stderr,
 * which scripts/cluster redirects into run/logs/. */
#ifndef PS_COMMON_LOG_H
#define PS_COMMON_LOG_H

typedef enum ps_log_level {
    PS_LOG_DEBUG = 0,
    PS_LOG_INFO = 1,
    PS_LOG_WARN = 2,
    PS_LOG_ERROR = 3,
} ps_log_level;

/* Names the program (and instance, may be NULL) in every record. Call once in main. */
void ps_log_init(const char *program, const char *instance);
void ps_log_set_level(ps_log_level level);
void ps_log(ps_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define PS_INFO(...) ps_log(PS_LOG_INFO, __VA_ARGS__)
#define PS_WARN(...) ps_log(PS_LOG_WARN, __VA_ARGS__)
#define PS_ERROR(...) ps_log(PS_LOG_ERROR, __VA_ARGS__)

#endif
