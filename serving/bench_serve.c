/* bench_serve.c: serving latency and update visibility against a running cluster.
 *
 * Measures, on one connection per replica: sequential ModelInfer at batch 1 (p50,
 * p99), an empty unary round trip (ServerLive) for comparison, and how long an update
 * takes to show: push an ADD to a bias through the client library, then poll every
 * replica with ModelInfer until its output changes. Prints a table and a last line
 * `RESULT infer_p50_us=... infer_p99_us=... rtt_p50_us=... infer_over_rtt=...
 * update_visible_p50_ms=...`. A benchmark, not a test: targets are reported, not
 * asserted; the exit status is non-zero only when something fails outright.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference.pb-c.h"
#include "bench_report.h"
#include "flags.h"
#include "psclient.h"
#include "rpc.h"
#include "util.h"

#define MAX_REPLICAS 16

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *v, size_t n, double p) {
    qsort(v, n, sizeof *v, cmp_i64);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

typedef struct infer_ctx {
    const char *model;
    const char *input;
    int64_t features;
    float *pixels;
} infer_ctx;

/* One ModelInfer at batch 1; copies the first output into out (up to cap floats). */
static ps_status infer(rpc_channel *ch, const infer_ctx *ic, float *out, size_t cap, size_t *ret_n,
                       rpc_result *res) {
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    int64_t shape[2] = {1, ic->features};
    in.name = (char *)ic->input;
    in.datatype = "FP32";
    in.n_shape = 2;
    in.shape = shape;
    Inference__ModelInferRequest__InferInputTensor *ins[] = {&in};
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = (char *)ic->model;
    req.n_inputs = 1;
    req.inputs = ins;
    rpc_bytes_field raw = {.field_number = 7, .data = ic->pixels, .len = (size_t)ic->features * 4};
    ProtobufCMessage *m = NULL;
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st =
        rpc_call_with_bytes(ch, "/inference.GRPCInferenceService/ModelInfer", &req.base, &raw, 1,
                            &inference__model_infer_response__descriptor, &opts, &m, res);
    if (st != PS_STATUS_OK)
        return st;
    Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)m;
    size_t n = 0;
    if (r->n_raw_output_contents > 0) {
        n = r->raw_output_contents[0].len / 4;
        if (n > cap)
            n = cap;
        memcpy(out, r->raw_output_contents[0].data, n * 4);
    }
    *ret_n = n;
    protobuf_c_message_free_unpacked(m, NULL);
    return PS_STATUS_OK;
}

