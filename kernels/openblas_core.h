/* openblas_core.h: running OpenBLAS on the kernels this CPU can use.
 *
 * Why it is built this way: Debian 12's OpenBLAS (0.3.21) does not recognise recent
 * Xeons and falls back to its SSE3 "Prescott" kernels, about 8x slower for sgemm than
 * the AVX-512 ones on the same core. The choice is made once, when the library loads,
 * from OPENBLAS_CORETYPE when set; so a program that finds the fallback on a CPU with
 * AVX2 sets the variable to the best kernels its flags allow and executes itself again
 * (once: the variable is then set), before it starts any thread. Programs call it first
 * thing in main. The choice itself is a pure function, tested on flag strings.
 */
#ifndef PS_KERNELS_OPENBLAS_CORE_H
#define PS_KERNELS_OPENBLAS_CORE_H

/* The OPENBLAS_CORETYPE for a CPU whose /proc/cpuinfo "flags" line is `flags`
 * ("Cooperlake" with avx512_bf16, "SkylakeX" with avx512bw, "Haswell" with avx2), or
 * NULL when none of them applies. */
const char *kernels_openblas_core_for(const char *flags);

/* When OPENBLAS_CORETYPE is unset and OpenBLAS chose its Prescott fallback on a CPU
 * the function above has a better choice for, sets the variable and re-executes the
 * program (/proc/self/exe, same argv); returns only when nothing is to be done or the
 * re-execution failed (the program then runs on the slow kernels). */
void kernels_openblas_fix_core(char **argv);

#endif
