/* flags.c: see flags.h. getopt_long does the scanning; the option array it needs is
 * built from the table on the heap (a table has at most PS_FLAGS_MAX entries). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "util.h"

/* Appends to buf at *off, never past cap (the result stays NUL-terminated). */
static void put(char *buf, size_t cap, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t cap, size_t *off, const char *fmt, ...) {
    if (*off >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *off, cap - *off, fmt, ap);
    va_end(ap);
    if (n > 0)
        *off = *off + (size_t)n < cap ? *off + (size_t)n : cap - 1;
}

static void value_text(const ps_flag *f, char *buf, size_t cap) {
    switch (f->type) {
    case PS_FLAG_STRING: {
        const char *v = *(const char *const *)f->value;
        snprintf(buf, cap, "%s", v && *v ? v : "(none)");
        break;
    }
    case PS_FLAG_INT:
        snprintf(buf, cap, "%d", *(const int *)f->value);
        break;
    case PS_FLAG_U64:
        snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)f->value);
        break;
    case PS_FLAG_BOOL:
        snprintf(buf, cap, "%s", *(const bool *)f->value ? "true" : "false");
        break;
    }
}

void ps_flags_usage(const char *prog, const char *summary, const ps_flag *flags, size_t n,
                    char *buf, size_t cap) {
    size_t off = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    put(buf, cap, &off, "usage: %s [options]\n%s\n\n", prog, summary ? summary : "");
    for (size_t i = 0; i < n; i++) {
        const ps_flag *f = &flags[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", f->name, f->type == PS_FLAG_BOOL ? "" : " ",
                 f->type == PS_FLAG_BOOL ? "" : (f->metavar ? f->metavar : "VALUE"));
        char def[128];
        value_text(f, def, sizeof def);
        put(buf, cap, &off, "  %-24s %s", left, f->help ? f->help : "");
        if (f->required)
            put(buf, cap, &off, " (required)");
        else if (f->type != PS_FLAG_BOOL && strcmp(def, "(none)") != 0)
            put(buf, cap, &off, " (default %s)", def);
        if ((f->type == PS_FLAG_INT || f->type == PS_FLAG_U64) && (f->min || f->max))
            put(buf, cap, &off, " [%" PRId64 "..%" PRId64 "]", f->min, f->max);
        put(buf, cap, &off, "\n");
    }
    put(buf, cap, &off, "  %-24s %s\n", "-h, --help", "this text");
}

void ps_flags_describe(const ps_flag *flags, size_t n, char *buf, size_t cap) {
    size_t off = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char v[256];
        value_text(&flags[i], v, sizeof v);
        put(buf, cap, &off, "%s--%s %s", i ? " " : "", flags[i].name, v);
    }
}

static bool parse_value(const ps_flag *f, const char *arg) {
    switch (f->type) {
    case PS_FLAG_STRING:
        *(const char **)f->value = arg;
        return true;
    case PS_FLAG_BOOL:
        *(bool *)f->value = true;
        return true;
    case PS_FLAG_INT: {
        int64_t lo = f->min || f->max ? f->min : INT32_MIN,
                hi = f->min || f->max ? f->max : INT32_MAX;
        char *end = NULL;
        errno = 0;
        /* an optional minus, then digits only: strtoll would take spaces and a plus */
        const char *digits = arg[0] == '-' ? arg + 1 : arg;
        if (*digits < '0' || *digits > '9')
            return false;
        long long v = strtoll(arg, &end, 10);
        if (errno || *end || v < lo || v > hi)
            return false;
        *(int *)f->value = (int)v;
        return true;
    }
    case PS_FLAG_U64: {
        uint64_t v = 0;
        if (!ps_parse_u64(arg, &v))
            return false;
        if ((f->min || f->max) && (v < (uint64_t)f->min || v > (uint64_t)f->max))
            return false;
        *(uint64_t *)f->value = v;
        return true;
    }
    }
    return false;
}

