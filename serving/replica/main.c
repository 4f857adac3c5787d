/* main.c: ps-serve, a serving replica: its flags, and the wiring of the replica's
 * modules to the process runtime (ps/runtime: serving, registration, heartbeats, the
 * ring and registry watches, signals).
 *
 * The registry watch hands each model list to the loader (which loads each model's
 * latest version, retrying until it loads); the ring watch hands each ring to sync
 * (which subscribes to every shard on it and applies the updates they stream); the
 * rpc server answers the KServe v2 gRPC inference protocol (kserve.h). Models with
 * sparse tables read their rows from the shards at inference time (rows_source.h).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flags.h"
#include "kserve.h"
#include "loader.h"
#include "log.h"
#include "backend.h"
#include "models.h"
#include "openblas_core.h"
#include "rows_source.h"
#include "runtime.h"
#include "shard_source.h"
#include "sync.h"

#define SERVE_MAX_REPORTED 256 /* versions a heartbeat reports (the coordinator's limit) */

typedef struct serve_ctx {
    models *models;
    kserve *kserve;
    sync_ctx *sync;
    loader *loader;
    shard_source *load_src, *fix_src; /* one per pulling thread */
    rows_source *rows;                /* table rows, for every inference thread */
    atomic_bool registered;           /* ServerReady: joined the cluster once */
    /* what the last heartbeat reported serving (the heartbeat thread's alone) */
    models_ref serving[SERVE_MAX_REPORTED];
    Ps__ModelRef refs[SERVE_MAX_REPORTED], *ref_ptrs[SERVE_MAX_REPORTED];
    ps_status last_ring_status; /* to log a failure once per streak */
    const char *id;             /* this replica's id */
    _Atomic(ps_runtime *) rt;   /* set once the runtime exists (the loader may run before) */
} serve_ctx;

static void log_event(void *arg, ps_log_level level, const char *message) {
    (void)arg;
    ps_log(level, "%s", message);
}

static bool is_registered(void *arg) {
    return atomic_load(&((serve_ctx *)arg)->registered);
}

static bool gate(void *arg, int timeout_ms) {
    return sync_ready_wait(arg, timeout_ms);
}

static void on_ring(void *user, const Ps__Ring *ring) {
    serve_ctx *c = user;
    ps_status st = sync_ring_install(c->sync, ring);
    if (st != PS_STATUS_OK && st != c->last_ring_status)
        PS_ERROR("cannot follow every shard on the ring (at most %d): %s", SYNC_MAX_SHARDS,
                 ps_status_str(st));
    c->last_ring_status = st;
}

/* Heartbeats say which versions this replica serves, so the coordinator never deletes
 * one under it. */
static void on_heartbeat(void *user, Ps__HeartbeatRequest *req) {
    serve_ctx *c = user;
    size_t n = models_ready_refs(c->models, c->serving, SERVE_MAX_REPORTED);
    for (size_t i = 0; i < n; i++) {
        ps__model_ref__init(&c->refs[i]);
        c->refs[i].name = c->serving[i].name;
        c->refs[i].version = c->serving[i].version;
        c->ref_ptrs[i] = &c->refs[i];
    }
    req->n_serving = n;
    req->serving = c->ref_ptrs;
}

/* Consistent propagation: tells the coordinator that this replica built a cut (or could
 * not), which it waits for before it commits the publish. */
static void on_prepared(void *arg, const char *model, uint64_t version, uint64_t publish,
                        const char *error) {
    serve_ctx *c = arg;
    ps_runtime *rt = atomic_load(&c->rt);
    Ps__PreparedRequest req = PS__PREPARED_REQUEST__INIT;
    req.node_id = (char *)c->id;
    req.model = (char *)model;
    req.version = version;
    req.publish = publish;
    req.error = (char *)(error ? error : "");
    ProtobufCMessage *resp = NULL;
    rpc_result res = {0};
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st = rt ? rpc_call(ps_runtime_coordinator(rt), "/ps.Coordinator/Prepared", &req.base,
                                 &ps__prepared_response__descriptor, &opts, &resp, &res)
                      : PS_STATUS_UNAVAILABLE;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (error)
        PS_WARN("model %s version %llu: could not build publish %llu: %s", model,
                (unsigned long long)version, (unsigned long long)publish, error);
    else if (st != PS_STATUS_OK)
        PS_WARN("model %s version %llu: built publish %llu but could not tell the coordinator: "
                "%s",
                model, (unsigned long long)version, (unsigned long long)publish,
                rt ? res.details : "not connected yet");
    else
        PS_INFO("model %s version %llu: publish %llu built; serving it once committed", model,
                (unsigned long long)version, (unsigned long long)publish);
}

