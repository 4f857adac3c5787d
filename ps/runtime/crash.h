/* crash.h: a log line and a backtrace when a program dies of a fatal signal.
 *
 * Without it a segfault leaves nothing in the program's log: the operator sees a
 * process gone and no reason. ps_crash_install sets handlers for SIGSEGV, SIGBUS,
 * SIGILL, SIGFPE and SIGABRT that write one record naming the process, the signal and the
 * faulting address (the word FATAL makes it easy to find), then the backtrace (glibc's
 * backtrace_symbols_fd, which needs no memory), and then let the signal kill the process as it
 * would have (the exit status and core dump are unchanged). Only async-signal-safe calls run in the
 * handler. The calling thread (main) also gets an alternate signal stack, so a stack overflow there
 * is reported too; other threads' overflows may die silently.
 */
#ifndef PS_RUNTIME_CRASH_H
#define PS_RUNTIME_CRASH_H

#include "status.h"

/* Installs the handlers; `who` names the process in the record (e.g.
 * "ps-shard[shard-1]"). Call once, early in main. */
ps_status ps_crash_install(const char *who);

#endif
