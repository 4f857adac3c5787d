/* optimizer.h: one optimizer step over a run of weights, the arithmetic behind
 * PUSH_OPTIMIZE for dense chunks and sparse rows (the formulas are in train_spec.h).
 *
 * Why it is built this way: the store computes a step out of place, into buffers of
 * its batch, while it holds its lock, checks that every result is finite, and only
 * then publishes, so a step that would overflow changes nothing. The loops are plain
 * element-wise passes over contiguous floats that the compiler vectorizes.
 */
#ifndef PS_SHARD_OPTIMIZER_H
#define PS_SHARD_OPTIMIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "train_spec.h"

/* Fills a fresh state for n weights (optim_spec_slots(kind) slots of n floats): zeros,
 * or initial_accumulator for Adagrad. */
void optimizer_state_init(const optim_spec *spec, uint32_t n, float *state);

/* One step of spec (already checked with optim_spec_check) over n weights: reads the
 * weights w, the gradient g and the state (slots of n floats, see train_spec.h), and
 * writes the new weights to w_out and the new state to state_out. `step` is the
 * number of updates these weights have had including this one (1 for the first; Adam
 * uses it for bias correction). w_out may be g or w, and state_out may be state
 * (element i of the outputs is written after element i of the inputs is read, and
 * from nothing else); otherwise the buffers must not overlap. */
void optimizer_step(const optim_spec *spec, uint32_t n, const float *w, const float *g,
                    const float *state, uint64_t step, float *w_out, float *state_out);

/* True when every one of the n floats is finite (vectorized; no early exit inside a
 * block). */
bool optimizer_all_finite(const float *v, uint64_t n);

#endif
