/* program.c: what every server program does before its own work: flags, finding the
 * coordinator, process set-up (logging, signals, the crash handler, gRPC), and the
 * configuration line of the start-up log. */
#include <stdio.h>

#include "crash.h"
#include "flags.h"
#include "log.h"
#include "runtime.h"

void ps_runtime_process_init(const char *program, const char *instance) {
    char who[192];
    ps_log_init(program, instance);
    if (instance && *instance)
        snprintf(who, sizeof who, "%s[%s]", program, instance);
    else
        snprintf(who, sizeof who, "%s", program);
    rpc_signals_block();
    if (ps_crash_install(who) != PS_STATUS_OK)
        PS_WARN("cannot install the crash handler: fatal signals will leave no backtrace");
    rpc_process_init();
    rpc_tune_allocator();
}

void ps_runtime_log_config(const char *config) {
    PS_INFO("configuration: %s", config);
}

int ps_runtime_start_program(ps_program *pr, int argc, char **argv) {
    char err[512];
    ps_flags_result fr = ps_flags_parse(pr->name, pr->summary, pr->flags, pr->n_flags, argc, argv,
                                        stdout, err, sizeof err);
    if (fr != PS_FLAGS_CONTINUE) {
        if (fr == PS_FLAGS_EXIT_USAGE)
            fprintf(stderr, "%s\n", err);
        return fr;
    }
    if (pr->coordinator &&
        ps_flags_coordinator(*pr->coordinator, pr->coordinator_addr, sizeof pr->coordinator_addr,
                             err, sizeof err) != PS_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", pr->name, err);
        return PS_FLAGS_EXIT_USAGE;
    }
    ps_runtime_process_init(pr->name, pr->id ? *pr->id : NULL);
    char config[2048];
    ps_flags_describe(pr->flags, pr->n_flags, config, sizeof config);
    ps_runtime_log_config(config);
    return PS_FLAGS_CONTINUE;
}