static ps_status live(rpc_channel *ch) {
    Inference__ServerLiveRequest req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    ps_status st = rpc_call(ch, "/inference.GRPCInferenceService/ServerLive", &req.base,
                            &inference__server_live_response__descriptor, NULL, &m, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

int main(int argc, char **argv) {
    const char *coord_flag = NULL, *serve_flag = NULL, *model = "digits_mlp", *input = "pixels",
               *bias = "fc2.bias";
    int features = 64, calls = 2000, updates = 30;
    const ps_flag flags[] = {
        {"coordinator", PS_FLAG_STRING, &coord_flag, 0, 0, "HOST:PORT",
         "the cluster (else $PS_COORDINATOR, else run/cluster.env)", false},
        {"serve", PS_FLAG_STRING, &serve_flag, 0, 0, "A,B,...",
         "replicas (else SERVE= in run/cluster.env)", false},
        {"model", PS_FLAG_STRING, &model, 0, 0, "NAME", "the model to call", false},
        {"input", PS_FLAG_STRING, &input, 0, 0, "NAME", "its input", false},
        {"features", PS_FLAG_INT, &features, 1, 1 << 24, "N", "input features at batch 1", false},
        {"bias", PS_FLAG_STRING, &bias, 0, 0, "TENSOR", "bias tensor to push ADDs to", false},
        {"calls", PS_FLAG_INT, &calls, 10, 10000000, "N", "sequential calls per latency row",
         false},
        {"updates", PS_FLAG_INT, &updates, 1, 100000, "N", "update-visibility trials", false},
    };
    char err[512];
    ps_flags_result fr = ps_flags_parse(
        "bench_serve",
        "Against a running cluster (scripts/cluster up + a model uploaded): ModelInfer latency\n"
        "next to an empty round trip, and how fast an update shows on every replica.",
        flags, sizeof flags / sizeof flags[0], argc, argv, stdout, err, sizeof err);
    if (fr != PS_FLAGS_CONTINUE) {
        if (fr == PS_FLAGS_EXIT_USAGE)
            fprintf(stderr, "%s\n", err);
        return fr;
    }
    char coord[256], serve[1024];
    if (ps_coordinator_addr(coord_flag, coord, sizeof coord) != PS_STATUS_OK) {
        fprintf(stderr, "bench_serve: no coordinator (run scripts/cluster up first)\n");
        return 2;
    }
    if (serve_flag)
        snprintf(serve, sizeof serve, "%s", serve_flag);
    else if (ps_env_file_get("run/cluster.env", "SERVE", serve, sizeof serve) != PS_STATUS_OK) {
        fprintf(stderr, "bench_serve: no replicas: pass --serve or run scripts/cluster up\n");
        return 2;
    }
    rpc_process_init();
    rpc_tune_allocator();
    rpc_channel *ch[MAX_REPLICAS];
    char *addrs[MAX_REPLICAS];
    int n_rep = 0;
    for (char *save = NULL, *tok = strtok_r(serve, ",", &save); tok && n_rep < MAX_REPLICAS;
         tok = strtok_r(NULL, ",", &save)) {
        addrs[n_rep] = tok;
        if (rpc_channel_create(tok, NULL, &ch[n_rep]) != PS_STATUS_OK)
            return 1;
        n_rep++;
    }
    if (n_rep == 0) {
        fprintf(stderr, "bench_serve: no replica addresses\n");
        return 2;
    }
    infer_ctx ic = {model, input, features, calloc((size_t)features, sizeof(float))};
    /* an all-zero input keeps the logits moderate (the bias dominates), so a change
     * of one bias entry shows in every probability */
    float out[4096], base[4096];
    size_t n_out = 0;
    rpc_result res;
    if (infer(ch[0], &ic, base, 4096, &n_out, &res) != PS_STATUS_OK) {
        fprintf(stderr, "bench_serve: ModelInfer on %s failed: %s %s\n", addrs[0],
                rpc_code_name(res.grpc_code), res.details);
        return 1;
    }

    /* latency: warm up, then sequential calls */
    int64_t *lat_inf = malloc((size_t)calls * sizeof(int64_t)),
            *lat_rtt = malloc((size_t)calls * sizeof(int64_t));
    for (int i = 0; i < 200; i++) {
        infer(ch[0], &ic, out, 4096, &n_out, &res);
        live(ch[0]);
    }
    for (int i = 0; i < calls; i++) {
        int64_t t0 = ps_now_us();
        if (infer(ch[0], &ic, out, 4096, &n_out, &res) != PS_STATUS_OK) {
            fprintf(stderr, "bench_serve: ModelInfer failed: %s\n", res.details);
            return 1;
        }
        int64_t t1 = ps_now_us();
        if (live(ch[0]) != PS_STATUS_OK) {
            fprintf(stderr, "bench_serve: ServerLive failed\n");
            return 1;
        }
        lat_inf[i] = t1 - t0;
        lat_rtt[i] = ps_now_us() - t1;
    }
    int64_t inf50 = pct(lat_inf, (size_t)calls, 0.5), inf99 = pct(lat_inf, (size_t)calls, 0.99);
    int64_t rtt50 = pct(lat_rtt, (size_t)calls, 0.5), rtt99 = pct(lat_rtt, (size_t)calls, 0.99);

    /* update visibility */
    ps_client *pc = NULL;
    if (ps_client_create(coord, &pc, err, sizeof err) != PS_STATUS_OK) {
        fprintf(stderr, "bench_serve: %s\n", err);
        return 1;
    }
    Ps__ModelInfo *mi = NULL;
    if (ps_client_get_model(pc, model, 0, &mi) != PS_STATUS_OK) {
        fprintf(stderr, "bench_serve: %s\n", ps_client_error(pc));
        return 1;
    }
    const Ps__TensorInfo *t = ps_client_find_tensor(mi, bias);
    if (!t) {
        fprintf(stderr, "bench_serve: model %s has no tensor %s\n", model, bias);
        return 1;
    }
    uint64_t count = ps_tensor_count(t);
    float *delta = calloc(count, sizeof(float));
    int64_t *vis = malloc((size_t)updates * sizeof(int64_t));
    int failures = 0;
    for (int u = 0; u < updates; u++) {
        float before[MAX_REPLICAS][64];
        size_t nb[MAX_REPLICAS];
        for (int r = 0; r < n_rep; r++) {
            infer(ch[r], &ic, out, 4096, &nb[r], &res);
            memcpy(before[r], out, (nb[r] < 64 ? nb[r] : 64) * 4);
        }
        /* alternate -d / +d on the most likely class so the model stays where it was */
        size_t top = 0;
        for (size_t k = 1; k < nb[0] && k < count; k++)
            if (before[0][k] > before[0][top])
                top = k;
        for (uint64_t k = 0; k < count; k++)
            delta[k] = k == top ? (u % 2 == 0 ? -0.5f : 0.5f) : 0.0f;
        int64_t t0 = ps_now_us();
        if (ps_client_push_tensor(pc, model, mi->version, t, PS__PUSH_OP__PUSH_ADD, delta, count) !=
            PS_STATUS_OK) {
            fprintf(stderr, "bench_serve: push failed: %s\n", ps_client_error(pc));
            return 1;
        }
        bool seen[MAX_REPLICAS] = {false};
        int seen_n = 0;
        while (seen_n < n_rep && ps_now_us() - t0 < 5000000) {
            for (int r = 0; r < n_rep; r++) {
                if (seen[r])
                    continue;
                size_t n = 0;
                if (infer(ch[r], &ic, out, 4096, &n, &res) != PS_STATUS_OK)
                    continue;
                if (memcmp(out, before[r], (n < 64 ? n : 64) * 4) != 0) {
                    seen[r] = true;
                    seen_n++;
                }
            }
        }
        if (seen_n < n_rep)
            failures++;
        vis[u] = ps_now_us() - t0;
    }
    int64_t vis50 = pct(vis, (size_t)updates, 0.5), vis_max = pct(vis, (size_t)updates, 1.0);
    double ratio = rtt50 > 0 ? (double)inf50 / (double)rtt50 : 0;

    bench_report *rep = NULL;
    if (bench_report_create("bench_serve",
                            "ModelInfer latency next to an empty round trip, and "
                            "how fast an update shows on every replica",
                            &rep) != PS_STATUS_OK)
        return 1;
    bench_report_param(rep, "coordinator", "%s", coord);
    bench_report_param(rep, "model", "%s (input %s, %d features, batch 1)", model, input, features);
    bench_report_param(rep, "replicas", "%d", n_rep);
    bench_report_param(rep, "calls", "%d (sequential, one connection)", calls);
    bench_report_param(rep, "updates", "%d (ADD to %s)", updates, bias);
    bench_report_row(rep, "infer p50", (double)inf50, 0, "us", BENCH_TARGET_NONE, 0,
                     "infer_p50_us");
    bench_report_row(rep, "infer p99", (double)inf99, 0, "us", BENCH_TARGET_NONE, 0,
                     "infer_p99_us");
    bench_report_row(rep, "empty_rtt p50 (ServerLive)", (double)rtt50, 0, "us", BENCH_TARGET_NONE,
                     0, "rtt_p50_us");
    bench_report_row(rep, "empty_rtt p99 (ServerLive)", (double)rtt99, 0, "us", BENCH_TARGET_NONE,
                     0, NULL);
    bench_report_row(rep, "infer_over_rtt (p50)", ratio, 3, "x", BENCH_TARGET_AT_MOST, 1.5,
                     "infer_over_rtt");
    bench_report_row(rep, "update_visible p50", (double)vis50 / 1000.0, 3, "ms",
                     BENCH_TARGET_AT_MOST, 10, "update_visible_p50_ms");
    bench_report_row(rep, "update_visible max", (double)vis_max / 1000.0, 3, "ms",
                     BENCH_TARGET_NONE, 0, NULL);
    if (failures)
        bench_report_note(rep, "%d update(s) not seen on every replica within 5 s", failures);
    bench_report_print(rep, stdout);
    bench_report_destroy(rep);
    ps__model_info__free_unpacked(mi, NULL);
    ps_client_destroy(pc);
    for (int r = 0; r < n_rep; r++)
        rpc_channel_destroy(ch[r]);
    free(ic.pixels);
    free(lat_inf);
    free(lat_rtt);
    free(delta);
    free(vis);
    return failures ? 1 : 0;
}
