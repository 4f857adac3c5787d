/* bench_kernels.c: benchmark of a kernels backend (a program, not a test): the CPU by
 * default, the CUDA module with --device cuda (or auto), in FP32 or --precision bf16.
 *
 * What it measures, in the layout every benchmark of the project shares
 * (ps/common/bench_report.h):
 *   mlp_gflops    an MLP forward pass through the backend's dispatchers (dense with
 *                 bias + ReLU on every hidden layer, bias only on the last), on backend
 *                 buffers, on a stream synced before the clock stops: 2 * batch * the
 *                 sum of in*out over the layers, over the best wall time of R runs.
 *   sgemm_gflops  bare cblas_sgemm of the very same shapes (no bias, no activation), in
 *                 the same run, with the same OpenBLAS threads: the ceiling.
 *   mlp_vs_sgemm  their ratio: what the backend adds over the GEMMs (target >= 0.8).
 *   conv2d        a 3x3 convolution (ResNet's 64->64 at 56x56, batch 8) through the
 *                 backend: 2 * N*K*P*Q*C*R*S flops over the best time.
 * Runs alternate (MLP, sgemm, MLP, ...) after a warm-up, so both see the same load
 * on a shared machine. The backend's MLP output is checked against sgemm + bias +
 * ReLU computed here (exit 1 on a difference; BF16 is allowed CHECK_BF16_TOL). On a
 * device backend the bare sgemm rows are not run (a CPU sgemm is no ceiling for a GPU):
 * RESULT says sgemm_gflops=na. Times are wall clock around a stream sync, so on a GPU
 * they include launch overheads, which is what a forward pass pays.
 *   minilm_seq_s  with --minilm DIR: sentences per second of all-MiniLM-L6-v2 (as
 *                 scripts/models/minilm.py exports it) through the model executor, the
 *                 serving path, at --minilm-batch x its sequence length (bench_minilm.h).
 *   torch_minilm_seq_s  PyTorch eager on the same weights and shapes, measured by
 *                 scripts/bench/minilm_torch.py in the same run and passed in with
 *                 --torch-minilm-seq-s; minilm_vs_torch their ratio (target >= 1.0).
 * Figures not measured print as "na" on the RESULT line.
 */
#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bench_minilm.h"
#include "bench_report.h"
#include "util.h"

#define BENCH_MAX_LAYERS 8     /* widths in --layers, input included */
#define BENCH_MAX_WIDTH 65536u /* largest width in --layers */
#define BENCH_MAX_BATCH 65536u /* largest --batch */
#define CHECK_TOL 1e-3         /* atol and rtol: backend MLP vs sgemm + bias + ReLU here */
#define CHECK_BF16_TOL 5e-2    /* the same in BF16: 2^-8 per input, over 3 layers */

typedef struct bench_opts {
    size_t widths[BENCH_MAX_LAYERS];
    size_t n_widths;
    uint64_t batch, reps, threads;
    bool conv;
    const char *device, *precision; /* kernels_backend_select's words */
    const char *minilm;             /* --minilm DIR, or NULL */
    uint64_t minilm_batch;
    double torch_seq_s; /* --torch-minilm-seq-s, or 0: not measured */
} bench_opts;

