/* optimizer.c: one optimizer step over a run of weights (SGD, Adagrad, Adam, FTRL; the
 * formulas are in train_spec.h), and the finiteness check the store runs before it
 * publishes a step.
 *
 * Each kind is one pass over contiguous floats with its hyper-parameters hoisted into
 * locals. The outputs may be the very buffers of the inputs (w_out == g or w,
 * state_out == state), which only ever makes element i depend on element i; the
 * OPTIMIZER_NO_CARRIED_DEPS pragma tells the compiler so, since without it gcc would
 * need run-time overlap checks its -O2 cost model refuses, and not vectorize.
 * SGD and the finiteness scan vectorize as built; the loops with sqrtf (Adagrad, Adam,
 * FTRL) vectorize only with -fno-math-errno, since sqrtf may set errno otherwise.
 */
#include "optimizer.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#define OPTIMIZER_NO_CARRIED_DEPS _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define OPTIMIZER_NO_CARRIED_DEPS _Pragma("GCC ivdep")
#else
#define OPTIMIZER_NO_CARRIED_DEPS
#endif

/* The main loop of every pass runs over a multiple of this many floats (a multiple of
 * any vector width), so gcc -O2's cost model, which refuses to vectorize a loop that
 * needs a scalar remainder, takes it; the remainder runs in a second, scalar loop. */
#define OPTIMIZER_LANES 16u

/* Floats per block of optimizer_all_finite: each block is checked without an early
 * exit (so it vectorizes), and the scan stops after the first block with a bad value. */
#define OPTIMIZER_FINITE_BLOCK 1024u

void optimizer_state_init(const optim_spec *spec, uint32_t n, float *state) {
    const size_t count = (size_t)optim_spec_slots(spec->kind) * n;
    if (spec->kind == OPTIM_ADAGRAD) {
        const float acc0 = spec->initial_accumulator;
        for (size_t i = 0; i < count; i++)
            state[i] = acc0;
        return;
    }
    if (count > 0)
        memset(state, 0, count * sizeof(float));
}

/* ---- SGD: g' = g + wd*w; m = momentum*m + g'; w -= lr*m ----------------------------- */

typedef struct sgd_hp {
    float lr, momentum, wd;
} sgd_hp;

static inline void optimizer_sgd_one(sgd_hp hp, uint32_t i, const float *w, const float *g,
                                     const float *m, float *w_out, float *m_out) {
    const float wi = w[i];
    const float gp = g[i] + hp.wd * wi;
    const float mi = hp.momentum * m[i] + gp;
    m_out[i] = mi;
    w_out[i] = wi - hp.lr * mi;
}

static void optimizer_sgd(const optim_spec *spec, uint32_t n, const float *w, const float *g,
                          const float *m, float *w_out, float *m_out) {
    const sgd_hp hp = {spec->lr, spec->momentum, spec->weight_decay};
    const uint32_t n_vec = n & ~(OPTIMIZER_LANES - 1);
    uint32_t i;
    OPTIMIZER_NO_CARRIED_DEPS
    for (i = 0; i < n_vec; i++)
        optimizer_sgd_one(hp, i, w, g, m, w_out, m_out);
    for (; i < n; i++)
        optimizer_sgd_one(hp, i, w, g, m, w_out, m_out);
}

/* ---- Adagrad: g' = g + wd*w; acc += g'^2; w -= lr * g' / (sqrt(acc) + eps) -------- */

typedef struct adagrad_hp {
    float lr, eps, wd;
} adagrad_hp;

static inline void optimizer_adagrad_one(adagrad_hp hp, uint32_t i, const float *w, const float *g,
                                         const float *acc, float *w_out, float *acc_out) {
    const float wi = w[i];
    const float gp = g[i] + hp.wd * wi;
    const float ai = acc[i] + gp * gp;
    acc_out[i] = ai;
    w_out[i] = wi - hp.lr * (gp / (sqrtf(ai) + hp.eps));
}