static void on_models(void *user, const Ps__ModelsUpdate *update) {
    serve_ctx *c = user;
    ps_status st = loader_registry_install(c->loader, update);
    if (st != PS_STATUS_OK)
        PS_ERROR("cannot take the registry's model list (%zu models): %s", update->n_models,
                 ps_status_str(st));
}

static int half_of_memory_mb(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t mb = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 2 >> 20 : 1024;
    return mb > (1u << 30) ? 1 << 30 : (int)mb;
}

/* Where loadable kernels modules (the CUDA one) are: $PS_KERNELS_MODULE_DIR, else the
 * build's kernels/ folder beside this program's (serving/ps-serve -> kernels/). */
static void module_dir(char *out, size_t len) {
    const char *env = getenv("PS_KERNELS_MODULE_DIR");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    char exe[900];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, len, "%s/../kernels", n > 0 ? exe : ".");
}

/* The modules, on the context. */
static ps_status build(serve_ctx *c, const char *coordinator, int max_model_mb, int rows_clients,
                       kernels_backend *backend) {
    replica_logger logger = {log_event, c};
    shard_source_opts so = {.coordinator = coordinator};
    ps_status st = rows_source_create(
        &(rows_source_opts){.coordinator = coordinator, .max_clients = (unsigned)rows_clients},
        &c->rows);
    if (st == PS_STATUS_OK)
        st = models_create(&(models_opts){.max_bytes = (uint64_t)max_model_mb << 20,
                                          .rows = rows_source_get(c->rows),
                                          .backend = backend},
                           &c->models);
    if (st == PS_STATUS_OK)
        st = kserve_create(
            &(kserve_opts){
                .models = c->models, .ready = is_registered, .ready_arg = c, .logger = logger},
            &c->kserve);
    if (st == PS_STATUS_OK)
        st = shard_source_create(&so, &c->load_src);
    if (st == PS_STATUS_OK)
        st = shard_source_create(&so, &c->fix_src);
    if (st == PS_STATUS_OK)
        st = sync_create(&(sync_opts){.models = c->models,
                                      .source = shard_source_get(c->fix_src),
                                      .logger = logger},
                         &c->sync);
    if (st == PS_STATUS_OK)
        st = loader_create(&(loader_opts){.models = c->models,
                                          .source = shard_source_get(c->load_src),
                                          .gate = gate,
                                          .gate_arg = c->sync,
                                          .logger = logger,
                                          .prepared = on_prepared,
                                          .prepared_arg = c},
                           &c->loader);
    return st;
}

/* Undoes build (in reverse), after every thread that uses the modules stopped. */
static void teardown(serve_ctx *c) {
    loader_destroy(c->loader);
    sync_destroy(c->sync);
    shard_source_destroy(c->fix_src);
    shard_source_destroy(c->load_src);
    kserve_destroy(c->kserve);
    models_destroy(c->models);
    rows_source_destroy(c->rows);
}