static void usage(FILE *out, const char *prog) {
    fprintf(out,
            "usage: %s [--device cpu|cuda|auto] [--precision fp32|bf16] [--layers W0,W1,...]\n"
            "          [--batch N] [--reps R] [--threads T] [--no-conv]\n"
            "          [--minilm DIR [--minilm-batch N] [--torch-minilm-seq-s X]]\n"
            "\n"
            "Times an MLP forward pass through a kernels backend (on the CPU: against bare\n"
            "OpenBLAS sgemm on the same shapes), and a 3x3 conv2d.\n"
            "\n"
            "  --device D         cpu (default), cuda, auto (modules: $PS_KERNELS_MODULE_DIR)\n"
            "  --precision P      fp32 (default) or bf16 (cuda only)\n"
            "  --layers W0,W1,..  layer widths, input first (default 1024,4096,4096,1024)\n"
            "  --batch N          rows per forward pass (default 256)\n"
            "  --reps R           timed runs of each, the best is kept (default 5)\n"
            "  --threads T        OpenBLAS threads (default 0: OpenBLAS's own choice)\n"
            "  --no-conv          skip the conv2d row\n"
            "  --minilm DIR       also time that MiniLM model directory (model executor)\n"
            "  --minilm-batch N   sequences per MiniLM pass (default 32)\n"
            "  --torch-minilm-seq-s X  PyTorch's figure for the same pass, to compare\n"
            "  --openblas-core    print the kernels OpenBLAS chose for this CPU and exit\n",
            prog);
}

static bool parse_widths(const char *s, bench_opts *o) {
    char buf[256];
    if (strlen(s) >= sizeof(buf)) {
        return false;
    }
    strcpy(buf, s);
    o->n_widths = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        uint64_t w;
        if (o->n_widths == BENCH_MAX_LAYERS || !ps_parse_u64_range(tok, 1, BENCH_MAX_WIDTH, &w)) {
            return false;
        }
        o->widths[o->n_widths++] = (size_t)w;
    }
    return o->n_widths >= 2;
}

/* A finite number > 0. */
static bool parse_positive(const char *s, double *ret) {
    char *end = NULL;
    const double x = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(x) || x <= 0) {
        return false;
    }
    *ret = x;
    return true;
}