static void optimizer_adagrad(const optim_spec *spec, uint32_t n, const float *w, const float *g,
                              const float *acc, float *w_out, float *acc_out) {
    const adagrad_hp hp = {spec->lr, spec->eps, spec->weight_decay};
    const uint32_t n_vec = n & ~(OPTIMIZER_LANES - 1);
    uint32_t i;
    OPTIMIZER_NO_CARRIED_DEPS
    for (i = 0; i < n_vec; i++)
        optimizer_adagrad_one(hp, i, w, g, acc, w_out, acc_out);
    for (; i < n; i++)
        optimizer_adagrad_one(hp, i, w, g, acc, w_out, acc_out);
}

/* ---- Adam ------------------------------------------------------------------------------
 * g' = g + wd*w; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
 * w -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), with bc_k = 1 - b_k^step: the
 * header's formula arranged as PyTorch computes it, the corrections once per call. */

typedef struct adam_hp {
    float b1, one_b1, b2, one_b2; /* beta1, 1 - beta1, beta2, 1 - beta2 */
    float step_size, bc2_sqrt;    /* lr / bc1, sqrt(bc2) */
    float eps, wd;
} adam_hp;

static inline void optimizer_adam_one(adam_hp hp, uint32_t i, const float *w, const float *g,
                                      const float *m, const float *v, float *w_out, float *m_out,
                                      float *v_out) {
    const float wi = w[i];
    const float gp = g[i] + hp.wd * wi;
    const float mi = hp.b1 * m[i] + hp.one_b1 * gp;
    const float vi = hp.b2 * v[i] + hp.one_b2 * (gp * gp);
    m_out[i] = mi;
    v_out[i] = vi;
    w_out[i] = wi - hp.step_size * (mi / (sqrtf(vi) / hp.bc2_sqrt + hp.eps));
}