int main(int argc, char **argv) {
    kernels_openblas_fix_core(argv); /* first: it may execute this program again */
    const char *id = NULL, *listen = "127.0.0.1:0", *coord_flag = NULL, *port_file = NULL;
    int threads = 0, max_mb = 64, max_model_mb = half_of_memory_mb();
    int rows_clients = ROWS_SOURCE_DEFAULT_CLIENTS;
    const char *device = "cpu", *precision = "fp32";
    const ps_flag flags[] = {
        {"id", PS_FLAG_STRING, &id, 0, 0, "ID", "this replica's unique name", true},
        {"listen", PS_FLAG_STRING, &listen, 0, 0, "HOST:PORT",
         "address to serve on (port 0: a free one)", false},
        {"coordinator", PS_FLAG_STRING, &coord_flag, 0, 0, "HOST:PORT",
         "the coordinator (else $PS_COORDINATOR, else COORDINATOR= in run/cluster.env)", false},
        {"threads", PS_FLAG_INT, &threads, 0, 1024, "N", "rpc worker threads (0: one per CPU)",
         false},
        {"max-message-mb", PS_FLAG_INT, &max_mb, 1, 2047, "N", "largest request or response",
         false},
        {"max-model-mb", PS_FLAG_INT, &max_model_mb, 1, 1 << 30, "N",
         "parameter memory of every model version held, together (a version switch holds "
         "two); a model past it is not loaded (the default is half the machine's memory)",
         false},
        {"device", PS_FLAG_STRING, &device, 0, 0, "cpu|cuda|auto",
         "what forward passes run on (auto: CUDA when its module loads and finds a GPU, else "
         "the CPU; cuda: the GPU or an error). The module is libkernels_cuda.so in "
         "$PS_KERNELS_MODULE_DIR, else in the build's kernels/ folder",
         false},
        {"precision", PS_FLAG_STRING, &precision, 0, 0, "fp32|bf16",
         "the compute precision (bf16: GPU only)", false},
        {"rows-clients", PS_FLAG_INT, &rows_clients, 1, ROWS_SOURCE_MAX_CLIENTS, "N",
         "connections to the shards kept for reading sparse table rows at inference time "
         "(inferences that find them all busy wait for one)",
         false},
        {"port-file", PS_FLAG_STRING, &port_file, 0, 0, "FILE",
         "write the bound port there once serving", false},
    };
    ps_program prog = {
        .name = "ps-serve",
        .summary =
            "A serving replica: loads every registered model from the shards, applies the updates\n"
            "they stream, and answers KServe v2 gRPC inference calls\n"
            "(inference.GRPCInferenceService, with Triton's ModelConfig and ModelStatistics).",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0],
        .id = &id,
        .coordinator = &coord_flag};
    int fr = ps_runtime_start_program(&prog, argc, argv);
    if (fr != PS_FLAGS_CONTINUE)
        return fr;
    const char *coordinator = prog.coordinator_addr;
    char err[512];

    serve_ctx c = {.id = id};
    ps_runtime *rt = NULL;
    ps_runtime_opts ro = {
        .program = "ps-serve",
        .id = id,
        .coordinator = coordinator,
        .role = PS__NODE_ROLE__ROLE_SERVE,
        .hooks = {.user = &c, .ring = on_ring, .models = on_models, .heartbeat = on_heartbeat}};
    int rc = 1;
    kernels_backend *backend = NULL;
    char modules[1024];
    module_dir(modules, sizeof modules);
    ps_status st = kernels_backend_select(&(kernels_backend_select_opts){.device = device,
                                                                         .precision = precision,
                                                                         .module_dir = modules},
                                          &backend, err, sizeof err);
    if (st != PS_STATUS_OK) {
        PS_ERROR("--device %s --precision %s: %s", device, precision, err);
        return 2;
    }
    PS_INFO("forward passes on the %s backend (%s, %s memory)", kernels_backend_name(backend),
            kernels_precision_name(kernels_backend_precision(backend)),
            kernels_backend_host_memory(backend) ? "host" : "device");
    st = build(&c, coordinator, max_model_mb, rows_clients, backend);
    if (st == PS_STATUS_OK && (st = ps_runtime_create(&ro, &rt)) == PS_STATUS_OK)
        atomic_store(&c.rt, rt);
    if (st != PS_STATUS_OK) {
        PS_ERROR("cannot set up the replica: %s", ps_status_str(st));
        goto out;
    }
    rpc_method methods[KSERVE_METHOD_COUNT];
    size_t n_methods = kserve_methods(c.kserve, methods, KSERVE_METHOD_COUNT);
    rpc_server_opts so = {.listen = listen,
                          .threads = threads,
                          .grace_ms = 3000,
                          .max_message_bytes = (size_t)max_mb << 20};
    if (ps_runtime_start(rt, &so, methods, n_methods, port_file, err, sizeof err) != PS_STATUS_OK) {
        PS_ERROR("%s", err);
        goto out;
    }
    atomic_store(&c.registered, true);
    PS_INFO("serving KServe v2 gRPC on %s; coordinator %s", ps_runtime_addr(rt), coordinator);
    ps_runtime_wait(rt);
    rc = 0;
out:
    ps_runtime_destroy(rt); /* watches, heartbeats and the server end here */
    teardown(&c);
    kernels_backend_destroy(backend); /* after every model that computed on it */
    if (rc == 0)
        PS_INFO("stopped");
    return rc;
}
