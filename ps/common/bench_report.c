/* bench_report.c: see bench_report.h. Rows are kept until printing so the header,
 * the table and the RESULT line come out in one place, in one layout. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_report.h"

#define TEXT 160

typedef struct bench_row {
    char name[48];
    double value;
    int decimals;
    char unit[16];
    bench_target target_kind;
    double target;
    char result_key[48];
} bench_row;

struct bench_report {
    char name[64];
    char what[TEXT];
    char params[BENCH_REPORT_MAX_PARAMS][TEXT];
    int n_params;
    bench_row rows[BENCH_REPORT_MAX_ROWS];
    int n_rows, dropped;
    char notes[8][TEXT];
    int n_notes;
};

ps_status bench_report_create(const char *name, const char *what, bench_report **ret_report) {
    if (!name)
        return PS_STATUS_INVALID_ARGUMENT;
    bench_report *r = calloc(1, sizeof *r);
    if (!r)
        return PS_STATUS_NO_MEMORY;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->what, sizeof r->what, "%s", what ? what : "");
    *ret_report = r;
    return PS_STATUS_OK;
}

void bench_report_destroy(bench_report *r) {
    free(r);
}

void bench_report_param(bench_report *r, const char *key, const char *fmt, ...) {
    if (r->n_params == BENCH_REPORT_MAX_PARAMS)
        return;
    char value[TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    snprintf(r->params[r->n_params++], TEXT, "%-20.20s %.130s", key, value);
}

void bench_report_row(bench_report *r, const char *name, double value, int decimals,
                      const char *unit, bench_target target_kind, double target,
                      const char *result_key) {
    if (r->n_rows == BENCH_REPORT_MAX_ROWS) {
        r->dropped++;
        return;
    }
    bench_row *row = &r->rows[r->n_rows++];
    snprintf(row->name, sizeof row->name, "%s", name);
    row->value = value;
    row->decimals = decimals < 0 ? 0 : decimals > 9 ? 9 : decimals;
    snprintf(row->unit, sizeof row->unit, "%s", unit ? unit : "");
    row->target_kind = target_kind;
    row->target = target;
    snprintf(row->result_key, sizeof row->result_key, "%s", result_key ? result_key : "");
}

void bench_report_note(bench_report *r, const char *fmt, ...) {
    if (r->n_notes == (int)(sizeof r->notes / sizeof r->notes[0]))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->n_notes++], TEXT, fmt, ap);
    va_end(ap);
}

static bool row_ok(const bench_row *row) {
    switch (row->target_kind) {
    case BENCH_TARGET_AT_MOST:
        return row->value <= row->target;
    case BENCH_TARGET_AT_LEAST:
        return row->value >= row->target;
    case BENCH_TARGET_EQUAL:
        return row->value == row->target;
    case BENCH_TARGET_NONE:
        break;
    }
    return true;
}

int bench_report_print(const bench_report *r, FILE *out) {
    static const char *const ops[] = {"", "<=", ">=", "=="};
    fprintf(out, "# %s: %s\n", r->name, r->what);
    for (int i = 0; i < r->n_params; i++)
        fprintf(out, "# %s\n", r->params[i]);
    fprintf(out, "# %-30s %14s  %-6s %12s  %s\n", "name", "value", "unit", "target", "check");
    int misses = 0;
    for (int i = 0; i < r->n_rows; i++) {
        const bench_row *row = &r->rows[i];
        char target[32] = "-";
        if (row->target_kind != BENCH_TARGET_NONE)
            snprintf(target, sizeof target, "%s %g", ops[row->target_kind], row->target);
        bool ok = row_ok(row);
        misses += !ok;
        fprintf(out, "  %-30s %14.*f  %-6s %12s  %s\n", row->name, row->decimals, row->value,
                row->unit, target,
                row->target_kind == BENCH_TARGET_NONE ? "-"
                : ok                                  ? "ok"
                                                      : "MISS");
    }
    for (int i = 0; i < r->n_notes; i++)
        fprintf(out, "# %s\n", r->notes[i]);
    if (r->dropped)
        fprintf(out, "# %d row(s) dropped: more than %d\n", r->dropped, BENCH_REPORT_MAX_ROWS);
    fprintf(out, "RESULT");
    for (int i = 0; i < r->n_rows; i++)
        if (r->rows[i].result_key[0])
            fprintf(out, " %s=%.*f", r->rows[i].result_key, r->rows[i].decimals, r->rows[i].value);
    fprintf(out, "\n");
    fflush(out);
    return misses;
}