/* 0: run; 1: done (--help, --openblas-core); 2: bad arguments. */
static int parse_args(int argc, char **argv, bench_opts *o) {
    *o = (bench_opts){.widths = {1024, 4096, 4096, 1024},
                      .n_widths = 4,
                      .batch = 256,
                      .reps = 5,
                      .threads = 0,
                      .conv = true,
                      .device = "cpu",
                      .precision = "fp32",
                      .minilm_batch = 32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            return 1;
        } else if (strcmp(a, "--openblas-core") == 0) { /* for scripts/bench/kernels */
            printf("%s\n", openblas_get_corename());
            return 1;
        } else if (strcmp(a, "--no-conv") == 0) {
            o->conv = false;
            continue;
        } else if (v != NULL && strcmp(a, "--device") == 0) {
            o->device = v; /* checked by kernels_backend_select */
        } else if (v != NULL && strcmp(a, "--precision") == 0) {
            o->precision = v;
        } else if (v != NULL && strcmp(a, "--layers") == 0 && parse_widths(v, o)) {
        } else if (v != NULL && strcmp(a, "--batch") == 0 &&
                   ps_parse_u64_range(v, 1, BENCH_MAX_BATCH, &o->batch)) {
        } else if (v != NULL && strcmp(a, "--reps") == 0 &&
                   ps_parse_u64_range(v, 1, 1000, &o->reps)) {
        } else if (v != NULL && strcmp(a, "--threads") == 0 &&
                   ps_parse_u64_range(v, 0, 1024, &o->threads)) {
        } else if (v != NULL && strcmp(a, "--minilm") == 0) {
            o->minilm = v;
        } else if (v != NULL && strcmp(a, "--minilm-batch") == 0 &&
                   ps_parse_u64_range(v, 1, BENCH_MAX_BATCH, &o->minilm_batch)) {
        } else if (v != NULL && strcmp(a, "--torch-minilm-seq-s") == 0 &&
                   parse_positive(v, &o->torch_seq_s)) {
        } else {
            fprintf(stderr, "bench_kernels: bad argument %s%s%s\n", a, v ? " " : "", v ? v : "");
            usage(stderr, argv[0]);
            return 2;
        }
        i++;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *rand_floats(size_t n, float scale, uint64_t *rng) {
    float *v = malloc(n * sizeof(*v));
    for (size_t i = 0; v != NULL && i < n; i++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = scale * (float)((double)(*rng >> 40) / (double)(1ULL << 23) - 1.0);
    }
    return v;
}

/* The MLP: host weights (w, b) for the check, their backend copies (dw, db), and one
 * activation buffer per width. */
typedef struct mlp {
    size_t n_layers, batch;
    const size_t *widths;
    float *w[BENCH_MAX_LAYERS], *b[BENCH_MAX_LAYERS];
    float *dw[BENCH_MAX_LAYERS], *db[BENCH_MAX_LAYERS], *dact[BENCH_MAX_LAYERS];
} mlp;

static float *dev_copy(kernels_backend *be, kernels_stream *s, const float *host, size_t n) {
    void *p = NULL;
    if (kernels_buffer_alloc(be, n * sizeof(float), &p) != PS_STATUS_OK) {
        return NULL;
    }
    if (host != NULL && kernels_buffer_upload(s, p, host, n * sizeof(float)) != PS_STATUS_OK) {
        kernels_buffer_free(be, p);
        return NULL;
    }
    return p;
}

static bool mlp_setup(mlp *m, kernels_backend *be, kernels_stream *s, uint64_t *rng) {
    for (size_t l = 0; l <= m->n_layers; l++) {
        const size_t in = m->widths[l];
        float *x0 = l == 0 ? rand_floats(m->batch * in, 1.0f, rng) : NULL;
        m->dact[l] = dev_copy(be, s, x0, m->batch * in);
        free(x0);
        if (m->dact[l] == NULL || l == m->n_layers) {
            continue;
        }
        const size_t out = m->widths[l + 1];
        m->w[l] = rand_floats(out * in, 1.0f / sqrtf((float)in), rng); /* activations O(1) */
        m->b[l] = rand_floats(out, 0.1f, rng);
        if (m->w[l] == NULL || m->b[l] == NULL) {
            return false;
        }
        m->dw[l] = dev_copy(be, s, m->w[l], out * in);
        m->db[l] = dev_copy(be, s, m->b[l], out);
        if (m->dw[l] == NULL || m->db[l] == NULL) {
            return false;
        }
    }
    return m->dact[0] != NULL && m->dact[m->n_layers] != NULL;
}

static void mlp_free(mlp *m, kernels_backend *be) {
    for (size_t l = 0; l < BENCH_MAX_LAYERS; l++) {
        kernels_buffer_free(be, m->dw[l]), kernels_buffer_free(be, m->db[l]);
        kernels_buffer_free(be, m->dact[l]);
        free(m->w[l]), free(m->b[l]);
    }
}

static ps_status mlp_forward(const mlp *m, kernels_stream *s) {
    for (size_t l = 0; l < m->n_layers; l++) {
        const kernels_activation act =
            l + 1 < m->n_layers ? KERNELS_ACTIVATION_RELU : KERNELS_ACTIVATION_NONE;
        ps_status st = kernels_op_dense(s, m->dact[l], m->batch, m->widths[l], m->dw[l], m->db[l],
                                        m->widths[l + 1], act, m->dact[l + 1]);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    return kernels_stream_sync(s);
}

/* The same GEMMs, bare: x_l[batch, in] w_l^T into host buffers a_l (a_0 = the input). */
static void sgemm_forward(const mlp *m, float *const *a) {
    for (size_t l = 0; l < m->n_layers; l++) {
        const size_t in = m->widths[l], out = m->widths[l + 1];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)m->batch, (blasint)out,
                    (blasint)in, 1.0f, a[l], (blasint)in, m->w[l], (blasint)in, 0.0f, a[l + 1],
                    (blasint)out);
    }
}

/* a_l after sgemm_forward, with bias + ReLU added here layer by layer, against the
 * backend's output within tol (atol and rtol); the count of elements that differ. */
