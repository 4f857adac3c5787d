/* bench_report.h: the one output layout of every benchmark under scripts/bench/.
 *
 * Like nccl-tests, every benchmark prints the same shape so figures can be compared
 * and scraped: a '#' header naming the benchmark and every parameter it ran with, a
 * '#' column header, one fixed-width row per measurement (name, value, unit, target,
 * check), optional '#' notes, and a last line "RESULT key=value ..." with the rows
 * marked for it. A target is informational (these machines are shared and noisy:
 * compare ratios measured in the same run); correctness failures are the benchmark's
 * own business and make it exit non-zero. scripts/bench/README.md says how each
 * benchmark computes its figures.
 */
#ifndef PS_COMMON_BENCH_REPORT_H
#define PS_COMMON_BENCH_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "status.h"

#define BENCH_REPORT_MAX_ROWS 64
#define BENCH_REPORT_MAX_PARAMS 32

typedef struct bench_report bench_report;

typedef enum bench_target {
    BENCH_TARGET_NONE = 0, /* no target: check column "-" */
    BENCH_TARGET_AT_MOST,  /* value <= target */
    BENCH_TARGET_AT_LEAST, /* value >= target */
    BENCH_TARGET_EQUAL,    /* value == target */
} bench_target;

/* `name` is the benchmark ("bench_pushpull"), `what` one line saying what it measures. */
ps_status bench_report_create(const char *name, const char *what, bench_report **ret_report);
void bench_report_destroy(bench_report *r); /* accepts NULL */

/* A parameter for the header ("# mb 64"). Values are formatted with printf. */
void bench_report_param(bench_report *r, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A measurement row. `decimals` digits after the point; `result_key` (may be NULL)
 * puts it on the RESULT line under that key. Rows past BENCH_REPORT_MAX_ROWS are
 * dropped (and counted in a note). */
void bench_report_row(bench_report *r, const char *name, double value, int decimals,
                      const char *unit, bench_target target_kind, double target,
                      const char *result_key);

/* A '#' note printed after the rows (e.g. "3 updates not seen within 5 s"). */
void bench_report_note(bench_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints everything to out; returns how many rows missed their target. */
int bench_report_print(const bench_report *r, FILE *out);

#endif
