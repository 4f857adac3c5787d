/* rpc_test_server.c: a server of the rpc test service (proto/testsvc.proto) for tests
 * that drive it from another process (the Python wire-compatibility test, shutdown
 * tests). Prints "PORT <n>" once listening; exits 0 after a clean shutdown on SIGTERM
 * or SIGINT. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "testsvc_impl.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: rpc_test_server [options]\n"
        "Serves pstest.Test (proto/testsvc.proto) until SIGTERM or SIGINT.\n\n"
        "  --listen HOST:PORT       address to bind (default 127.0.0.1:0, a free port)\n"
        "  --threads N              worker threads (default: number of CPUs)\n"
        "  --max-message-bytes N    largest message accepted or sent (default 64 MiB)\n"
        "  --grace-ms N             shutdown grace for in-flight calls (default 5000)\n"
        "  --spin-us N              poll queues this long before blocking (default 200; -1 never)\n"
        "  -h, --help               this text\n");
}

int main(int argc, char **argv) {
    rpc_server_opts opts = {.listen = "127.0.0.1:0"};
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"max-message-bytes", required_argument, NULL, 'm'},
        {"grace-ms", required_argument, NULL, 'g'},
        {"spin-us", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            opts.listen = optarg;
            break;
        case 't':
            opts.threads = atoi(optarg);
            break;
        case 'm':
            opts.max_message_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'g':
            opts.grace_ms = atoi(optarg);
            break;
        case 's':
            opts.spin_us = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    rpc_signals_block();
    rpc_process_init();
    rpc_tune_allocator();
    rpc_server *server = NULL;
    int port = 0;
    ps_status st = rpc_server_create(&opts, &server);
    if (st == PS_STATUS_OK)
        st = testsvc_register(server);
    if (st == PS_STATUS_OK)
        st = rpc_server_start(server, &port);
    if (st != PS_STATUS_OK) {
        fprintf(stderr, "rpc_test_server: cannot serve on %s: %s\n", opts.listen,
                ps_status_str(st));
        rpc_server_destroy(server);
        return 1;
    }
    printf("PORT %d\n", port);
    fflush(stdout);
    int sig = rpc_signals_wait();
    fprintf(stderr, "rpc_test_server: signal %d, shutting down\n", sig);
    rpc_server_shutdown(server);
    rpc_server_destroy(server);
    fprintf(stderr, "rpc_test_server: shutdown complete\n");
    return 0;
}