static size_t mlp_check(const mlp *m, float *const *a, kernels_stream *s, double tol) {
    for (size_t l = 0; l < m->n_layers; l++) {
        const size_t in = m->widths[l], out = m->widths[l + 1];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)m->batch, (blasint)out,
                    (blasint)in, 1.0f, a[l], (blasint)in, m->w[l], (blasint)in, 0.0f, a[l + 1],
                    (blasint)out);
        for (size_t i = 0; i < m->batch * out; i++) {
            const float v = a[l + 1][i] + m->b[l][i % out];
            a[l + 1][i] = l + 1 < m->n_layers && v < 0.0f ? 0.0f : v;
        }
    }
    const size_t n = m->batch * m->widths[m->n_layers];
    float *got = malloc(n * sizeof(*got));
    if (got == NULL ||
        kernels_buffer_download(s, got, m->dact[m->n_layers], n * sizeof(*got)) != PS_STATUS_OK) {
        free(got);
        return n;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double want = a[m->n_layers][i];
        bad += !(fabs(got[i] - want) <= tol + tol * fabs(want));
    }
    free(got);
    return bad;
}

/* Best seconds of a 3x3 conv2d (64->64, 56x56, batch 8, pad 1) through the backend;
 * its flops into *ret_flops. A negative time when it failed. */
static double bench_conv(kernels_backend *be, kernels_stream *s, uint64_t reps, uint64_t *rng,
                         double *ret_flops) {
    const kernels_conv2d_shape c = {8, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const size_t n_x = 8 * 64 * 56 * 56, n_w = 64 * 64 * 9, n_y = n_x;
    float *x = rand_floats(n_x, 1.0f, rng), *w = rand_floats(n_w, 0.05f, rng);
    float *dx = x ? dev_copy(be, s, x, n_x) : NULL, *dw = w ? dev_copy(be, s, w, n_w) : NULL;
    float *dy = dev_copy(be, s, NULL, n_y);
    double best = -1;
    for (uint64_t r = 0; dx && dw && dy && r <= reps; r++) { /* r == 0: warm-up */
        const double t0 = now_s();
        if (kernels_op_conv2d(s, &c, dx, dw, NULL, KERNELS_ACTIVATION_RELU, dy) != PS_STATUS_OK ||
            kernels_stream_sync(s) != PS_STATUS_OK) {
            best = -1;
            break;
        }
        const double t = now_s() - t0;
        best = r == 1 || (r > 1 && t < best) ? t : best;
    }
    *ret_flops = 2.0 * 8 * 64 * 56 * 56 * 64 * 9;
    kernels_buffer_free(be, dy), kernels_buffer_free(be, dw), kernels_buffer_free(be, dx);
    free(w), free(x);
    return best;
}

/* Prints the report with the RESULT line completed by the fields this benchmark does
 * not measure yet or here ("na"), the device and the precision. */
static int print_report(const bench_report *r, const kernels_backend *be, bool with_sgemm,
                        bool with_minilm, bool with_torch) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem == NULL) {
        return bench_report_print(r, stdout);
    }
    const int misses = bench_report_print(r, mem);
    fclose(mem);
    if (len > 0 && text[len - 1] == '\n') {
        text[--len] = '\0';
    }
    printf("%s%s%s%s%s device=%s precision=%s\n", text,
           with_sgemm ? "" : " sgemm_gflops=na mlp_vs_sgemm=na",
           with_minilm ? "" : " minilm_seq_s=na", with_torch ? "" : " torch_minilm_seq_s=na",
           with_minilm && with_torch ? "" : " minilm_vs_torch=na", kernels_backend_name(be),
           kernels_precision_name(kernels_backend_precision(be)));
    free(text);
    return misses;
}

