/* crash.c: see crash.h. Everything the handler needs is prepared at install time:
 * the text naming the process, the alternate stack, and one warm-up call of
 * backtrace() (its first call may load libgcc, which allocates). */
#include <execinfo.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash.h"

#define CRASH_STACK_BYTES (64u * 1024u) /* alternate signal stack */
#define CRASH_FRAMES 64                 /* frames printed at most */

static char crash_who[128];
static char *crash_stack;

/* Appends s to buf at *off (async-signal-safe). */
static void put_str(char *buf, size_t cap, size_t *off, const char *s) {
    while (*s && *off + 1 < cap)
        buf[(*off)++] = *s++;
}

static void put_hex(char *buf, size_t cap, size_t *off, uintptr_t v) {
    char tmp[2 + 2 * sizeof v + 1];
    size_t n = 0;
    tmp[n++] = '0';
    tmp[n++] = 'x';
    bool started = false;
    for (int shift = (int)(8 * sizeof v) - 4; shift >= 0; shift -= 4) {
        unsigned d = (unsigned)(v >> shift) & 0xf;
        if (d || started || shift == 0) {
            tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
            started = true;
        }
    }
    tmp[n] = '\0';
    put_str(buf, cap, off, tmp);
}

static void put_dec(char *buf, size_t cap, size_t *off, int v) {
    char tmp[16];
    size_t n = 0;
    unsigned u = v < 0 ? (unsigned)-v : (unsigned)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u && n < sizeof tmp);
    if (v < 0 && *off + 1 < cap)
        buf[(*off)++] = '-';
    while (n && *off + 1 < cap)
        buf[(*off)++] = tmp[--n];
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGILL:
        return "SIGILL";
    case SIGFPE:
        return "SIGFPE";
    case SIGABRT:
        return "SIGABRT";
    default:
        return "signal";
    }
}

static void on_fatal(int sig, siginfo_t *info, void *uctx) {
    (void)uctx;
    char line[512];
    size_t off = 0;
    put_str(line, sizeof line, &off, crash_who);
    put_str(line, sizeof line, &off, " FATAL ");
    put_str(line, sizeof line, &off, signal_name(sig));
    put_str(line, sizeof line, &off, " (signal ");
    put_dec(line, sizeof line, &off, sig);
    put_str(line, sizeof line, &off, ") at address ");
    put_hex(line, sizeof line, &off, (uintptr_t)(info ? info->si_addr : 0));
    put_str(line, sizeof line, &off, "; backtrace:\n");
    ssize_t w = write(STDERR_FILENO, line, off);
    void *frames[CRASH_FRAMES];
    int n = backtrace(frames, CRASH_FRAMES);
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    w = write(STDERR_FILENO, "(end of backtrace)\n", 19);
    (void)w;
    /* SA_RESETHAND restored the default action: die of the same signal. */
    raise(sig);
}

ps_status ps_crash_install(const char *who) {
    snprintf(crash_who, sizeof crash_who, "%s", who ? who : "ps");
    void *warm[2];
    (void)backtrace(warm, 2);
    if (!crash_stack) {
        crash_stack = malloc(CRASH_STACK_BYTES);
        if (!crash_stack)
            return PS_STATUS_NO_MEMORY;
    }
    stack_t ss = {.ss_sp = crash_stack, .ss_size = CRASH_STACK_BYTES, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        return PS_STATUS_INTERNAL;
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fatal;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return PS_STATUS_INTERNAL;
    }
    return PS_STATUS_OK;
}
