/* test_module_cpu.c: a loadable backend for the loader's tests (not shipped).
 *
 * Built twice by meson: libkernels_cpumod.so wraps the CPU backend's iface under the
 * name "cpumod", so the whole op suite can run through kernels_backend_open's module
 * path; libkernels_nodev.so (TEST_MODULE_NODEV) answers UNAVAILABLE from its init, as
 * the CUDA module does on a machine without a GPU.
 */
#include "cpu/cpu_internal.h"

ps_status kernels_backend_module_init(uint32_t abi_version, kernels_backend_iface *ret_iface,
                                      void **ret_ctx);

ps_status kernels_backend_module_init(uint32_t abi_version, kernels_backend_iface *ret_iface,
                                      void **ret_ctx) {
    if (abi_version != KERNELS_BACKEND_ABI_VERSION) {
        return PS_STATUS_FAILED_PRECONDITION;
    }
#ifdef TEST_MODULE_NODEV
    (void)ret_iface;
    (void)ret_ctx;
    return PS_STATUS_UNAVAILABLE;
#else
    kernels_backend_iface iface = *kernels_cpu_iface();
    iface.name = "cpumod";
    *ret_iface = iface;
    *ret_ctx = NULL;
    return PS_STATUS_OK;
#endif
}