int main(int argc, char **argv) {
    bench_opts o;
    const int parsed = parse_args(argc, argv, &o);
    if (parsed != 0) {
        return parsed == 1 ? 0 : 2;
    }
    if (o.threads > 0) {
        openblas_set_num_threads((int)o.threads);
    }
    kernels_backend *be = NULL;
    kernels_stream *s = NULL;
    bench_report *rep = NULL;
    mlp m = {.n_layers = o.n_widths - 1, .batch = o.batch, .widths = o.widths};
    float *a[BENCH_MAX_LAYERS] = {0};
    int rc = 2;
    uint64_t rng = 12345;
    char err[512] = "";
    const kernels_backend_select_opts sel = {.device = o.device,
                                             .precision = o.precision,
                                             .module_dir = getenv("PS_KERNELS_MODULE_DIR")};
    if (kernels_backend_select(&sel, &be, err, sizeof(err)) != PS_STATUS_OK) {
        fprintf(stderr, "bench_kernels: --device %s --precision %s: %s\n", o.device, o.precision,
                err);
        return 2;
    }
    const bool with_sgemm = strcmp(kernels_backend_name(be), "cpu") == 0; /* CPU's ceiling */
    if (kernels_stream_create(be, &s) != PS_STATUS_OK || !mlp_setup(&m, be, s, &rng) ||
        bench_report_create("bench_kernels", "kernels backend: MLP and conv2d (vs sgemm on CPU)",
                            &rep) != PS_STATUS_OK) {
        fprintf(stderr, "bench_kernels: setup failed (out of memory?)\n");
        goto out;
    }
    double flops = 0;
    for (size_t l = 0; l <= m.n_layers; l++) {
        a[l] = malloc(o.batch * o.widths[l] * sizeof(float));
        if (a[l] == NULL) {
            fprintf(stderr, "bench_kernels: out of memory\n");
            goto out;
        }
        flops += l < m.n_layers ? 2.0 * (double)o.batch * o.widths[l] * o.widths[l + 1] : 0;
    }
    if (kernels_buffer_download(s, a[0], m.dact[0], o.batch * o.widths[0] * sizeof(float)) !=
        PS_STATUS_OK) {
        goto out;
    }
    double best_mlp = INFINITY, best_sgemm = INFINITY;
    for (uint64_t r = 0; r <= o.reps; r++) { /* r == 0: warm-up, not counted */
        double t0 = now_s();
        if (mlp_forward(&m, s) != PS_STATUS_OK) {
            fprintf(stderr, "bench_kernels: the backend's dense failed\n");
            rc = 1;
            goto out;
        }
        const double t_mlp = now_s() - t0;
        t0 = now_s();
        if (with_sgemm) {
            sgemm_forward(&m, a);
        }
        const double t_sgemm = now_s() - t0; /* 0 without sgemm: not reported */
        if (r > 0) {
            best_mlp = fmin(best_mlp, t_mlp);
            best_sgemm = fmin(best_sgemm, t_sgemm);
        }
    }
    const size_t bad = mlp_check(
        &m, a, s,
        kernels_backend_precision(be) == KERNELS_PRECISION_BF16 ? CHECK_BF16_TOL : CHECK_TOL);
    double conv_flops = 0;
    const double conv_s = o.conv ? bench_conv(be, s, o.reps, &rng, &conv_flops) : 0;

    char layers[128] = "";
    for (size_t l = 0, used = 0; l < o.n_widths && used < sizeof(layers); l++) {
        used += (size_t)snprintf(layers + used, sizeof(layers) - used, "%s%zu", l ? "-" : "",
                                 o.widths[l]);
    }
    bench_report_param(rep, "backend", "%s (%s)", kernels_backend_name(be),
                       kernels_precision_name(kernels_backend_precision(be)));
    bench_report_param(rep, "layers", "%s (bias + relu; last: bias)", layers);
    bench_report_param(rep, "batch", "%llu", (unsigned long long)o.batch);
    bench_report_param(rep, "reps", "%llu (best kept, after 1 warm-up)",
                       (unsigned long long)o.reps);
    bench_report_param(rep, "openblas_threads", "%d", openblas_get_num_threads());
    bench_report_param(rep, "openblas", "%s, core %s", openblas_get_config(),
                       openblas_get_corename());
    const double mlp_gf = flops / best_mlp * 1e-9, sgemm_gf = flops / best_sgemm * 1e-9;
    bench_report_row(rep, "mlp forward (backend)", mlp_gf, 1, "GFLOP/s", BENCH_TARGET_NONE, 0,
                     "mlp_gflops");
    if (with_sgemm) {
        bench_report_row(rep, "sgemm same shapes", sgemm_gf, 1, "GFLOP/s", BENCH_TARGET_NONE, 0,
                         "sgemm_gflops");
        bench_report_row(rep, "mlp / sgemm", mlp_gf / sgemm_gf, 3, "x", BENCH_TARGET_AT_LEAST, 0.8,
                         "mlp_vs_sgemm");
    }
    bench_report_row(rep, "mlp batch time", best_mlp * 1e3, 2, "ms", BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(rep, "mlp outputs wrong", (double)bad, 0, "count", BENCH_TARGET_EQUAL, 0,
                     NULL);
    if (o.conv) {
        bench_report_row(rep, "conv2d 3x3 64->64 56x56 N8",
                         conv_s > 0 ? conv_flops / conv_s * 1e-9 : 0, 1, "GFLOP/s",
                         BENCH_TARGET_NONE, 0, NULL);
    }
    bench_minilm_result mr = {0};
    bool minilm_ok = false, minilm_failed = false;
    if (o.minilm) {
        const ps_status mst =
            bench_minilm_run(o.minilm, be, o.minilm_batch, o.reps, &mr, err, sizeof(err));
        if (mst != PS_STATUS_OK) {
            /* a backend the executor cannot drive yet is a gap, not a failure */
            minilm_failed = mst != PS_STATUS_UNIMPLEMENTED;
            fprintf(stderr, "bench_kernels: --minilm %s: %s\n", o.minilm, err);
            bench_report_note(rep, "MiniLM not measured: %s", err);
        } else {
            minilm_ok = true;
            bench_report_param(rep, "minilm", "%s, batch %zu x %zu tokens", o.minilm, mr.batch,
                               mr.seq);
            bench_report_row(rep, "minilm encode (executor)", mr.seq_s, 1, "seq/s",
                             BENCH_TARGET_NONE, 0, "minilm_seq_s");
            bench_report_row(rep, "minilm batch time", mr.best_s * 1e3, 1, "ms", BENCH_TARGET_NONE,
                             0, NULL);
        }
    } else {
        bench_report_note(rep, "MiniLM: no --minilm DIR given: RESULT says na");
    }
    const bool torch_ok = o.torch_seq_s > 0;
    if (torch_ok) {
        bench_report_row(rep, "minilm PyTorch eager (same run)", o.torch_seq_s, 1, "seq/s",
                         BENCH_TARGET_NONE, 0, "torch_minilm_seq_s");
    }
    if (minilm_ok && torch_ok) {
        bench_report_row(rep, "minilm / PyTorch", mr.seq_s / o.torch_seq_s, 2, "x",
                         BENCH_TARGET_AT_LEAST, 1.0, "minilm_vs_torch");
    }
    if (strcmp(openblas_get_corename(), "Prescott") == 0 && __builtin_cpu_supports("avx2")) {
        bench_report_note(rep, "OpenBLAS runs SSE3 (Prescott) kernels on an AVX2 CPU it does not "
                               "know: set OPENBLAS_CORETYPE (scripts/bench/kernels does)");
    }
    print_report(rep, be, with_sgemm, minilm_ok, torch_ok);
    rc = bad == 0 && (!o.conv || conv_s > 0) && !minilm_failed ? 0 : 1;

out:
    for (size_t l = 0; l < BENCH_MAX_LAYERS; l++) {
        free(a[l]);
    }
    mlp_free(&m, be);
    bench_report_destroy(rep);
    kernels_stream_destroy(s);
    kernels_backend_destroy(be);
    return rc;
}
