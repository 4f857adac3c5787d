/* test_openblas_core.c: the OpenBLAS kernels chosen from a CPU's flags
 * (openblas_core.h): the best that the flags allow, whole words only, none for a CPU
 * without AVX2 (the library's own choice stands). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "openblas_core.h"

static void test_core_for_flags(void **state) {
    (void)state;
    assert_string_equal(kernels_openblas_core_for("flags\t\t: fpu sse2 avx2 avx512f avx512bw "
                                                  "avx512_bf16 amx_tile\n"),
                        "Cooperlake");
    assert_string_equal(kernels_openblas_core_for("flags : sse2 avx2 avx512f avx512bw"),
                        "SkylakeX");
    assert_string_equal(kernels_openblas_core_for("flags : sse2 avx avx2 fma"), "Haswell");
    assert_null(kernels_openblas_core_for("flags : sse2 sse3 avx"));   /* no AVX2 */
    assert_null(kernels_openblas_core_for("flags : avx2x avx512bwx")); /* not whole words */
    assert_null(kernels_openblas_core_for(""));
    assert_null(kernels_openblas_core_for(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_core_for_flags)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
