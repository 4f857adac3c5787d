/* backend_select.c: a backend from the words of a program's flags, --device
 * cpu|cuda|auto and --precision fp32|bf16 (see kernels_backend_select in backend.h).
 *
 * One function so that every program (ps-serve, benchmarks) reads the same words the
 * same way. "auto" is for fleets that mix machines: the same command line runs on the
 * GPU when the CUDA module loads and finds a device, and on the CPU otherwise; asking
 * for "cuda" instead turns a missing module or device into an error, so an operator
 * who wants the GPU learns at start-up that it is not there.
 */
#include <string.h>

#include "backend.h"
#include "util.h"

/* The GPU module's name when the options give none. */
#define SELECT_GPU_MODULE "cuda"

ps_status kernels_backend_select(const kernels_backend_select_opts *opts,
                                 kernels_backend **ret_backend, char *err, size_t err_len) {
    if (opts == NULL || ret_backend == NULL) {
        ps_set_err(err, err_len, "kernels_backend_select: no options or result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const char *device = opts->device != NULL ? opts->device : "cpu";
    const char *precision = opts->precision != NULL ? opts->precision : "fp32";
    const char *gpu = opts->gpu_module != NULL ? opts->gpu_module : SELECT_GPU_MODULE;
    kernels_backend_open_opts open_opts = {.module_dir = opts->module_dir};
    if (strcmp(precision, "fp32") == 0) {
        open_opts.precision = KERNELS_PRECISION_FP32;
    } else if (strcmp(precision, "bf16") == 0) {
        open_opts.precision = KERNELS_PRECISION_BF16;
    } else {
        ps_set_err(err, err_len, "precision \"%s\": must be fp32 or bf16", precision);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (strcmp(device, "cpu") == 0) {
        return kernels_backend_open("cpu", &open_opts, ret_backend, err, err_len);
    }
    if (strcmp(device, "cuda") == 0) {
        return kernels_backend_open(gpu, &open_opts, ret_backend, err, err_len);
    }
    if (strcmp(device, "auto") != 0) {
        ps_set_err(err, err_len, "device \"%s\": must be cpu, cuda or auto", device);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    kernels_backend *backend = NULL;
    ps_status st = kernels_backend_open(gpu, &open_opts, &backend, err, err_len);
    if (st == PS_STATUS_NOT_FOUND || st == PS_STATUS_UNAVAILABLE) {
        /* No module or no device: the CPU, which computes in FP32 whatever was asked. */
        open_opts.precision = KERNELS_PRECISION_FP32;
        st = kernels_backend_open("cpu", &open_opts, &backend, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    *ret_backend = backend;
    return PS_STATUS_OK;
}