static void optimizer_adam(const optim_spec *spec, uint32_t n, const float *w, const float *g,
                           const float *m, const float *v, uint64_t step, float *w_out,
                           float *m_out, float *v_out) {
    const double bc1 = 1.0 - pow((double)spec->beta1, (double)step);
    const double bc2 = 1.0 - pow((double)spec->beta2, (double)step);
    const adam_hp hp = {
        .b1 = spec->beta1,
        .one_b1 = (float)(1.0 - (double)spec->beta1),
        .b2 = spec->beta2,
        .one_b2 = (float)(1.0 - (double)spec->beta2),
        .step_size = (float)((double)spec->lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = spec->eps,
        .wd = spec->weight_decay,
    };
    const uint32_t n_vec = n & ~(OPTIMIZER_LANES - 1);
    uint32_t i;
    OPTIMIZER_NO_CARRIED_DEPS
    for (i = 0; i < n_vec; i++)
        optimizer_adam_one(hp, i, w, g, m, v, w_out, m_out, v_out);
    for (; i < n; i++)
        optimizer_adam_one(hp, i, w, g, m, v, w_out, m_out, v_out);
}

/* ---- FTRL-proximal ---------------------------------------------------------------------
 * sigma = (sqrt(n + g^2) - sqrt(n)) / lr; z += g - sigma*w; n += g^2;
 * w = |z| <= l1 ? 0 : -(z - sign(z)*l1) / ((beta + sqrt(n)) / lr + l2). */

typedef struct ftrl_hp {
    float inv_lr; /* 1 / lr */
    float l1, l2, beta;
} ftrl_hp;

static inline void optimizer_ftrl_one(ftrl_hp hp, uint32_t i, const float *w, const float *g,
                                      const float *z, const float *nacc, float *w_out, float *z_out,
                                      float *n_out) {
    const float wi = w[i], gi = g[i], ni = nacc[i];
    const float n_new = ni + gi * gi;
    const float sqrt_new = sqrtf(n_new);
    const float sigma = (sqrt_new - sqrtf(ni)) * hp.inv_lr;
    const float z_new = z[i] + gi - sigma * wi;
    /* The l1 test as a 0/1 factor rather than a ?: over float arithmetic, which gcc
     * does not vectorize under -ftrapping-math (the default). keep 1: w = a / b exactly;
     * keep 0: (+-0) / (b + 1) + 0 = +0. A NaN z gives keep 0 and a NaN w. */
    const float keep = (float)(fabsf(z_new) > hp.l1);
    const float a = copysignf(hp.l1, z_new) - z_new; /* -(z - sign(z)*l1) */
    const float b = (hp.beta + sqrt_new) * hp.inv_lr + hp.l2;
    z_out[i] = z_new;
    n_out[i] = n_new;
    w_out[i] = keep * a / (b + (1.0f - keep)) + 0.0f;
}

static void optimizer_ftrl(const optim_spec *spec, uint32_t n, const float *w, const float *g,
                           const float *z, const float *nacc, float *w_out, float *z_out,
                           float *n_out) {
    const ftrl_hp hp = {(float)(1.0 / (double)spec->lr), spec->l1, spec->l2, spec->beta};
    const uint32_t n_vec = n & ~(OPTIMIZER_LANES - 1);
    uint32_t i;
    OPTIMIZER_NO_CARRIED_DEPS
    for (i = 0; i < n_vec; i++)
        optimizer_ftrl_one(hp, i, w, g, z, nacc, w_out, z_out, n_out);
    for (; i < n; i++)
        optimizer_ftrl_one(hp, i, w, g, z, nacc, w_out, z_out, n_out);
}

void optimizer_step(const optim_spec *spec, uint32_t n, const float *w, const float *g,
                    const float *state, uint64_t step, float *w_out, float *state_out) {
    /* step counts this update, so it is at least 1; a 0 is read as the first step. */
    if (step == 0)
        step = 1;
    switch (spec->kind) {
    case OPTIM_SGD:
        optimizer_sgd(spec, n, w, g, state, w_out, state_out);
        break;
    case OPTIM_ADAGRAD:
        optimizer_adagrad(spec, n, w, g, state, w_out, state_out);
        break;
    case OPTIM_ADAM:
        optimizer_adam(spec, n, w, g, state, state + n, step, w_out, state_out, state_out + n);
        break;
    case OPTIM_FTRL:
        optimizer_ftrl(spec, n, w, g, state, state + n, w_out, state_out, state_out + n);
        break;
    case OPTIM_NONE:
    default:
        /* No optimizer (a spec that failed optim_spec_check): the weights stay. */
        if (w_out != w && n > 0)
            memmove(w_out, w, (size_t)n * sizeof(float));
        break;
    }
}

/* Bit 31 of (bits & exponent) + one exponent step is set exactly when every exponent bit
 * is: an Inf or a NaN. OR-ing that into one lane per position of a group keeps the loop
 * free of branches and reductions, so it vectorizes. */
static inline uint32_t optimizer_nonfinite_bit(const float *v, uint64_t i) {
    uint32_t bits;
    memcpy(&bits, &v[i], sizeof(bits));
    return (bits & 0x7f800000u) + 0x00800000u;
}

bool optimizer_all_finite(const float *v, uint64_t n) {
    const uint64_t n_vec = n & ~(uint64_t)(OPTIMIZER_LANES - 1);
    uint64_t i = 0;
    while (i < n_vec) {
        const uint64_t block_end =
            n_vec - i < OPTIMIZER_FINITE_BLOCK ? n_vec : i + OPTIMIZER_FINITE_BLOCK;
        uint32_t lanes[OPTIMIZER_LANES] = {0};
        for (; i < block_end; i += OPTIMIZER_LANES) {
            for (uint32_t k = 0; k < OPTIMIZER_LANES; k++)
                lanes[k] |= optimizer_nonfinite_bit(v, i + k);
        }
        uint32_t bad = 0;
        for (uint32_t k = 0; k < OPTIMIZER_LANES; k++)
            bad |= lanes[k];
        if (bad >> 31)
            return false;
    }
    uint32_t bad = 0;
    for (; i < n; i++)
        bad |= optimizer_nonfinite_bit(v, i);
    return (bad >> 31) == 0;
}
