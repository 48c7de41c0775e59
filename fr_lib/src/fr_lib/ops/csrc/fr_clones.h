// FR_CLONES: compile a hot function for AVX-512, AVX2 and baseline x86-64 and
// pick one when the library loads (GCC target_clones); elsewhere one build.
#ifndef FR_LIB_OPS_FR_CLONES_H_
#define FR_LIB_OPS_FR_CLONES_H_

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FR_CLONES
#endif

#endif  // FR_LIB_OPS_FR_CLONES_H_
