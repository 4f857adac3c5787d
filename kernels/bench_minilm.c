/* bench_minilm.c: the MiniLM rows of bench_kernels (see bench_minilm.h). */
#include "bench_minilm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "util.h"

#define MINILM_FIRST_ID 1000  /* ids from here on are word pieces, not [PAD]/[CLS]/... */
#define MINILM_ID_SPAN 29000u /* ... up to 1000 + this (the vocabulary has 30522) */

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The sequence length of input `name` (its shape [-1, S]); 0 when it has no such input. */
static size_t input_seq(const model *m, const char *name) {
    const model_config *cfg = model_get_config(m);
    for (size_t i = 0; i < model_config_input_count(cfg); i++) {
        model_tensor_desc d;
        if (model_config_input_at(cfg, i, &d) && strcmp(d.name, name) == 0 && d.ndims == 2 &&
            d.dims[1] > 0 && d.datatype && strcmp(d.datatype, "INT64") == 0)
            return (size_t)d.dims[1];
    }
    return 0;
}

ps_status bench_minilm_run(const char *dir, kernels_backend *be, size_t batch, uint64_t reps,
                           bench_minilm_result *ret, char *err, size_t err_len) {
    model *m = NULL;
    model_workspace *ws = NULL;
    int64_t *ids = NULL, *mask = NULL;
    ps_status st = model_open_dir(dir, 0, be, &m, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    const size_t seq = input_seq(m, "input_ids");
    if (seq == 0 || input_seq(m, "attention_mask") != seq) {
        ps_set_err(err, err_len,
                   "%s: wants INT64 inputs input_ids and attention_mask of one shape [-1, S]", dir);
        st = PS_STATUS_INVALID_ARGUMENT;
        goto out;
    }
    if (batch == 0 || batch > model_max_batch_size(m)) {
        ps_set_err(err, err_len, "%s: batch %zu, the model takes 1..%u", dir, batch,
                   model_max_batch_size(m));
        st = PS_STATUS_INVALID_ARGUMENT;
        goto out;
    }
    ids = malloc(batch * seq * sizeof *ids);
    mask = malloc(batch * seq * sizeof *mask);
    if (!ids || !mask || model_workspace_create(m, &ws) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory for a batch of %zu x %zu", batch, seq);
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    uint64_t rng = 0x5eed;
    for (size_t i = 0; i < batch * seq; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = MINILM_FIRST_ID + (int64_t)((rng >> 33) % MINILM_ID_SPAN);
        mask[i] = 1;
    }
    model_input in[2] = {
        {.name = "input_ids", .ndims = 2, .dims = {(int64_t)batch, (int64_t)seq}, .ids = ids},
        {.name = "attention_mask", .ndims = 2, .dims = {(int64_t)batch, (int64_t)seq}, .ids = mask},
    };
    double best = INFINITY;
    for (uint64_t r = 0; r <= reps; r++) { /* r == 0: warm-up */
        model_output out = {.name = "embedding"};
        const double t0 = wall_s();
        if ((st = model_infer(m, ws, in, 2, &out, 1, err, err_len)) != PS_STATUS_OK)
            goto out;
        const double t = wall_s() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    *ret = (bench_minilm_result){
        .batch = batch, .seq = seq, .best_s = best, .seq_s = (double)batch / best};
out:
    model_workspace_destroy(ws);
    model_destroy(m);
    free(ids);
    free(mask);
    return st;
}
