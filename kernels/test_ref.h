/* test_ref.h: what the kernels' tests compute their references with, in double
 * precision and independently of any backend: the activations (GELU as PyTorch's
 * default, the erf form). Header-only, tests only. */
#ifndef PS_KERNELS_TEST_REF_H
#define PS_KERNELS_TEST_REF_H

#include <math.h>

#include "backend.h"

static inline double ref_act(double v, kernels_activation act) {
    switch (act) {
    case KERNELS_ACTIVATION_RELU:
        return v > 0 ? v : 0;
    case KERNELS_ACTIVATION_SIGMOID:
        return 1.0 / (1.0 + exp(-v));
    case KERNELS_ACTIVATION_TANH:
        return tanh(v);
    case KERNELS_ACTIVATION_GELU:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case KERNELS_ACTIVATION_NONE:
        break;
    }
    return v;
}

#endif
