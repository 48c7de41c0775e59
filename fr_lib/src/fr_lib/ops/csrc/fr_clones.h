// FR_CLONES: compile a hot function for AVX-512, AVX2+FMA and baseline x86-64
// and pick one when the library loads (GCC target_clones); elsewhere one build.
//
// FR_LIB_ISA_FORCED (set by fr_lib.ops when FR_LIB_ISA=avx512|avx2|generic)
// builds exactly one of those clones instead, so tests can execute each of
// them on any machine that supports it (the resolver of target_clones cannot
// be overridden at run time):
//   1 = generic (the "default" clone), 2 = avx2 ("avx2,fma"), 3 = avx512f.
#ifndef FR_LIB_OPS_FR_CLONES_H_
#define FR_LIB_OPS_FR_CLONES_H_

#if defined(FR_LIB_ISA_FORCED) && defined(__x86_64__) && defined(__GNUC__)
#if FR_LIB_ISA_FORCED == 3
#define FR_CLONES __attribute__((target("avx512f")))
#elif FR_LIB_ISA_FORCED == 2
#define FR_CLONES __attribute__((target("avx2,fma")))
#else
#define FR_CLONES
#endif
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FR_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define FR_CLONES
#endif

#endif  // FR_LIB_OPS_FR_CLONES_H_
