/* test_ref.h: what the kernels' tests compute their references with, in double
 * precision and independently of any backend: the activations (GELU as PyTorch's
 * default, the erf form); and how a result is compared with a reference. Header-only,
 * tests only (include it after cmocka.h). */
#ifndef PS_KERNELS_TEST_REF_H
#define PS_KERNELS_TEST_REF_H

#include <math.h>
#include <stddef.h>

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

/* Fails the test at the first element where |got - want| > atol + rtol |want| (NaN
 * included), naming `what`, the element and both values. */
static inline void ref_assert_close(const float *got, const double *want, size_t n, double atol,
                                    double rtol, const char *what) {
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)got[i] - want[i]);
        if (!(diff <= atol + rtol * fabs(want[i]))) {
            fail_msg("%s: element %zu: got %.9g, want %.9g (diff %.3g)", what, i, (double)got[i],
                     want[i], diff);
        }
    }
}

#endif