ps_flags_result ps_flags_parse(const char *prog, const char *summary, const ps_flag *flags,
                               size_t n, int argc, char **argv, void *out, char *err,
                               size_t err_len) {
    if (n > PS_FLAGS_MAX) {
        ps_set_err(err, err_len, "%s: %zu flags, more than the %d a table may have", prog, n,
                   PS_FLAGS_MAX);
        return PS_FLAGS_EXIT_USAGE;
    }
    struct option *opts = calloc(n + 2, sizeof *opts);
    bool *seen = calloc(n + 1, sizeof *seen);
    ps_flags_result rc = PS_FLAGS_CONTINUE;
    if (!opts || !seen) {
        ps_set_err(err, err_len, "%s: out of memory parsing flags", prog);
        rc = PS_FLAGS_EXIT_USAGE;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        opts[i].name = flags[i].name;
        opts[i].has_arg = flags[i].type == PS_FLAG_BOOL ? no_argument : required_argument;
        opts[i].val = 1000 + (int)i;
    }
    opts[n].name = "help";
    opts[n].val = 'h';
    optind = 1;
    opterr = 0;
    for (;;) {
        int idx = -1;
        int c = getopt_long(argc, argv, ":h", opts, &idx);
        if (c == -1)
            break;
        if (c == 'h') {
            if (out) {
                char *text = malloc(16384);
                if (text) {
                    ps_flags_usage(prog, summary, flags, n, text, 16384);
                    fputs(text, (FILE *)out);
                    free(text);
                }
            }
            rc = PS_FLAGS_EXIT_OK;
            goto out;
        }
        if (c == ':' || c == '?') {
            const char *what = argv[optind - 1] ? argv[optind - 1] : "?";
            ps_set_err(err, err_len,
                       c == ':' ? "%s: %s wants a value (see --help)"
                                : "%s: unknown option %s (see --help)",
                       prog, what);
            rc = PS_FLAGS_EXIT_USAGE;
            goto out;
        }
        size_t i = (size_t)(c - 1000);
        if (i >= n)
            continue;
        if (!parse_value(&flags[i], optarg)) {
            const ps_flag *f = &flags[i];
            if (f->type == PS_FLAG_INT || f->type == PS_FLAG_U64)
                ps_set_err(err, err_len,
                           "%s: --%s wants a whole number in %" PRId64 "..%" PRId64 ", got '%s'",
                           prog, f->name, f->min || f->max ? f->min : (int64_t)0,
                           f->min || f->max
                               ? f->max
                               : (int64_t)(f->type == PS_FLAG_INT ? INT32_MAX : INT64_MAX),
                           optarg);
            else
                ps_set_err(err, err_len, "%s: bad value '%s' for --%s", prog, optarg, f->name);
            rc = PS_FLAGS_EXIT_USAGE;
            goto out;
        }
        seen[i] = true;
    }
    if (optind < argc) {
        ps_set_err(err, err_len, "%s: unexpected argument '%s' (see --help)", prog, argv[optind]);
        rc = PS_FLAGS_EXIT_USAGE;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!flags[i].required)
            continue;
        bool empty = flags[i].type == PS_FLAG_STRING &&
                     (!*(const char **)flags[i].value || !**(const char **)flags[i].value);
        if (!seen[i] || empty) {
            ps_set_err(err, err_len, "%s: --%s is required (see --help)", prog, flags[i].name);
            rc = PS_FLAGS_EXIT_USAGE;
            goto out;
        }
    }
out:
    free(opts);
    free(seen);
    return rc;
}

ps_status ps_env_file_get(const char *path, const char *key, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f)
        return PS_STATUS_NOT_FOUND;
    char line[1024];
    size_t klen = strlen(key);
    ps_status st = PS_STATUS_NOT_FOUND;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) != 0 || line[klen] != '=')
            continue;
        char *v = line + klen + 1;
        v[strcspn(v, "\r\n")] = '\0';
        if (strlen(v) >= cap) {
            st = PS_STATUS_OUT_OF_RANGE;
            break;
        }
        strcpy(buf, v);
        st = PS_STATUS_OK;
        break;
    }
    fclose(f);
    return st;
}

ps_status ps_coordinator_addr(const char *flag, char *buf, size_t cap) {
    const char *v = flag && *flag ? flag : getenv("PS_COORDINATOR");
    if (v && *v) {
        if (strlen(v) >= cap)
            return PS_STATUS_OUT_OF_RANGE;
        strcpy(buf, v);
        return PS_STATUS_OK;
    }
    return ps_env_file_get("run/cluster.env", "COORDINATOR", buf, cap);
}

void ps_advertise_addr(const char *listen, int port, char *buf, size_t cap) {
    char host[256];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    if (!*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    snprintf(buf, cap, "%s:%d", host, port);
}

ps_status ps_write_port_file(const char *path, int port) {
    char text[32];
    int n = snprintf(text, sizeof text, "%d\n", port);
    return ps_write_file_atomic(path, text, (size_t)n);
}

ps_status ps_flags_coordinator(const char *flag, char *buf, size_t cap, char *err, size_t err_len) {
    ps_status st = ps_coordinator_addr(flag, buf, cap);
    if (st == PS_STATUS_OUT_OF_RANGE)
        ps_set_err(err, err_len, "the coordinator's address is longer than %zu characters",
                   cap - 1);
    else if (st != PS_STATUS_OK)
        ps_set_err(err, err_len,
                   "no coordinator: pass --coordinator HOST:PORT, set PS_COORDINATOR, or run "
                   "where run/cluster.env exists");
    return st;
}
