/* output.c: how psctl prints: aligned text tables for people and one JSON document
 * for scripts (jansson builds it, so it is always valid JSON), plus small formatters
 * for shapes and byte counts. Tables are buffered so columns can be padded to their
 * widest cell. */
#include <stdlib.h>
#include <string.h>

#include "psctl.h"

struct psctl_table {
    size_t n_cols;
    size_t n_rows; /* header included */
    size_t cap_rows;
    char **cells; /* n_rows * n_cols strings, row-major; NULL cells print empty */
    bool failed;  /* an allocation failed: print what fits */
};

psctl_table *psctl_table_create(size_t n_cols, const char *const *header) {
    psctl_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n_cols = n_cols;
    psctl_table_add(t, header);
    return t;
}

void psctl_table_add(psctl_table *t, const char *const *cells) {
    if (!t || t->failed)
        return;
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
        char **grown = realloc(t->cells, cap * t->n_cols * sizeof *grown);
        if (!grown) {
            t->failed = true;
            return;
        }
        t->cells = grown;
        t->cap_rows = cap;
    }
    char **row = t->cells + t->n_rows * t->n_cols;
    for (size_t c = 0; c < t->n_cols; c++)
        row[c] = strdup(cells[c] ? cells[c] : "");
    t->n_rows++;
}

void psctl_table_print(const psctl_table *t, FILE *out) {
    if (!t)
        return;
    size_t width[64] = {0};
    size_t n_cols = t->n_cols < 64 ? t->n_cols : 64;
    for (size_t r = 0; r < t->n_rows; r++)
        for (size_t c = 0; c < n_cols; c++) {
            const char *s = t->cells[r * t->n_cols + c];
            size_t len = s ? strlen(s) : 0;
            if (len > width[c])
                width[c] = len;
        }
    for (size_t r = 0; r < t->n_rows; r++) {
        for (size_t c = 0; c < n_cols; c++) {
            const char *s = t->cells[r * t->n_cols + c];
            if (c + 1 == n_cols)
                fprintf(out, "%s\n", s ? s : "");
            else
                fprintf(out, "%-*s  ", (int)width[c], s ? s : "");
        }
    }
}

void psctl_table_destroy(psctl_table *t) {
    if (!t)
        return;
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

int psctl_emit_json(const psctl *p, json_t *doc) {
    if (!doc)
        return psctl_fail(p, "NO_MEMORY", "out of memory while building the JSON output");
    /* 9 significant digits: every float32 value reads back exactly */
    int rc = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(doc);
    fputc('\n', stdout);
    if (rc != 0)
        return psctl_fail(p, "IO", "cannot write the JSON output");
    return PSCTL_EXIT_OK;
}

const char *psctl_shape_str(const int64_t *dims, size_t n, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && used < cap; i++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
    return buf;
}

const char *psctl_bytes_str(uint64_t bytes, char *buf, size_t cap) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

json_t *psctl_shape_json(const int64_t *dims, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)dims[i]));
    return a;
}
