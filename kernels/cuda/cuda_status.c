/* cuda_status.c: the CUDA backend's error reporting (CUDA runtime, cuBLAS and cuDNN
 * results into ps_status plus a message kept per stream) and two small helpers every
 * op file uses: host-to-device copies that respect "returns when src may be reused",
 * and the alignment cuBLASLt may assume of a pointer.
 *
 * The mappings are pure functions (unit-tested without a GPU). cuDNN 9 returns
 * detailed codes grouped by thousands (CUDNN_STATUS_CATEGORY), so it maps by category.
 */
#include "cuda_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

ps_status cuda_status_of_rt(cudaError_t rc) {
    switch (rc) {
    case cudaSuccess:
        return PS_STATUS_OK;
    case cudaErrorMemoryAllocation:
        return PS_STATUS_NO_MEMORY;
    case cudaErrorNotSupported:
        return PS_STATUS_UNIMPLEMENTED;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorStubLibrary:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
        return PS_STATUS_UNAVAILABLE;
    default:
        return PS_STATUS_INTERNAL;
    }
}

ps_status cuda_status_of_blas(cublasStatus_t rc) {
    switch (rc) {
    case CUBLAS_STATUS_SUCCESS:
        return PS_STATUS_OK;
    case CUBLAS_STATUS_ALLOC_FAILED:
        return PS_STATUS_NO_MEMORY;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return PS_STATUS_UNIMPLEMENTED;
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return PS_STATUS_UNAVAILABLE;
    default:
        return PS_STATUS_INTERNAL;
    }
}

ps_status cuda_status_of_dnn(cudnnStatus_t rc) {
    if (rc == CUDNN_STATUS_SUCCESS) {
        return PS_STATUS_OK;
    }
    if (rc == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
        rc == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED) {
        return PS_STATUS_NO_MEMORY;
    }
    switch (CUDNN_STATUS_CATEGORY(rc)) {
    case CUDNN_STATUS_NOT_SUPPORTED:
        return PS_STATUS_UNIMPLEMENTED;
    case CUDNN_STATUS_NOT_INITIALIZED / 1000 * 1000: /* no GPU, library versions, loading */
        return PS_STATUS_UNAVAILABLE;
    default:
        return PS_STATUS_INTERNAL;
    }
}

ps_status cuda_fail(cuda_exec *e, ps_status st, const char *fmt, ...) {
    if (e != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err, sizeof(e->err), fmt, ap);
        va_end(ap);
    }
    return st;
}

ps_status cuda_check_rt(cuda_exec *e, cudaError_t rc, const char *what) {
    if (rc == cudaSuccess) {
        return PS_STATUS_OK;
    }
    (void)cudaGetLastError(); /* a later launch check must not see this one */
    return cuda_fail(e, cuda_status_of_rt(rc), "%s: %s: %s", what, cudaGetErrorName(rc),
                     cudaGetErrorString(rc));
}

ps_status cuda_check_blas(cuda_exec *e, cublasStatus_t rc, const char *what) {
    if (rc == CUBLAS_STATUS_SUCCESS) {
        return PS_STATUS_OK;
    }
    return cuda_fail(e, cuda_status_of_blas(rc), "%s: %s: %s", what, cublasGetStatusName(rc),
                     cublasGetStatusString(rc));
}

ps_status cuda_check_dnn(cuda_exec *e, cudnnStatus_t rc, const char *what) {
    if (rc == CUDNN_STATUS_SUCCESS) {
        return PS_STATUS_OK;
    }
    char detail[128] = "";
    cudnnGetLastErrorString(detail, sizeof(detail));
    return cuda_fail(e, cuda_status_of_dnn(rc), "%s: %s (%d)%s%s", what, cudnnGetErrorString(rc),
                     (int)rc, detail[0] != '\0' ? ": " : "", detail);
}

ps_status cuda_copy_from_host(cuda_exec *e, void *dst, const void *src, size_t bytes) {
    ps_status st = cuda_check_rt(
        e, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, e->stream), "cudaMemcpyAsync");
    if (st != PS_STATUS_OK) {
        return st;
    }
    /* From pageable memory the copy returns once CUDA staged src; from pinned memory it
     * may still be reading src, so wait. */
    struct cudaPointerAttributes attr;
    memset(&attr, 0, sizeof(attr));
    if (cudaPointerGetAttributes(&attr, src) != cudaSuccess) {
        (void)cudaGetLastError(); /* unknown to CUDA: pageable */
        return PS_STATUS_OK;
    }
    if (attr.type == cudaMemoryTypeHost) {
        return cuda_check_rt(e, cudaStreamSynchronize(e->stream), "cudaStreamSynchronize");
    }
    return PS_STATUS_OK;
}

uint32_t cuda_ptr_align(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    if (a == 0) {
        return 256;
    }
    const uintptr_t low = a & (~a + 1); /* the lowest set bit */
    return low >= 256 ? 256u : (uint32_t)low;
}
