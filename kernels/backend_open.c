/* backend_open.c: a backend by name: the built-in CPU backend or a loadable module.
 *
 * A device backend (CUDA) is a shared module, libkernels_<name>.so, so that programs
 * link no device library and start on machines without one. The module exports
 * KERNELS_BACKEND_MODULE_INIT, which fills an iface and a context; the handle keeps the
 * module open until it is destroyed. Names are checked before they become a path.
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

ps_status kernels_backend_open(const char *name, const kernels_backend_open_opts *opts,
                               kernels_backend **ret_backend, char *err, size_t err_len) {
    if (name == NULL || ret_backend == NULL || !name_ok(name)) {
        ps_set_err(err, err_len, "backend name must be 1-%u characters of a-z, 0-9, _",
                   KERNELS_BACKEND_MAX_NAME);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (strcmp(name, "cpu") == 0) {
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
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (module == NULL) {
        const char *why = dlerror();
        ps_set_err(err, err_len, "backend \"%s\": cannot load %s: %s", name, path,
                   why != NULL ? why : "unknown error");
        return PS_STATUS_UNAVAILABLE;
    }
    /* POSIX's way to turn a dlsym result into a function pointer. */
    kernels_backend_module_init_fn init;
    void *sym = dlsym(module, KERNELS_BACKEND_MODULE_INIT);
    memcpy(&init, &sym, sizeof(init));
    if (sym == NULL) {
        ps_set_err(err, err_len, "backend \"%s\": %s exports no %s", name, path,
                   KERNELS_BACKEND_MODULE_INIT);
        dlclose(module);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    kernels_backend_iface iface;
    memset(&iface, 0, sizeof(iface));
    void *ctx = NULL;
    ps_status st = init(KERNELS_BACKEND_ABI_VERSION, &iface, &ctx);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "backend \"%s\": cannot start: %s", name, ps_status_str(st));
        dlclose(module);
        return st;
    }
    st = kernels_backend_create_module(&iface, ctx, module, ret_backend);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "backend \"%s\": its iface lacks a required entry", name);
    }
    return st;
}
