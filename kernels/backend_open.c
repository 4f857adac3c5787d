/* backend_open.c: a backend by name: the built-in CPU backend or a loadable module.
 *
 * A device backend (CUDA) is a shared module, libkernels_<name>.so, so that programs
 * link no device library and start on machines without one. The module exports
 * KERNELS_BACKEND_MODULE_OPEN (options, and a message when it cannot start) or the
 * plain KERNELS_BACKEND_MODULE_INIT, which fill an iface and a context; the handle
 * keeps the module open until it is destroyed. Names are checked before they become a
 * path.
 */
#include "backend_internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* Longest module path built here (the folder comes from the caller). */
#define MODULE_PATH_MAX 4096u

static bool name_ok(const char *name) {
    const size_t len = strlen(name);
    if (len == 0 || len > KERNELS_BACKEND_MAX_NAME) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        const char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

/* Runs the module's entry: KERNELS_BACKEND_MODULE_OPEN when it has one (with the
 * precision, and its own message on failure), else KERNELS_BACKEND_MODULE_INIT (FP32
 * only). The module stays open; the caller closes it on failure. */
static ps_status module_start(void *module, const char *name, const char *path,
                              kernels_precision precision, kernels_backend_iface *iface, void **ctx,
                              char *err, size_t err_len) {
    /* POSIX's way to turn a dlsym result into a function pointer. */
    void *sym = dlsym(module, KERNELS_BACKEND_MODULE_OPEN);
    if (sym != NULL) {
        kernels_backend_module_open_fn open_fn;
        memcpy(&open_fn, &sym, sizeof(open_fn));
        const kernels_backend_module_opts mopts = {.precision = precision};
        char why[256] = "";
        ps_status st = open_fn(KERNELS_BACKEND_ABI_VERSION, &mopts, iface, ctx, why, sizeof(why));
        if (st != PS_STATUS_OK) {
            why[sizeof(why) - 1] = '\0';
            ps_set_err(err, err_len, "backend \"%s\": cannot start: %s: %s", name,
                       ps_status_str(st), why[0] != '\0' ? why : "(no reason given)");
        }
        return st;
    }
    sym = dlsym(module, KERNELS_BACKEND_MODULE_INIT);
    if (sym == NULL) {
        ps_set_err(err, err_len, "backend \"%s\": %s exports neither %s nor %s", name, path,
                   KERNELS_BACKEND_MODULE_OPEN, KERNELS_BACKEND_MODULE_INIT);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    kernels_backend_module_init_fn init;
    memcpy(&init, &sym, sizeof(init));
    ps_status st = init(KERNELS_BACKEND_ABI_VERSION, iface, ctx);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "backend \"%s\": cannot start: %s", name, ps_status_str(st));
        return st;
    }
    if (precision != KERNELS_PRECISION_FP32) { /* after init: "cannot run here" comes first */
        if (iface->free_ctx != NULL) {
            iface->free_ctx(*ctx);
        }
        ps_set_err(err, err_len, "backend \"%s\" computes in fp32 only", name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

ps_status kernels_backend_open(const char *name, const kernels_backend_open_opts *opts,
                               kernels_backend **ret_backend, char *err, size_t err_len) {
    if (name == NULL || ret_backend == NULL || !name_ok(name)) {
        ps_set_err(err, err_len, "backend name must be 1-%u characters of a-z, 0-9, _",
                   KERNELS_BACKEND_MAX_NAME);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_precision precision = opts != NULL ? opts->precision : KERNELS_PRECISION_FP32;
    if (precision != KERNELS_PRECISION_FP32 && precision != KERNELS_PRECISION_BF16) {
        ps_set_err(err, err_len, "backend \"%s\": unknown precision %d", name, (int)precision);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (strcmp(name, "cpu") == 0) {
        if (precision != KERNELS_PRECISION_FP32) {
            ps_set_err(err, err_len, "backend cpu computes in fp32 only (bf16 needs cuda)");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        return kernels_backend_cpu_create(ret_backend);
    }
    const char *dir = opts != NULL ? opts->module_dir : NULL;
    if (dir == NULL || dir[0] == '\0') {
        ps_set_err(err, err_len, "backend \"%s\": no module folder given (only cpu is built in)",
                   name);
        return PS_STATUS_NOT_FOUND;
    }
    char path[MODULE_PATH_MAX];
    const int n = snprintf(path, sizeof(path), "%s/libkernels_%s.so", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        ps_set_err(err, err_len, "backend \"%s\": module folder path too long", name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (access(path, F_OK) != 0) {
        ps_set_err(err, err_len, "backend \"%s\": no module %s (not built?)", name, path);
        return PS_STATUS_NOT_FOUND;
    }
    /* RTLD_NODELETE: a module stays mapped after its last backend is gone. The CUDA
     * libraries it pulls in keep process-wide state (atexit handlers, allocator pools
     * that leak checkers trace back into them) and are not meant to be unloaded and
     * reloaded; reopening is then cheap too. */
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (module == NULL) {
        const char *why = dlerror();
        ps_set_err(err, err_len, "backend \"%s\": cannot load %s: %s", name, path,
                   why != NULL ? why : "unknown error");
        return PS_STATUS_UNAVAILABLE;
    }
    kernels_backend_iface iface;
    memset(&iface, 0, sizeof(iface));
    void *ctx = NULL;
    ps_status st = module_start(module, name, path, precision, &iface, &ctx, err, err_len);
    if (st != PS_STATUS_OK) {
        dlclose(module);
        return st;
    }
    kernels_backend *backend = NULL;
    st = kernels_backend_create_module(&iface, ctx, module, &backend);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "backend \"%s\": its iface lacks a required entry", name);
        return st;
    }
    backend->precision = precision;
    *ret_backend = backend;
    return PS_STATUS_OK;
}
