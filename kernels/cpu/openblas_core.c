/* openblas_core.c: see openblas_core.h. */
#include "openblas_core.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

/* Whether the space-separated list has `word` as a whole word. */
static int has_flag(const char *flags, const char *word) {
    size_t n = strlen(word);
    for (const char *p = flags; (p = strstr(p, word)) != NULL; p += n) {
        bool starts = p == flags || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ':';
        bool ends = p[n] == '\0' || p[n] == ' ' || p[n] == '\n' || p[n] == '\t';
        if (starts && ends)
            return 1;
    }
    return 0;
}

const char *kernels_openblas_core_for(const char *flags) {
    if (!flags)
        return NULL;
    if (has_flag(flags, "avx512_bf16"))
        return "Cooperlake";
    if (has_flag(flags, "avx512bw"))
        return "SkylakeX";
    if (has_flag(flags, "avx2"))
        return "Haswell";
    return NULL;
}

void kernels_openblas_fix_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || strcmp(openblas_get_corename(), "Prescott") != 0)
        return;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char *line = NULL;
    size_t cap = 0;
    const char *core = NULL;
    while (!core && getline(&line, &cap, f) > 0)
        if (strncmp(line, "flags", 5) == 0)
            core = kernels_openblas_core_for(line);
    free(line);
    fclose(f);
    if (!core || setenv("OPENBLAS_CORETYPE", core, 1) != 0)
        return;
    execv("/proc/self/exe", argv); /* returns only on failure: run as we are */
}
