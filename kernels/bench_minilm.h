/* bench_minilm.h: times a sentence encoder's forward pass (all-MiniLM-L6-v2 as
 * scripts/models/minilm.py exports it) through the model executor, for
 * scripts/bench/kernels.
 *
 * Why it is built this way: the benchmark must time what ps-serve runs, so it opens
 * the model directory with model_open_dir and calls model_infer, the serving path,
 * not the ops one by one. The inputs are batch x seq random token ids (not special
 * tokens) with every token unmasked: the same work PyTorch eager is given by
 * scripts/bench/minilm_torch.py, so the two figures compare.
 */
#ifndef PS_KERNELS_BENCH_MINILM_H
#define PS_KERNELS_BENCH_MINILM_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "status.h"

typedef struct bench_minilm_result {
    size_t batch, seq; /* the pass's shape */
    double best_s;     /* the best wall time of one pass */
    double seq_s;      /* sequences per second at that time */
} bench_minilm_result;

/* Opens dir (its highest version) on be, runs one warm-up pass and then reps timed
 * passes of `batch` sequences (batch <= the model's max_batch_size), each of the
 * input's configured length. The model must take INT64 inputs "input_ids" and
 * "attention_mask" of shape [-1, S] and give an FP32 "embedding". Errors as
 * model_open_dir's and model_infer's, with a message in err. */
ps_status bench_minilm_run(const char *dir, kernels_backend *be, size_t batch, uint64_t reps,
                           bench_minilm_result *ret, char *err, size_t err_len);

#endif
