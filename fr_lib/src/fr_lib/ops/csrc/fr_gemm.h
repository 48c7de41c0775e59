// Small float32 GEMM shared by fr_fused.cc and fr_conv.cc (header-only, every
// function with internal linkage).
//
// C (M x N, row stride N) = A (M x K, row stride K) * B, where B is packed in
// panels of 32 columns ([ceil(N / 32)][K][32], zero-padded: PackPanels), then
// optionally + bias (one value per column, padded to a multiple of 32), PReLU
// (one slope per column, padded likewise) and + R (same layout as C; R may be
// C itself, which accumulates). The 8 x 32 register tile is written with GCC
// vector extensions and compiled for AVX-512, AVX2 and baseline x86-64 (GCC
// target_clones, chosen when the library loads).
#ifndef FR_LIB_OPS_FR_GEMM_H_
#define FR_LIB_OPS_FR_GEMM_H_

#include <algorithm>
#include <cstdint>

#include "fr_clones.h"

// 16 floats, unaligned; GCC lowers it to one AVX-512 register, two AVX2 ones
// or four SSE ones in the respective clones. Helpers taking it are always
// inlined, so no vector crosses a call (hence no ABI concern).
#pragma GCC diagnostic ignored "-Wpsabi"
#define FR_INLINE inline __attribute__((always_inline))

namespace {

typedef float v16 __attribute__((vector_size(64), aligned(4)));
constexpr int kNR = 32;  // columns per panel (two 16-float vectors)

FR_INLINE v16 Load(const float* p) { return *reinterpret_cast<const v16*>(p); }
FR_INLINE void Store(float* p, v16 v) { *reinterpret_cast<v16*>(p) = v; }

inline int64_t Panels(int64_t n) { return (n + kNR - 1) / kNR; }

// out[p][k][j] = src[k * ld + 32 p + j] (K x N row-major source), 0 past N.
inline void PackPanels(const float* src, int64_t K, int64_t N, int64_t ld, float* out) {
  for (int64_t p = 0; p < Panels(N); ++p) {
    const int64_t n0 = p * kNR, cols = std::min<int64_t>(kNR, N - n0);
    float* o = out + p * K * kNR;
    for (int64_t k = 0; k < K; ++k, o += kNR) {
      const float* s = src + k * ld + n0;
      for (int64_t j = 0; j < cols; ++j) o[j] = s[j];
      for (int64_t j = cols; j < kNR; ++j) o[j] = 0.f;
    }
  }
}

// The same for the transpose of an N x K row-major source (row stride ld):
// out[p][k][j] = src[(32 p + j) * ld + k].
inline void PackPanelsT(const float* src, int64_t K, int64_t N, int64_t ld, float* out) {
  for (int64_t p = 0; p < Panels(N); ++p) {
    const int64_t n0 = p * kNR, cols = std::min<int64_t>(kNR, N - n0);
    float* o = out + p * K * kNR;
    for (int64_t j = 0; j < kNR; ++j) {
      if (j < cols) {
        const float* s = src + (n0 + j) * ld;
        for (int64_t k = 0; k < K; ++k) o[k * kNR + j] = s[k];
      } else {
        for (int64_t k = 0; k < K; ++k) o[k * kNR + j] = 0.f;
      }
    }
  }
}

template <int MR, bool BIAS, bool PRELU, bool RES>
FR_INLINE void Tile(const float* A, const float* B, int64_t K, const float* bias,
                    const float* alpha, const float* R, float* C, int64_t ldc, int cols) {
  v16 acc[MR][2];
  const v16 b0 = BIAS ? Load(bias) : v16{}, b1 = BIAS ? Load(bias + 16) : v16{};
  for (int r = 0; r < MR; ++r) { acc[r][0] = b0; acc[r][1] = b1; }
  for (int64_t k = 0; k < K; ++k) {
    const v16 w0 = Load(B + k * kNR), w1 = Load(B + k * kNR + 16);
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * K + k];
      acc[r][0] += a * w0;
      acc[r][1] += a * w1;
    }
  }
  if (PRELU) {
    const v16 a0 = Load(alpha), a1 = Load(alpha + 16);
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = acc[r][0] > 0 ? acc[r][0] : acc[r][0] * a0;
      acc[r][1] = acc[r][1] > 0 ? acc[r][1] : acc[r][1] * a1;
    }
  }
  if (cols == kNR) {
    for (int r = 0; r < MR; ++r) {
      v16 x0 = acc[r][0], x1 = acc[r][1];
      if (RES) { x0 += Load(R + r * ldc); x1 += Load(R + r * ldc + 16); }
      Store(C + r * ldc, x0);
      Store(C + r * ldc + 16, x1);
    }
    return;
  }
  for (int r = 0; r < MR; ++r) {  // last, partial panel
    float tmp[kNR];
    Store(tmp, acc[r][0]);
    Store(tmp + 16, acc[r][1]);
    for (int j = 0; j < cols; ++j) C[r * ldc + j] = tmp[j] + (RES ? R[r * ldc + j] : 0.f);
  }
}

template <bool BIAS, bool PRELU, bool RES>
FR_INLINE void GemmImpl(const float* A, int64_t M, int64_t K, const float* B, int64_t N,
                        const float* bias, const float* alpha, const float* R, float* C) {
  constexpr int MR = 8;
  const int64_t panels = Panels(N);
  int64_t m = 0;
  for (; m + MR <= M; m += MR) {
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n = p * kNR;
      const int cols = static_cast<int>(std::min<int64_t>(kNR, N - n));
      Tile<MR, BIAS, PRELU, RES>(A + m * K, B + p * K * kNR, K, bias + n, alpha + n,
                                 R + m * N + n, C + m * N + n, N, cols);
    }
  }
  for (; m < M; ++m) {
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n = p * kNR;
      const int cols = static_cast<int>(std::min<int64_t>(kNR, N - n));
      Tile<1, BIAS, PRELU, RES>(A + m * K, B + p * K * kNR, K, bias + n, alpha + n,
                                R + m * N + n, C + m * N + n, N, cols);
    }
  }
}

FR_CLONES void Gemm(const float* A, int64_t M, int64_t K, const float* B, int64_t N,
                    const float* bias, const float* alpha, const float* R, float* C) {
  if (bias) {
    if (alpha && R) GemmImpl<true, true, true>(A, M, K, B, N, bias, alpha, R, C);
    else if (alpha) GemmImpl<true, true, false>(A, M, K, B, N, bias, alpha, R, C);
    else if (R) GemmImpl<true, false, true>(A, M, K, B, N, bias, alpha, R, C);
    else GemmImpl<true, false, false>(A, M, K, B, N, bias, alpha, R, C);
  } else {  // plain products (convolution layers without bias, gradients)
    if (R) GemmImpl<false, false, true>(A, M, K, B, N, bias, alpha, R, C);
    else GemmImpl<false, false, false>(A, M, K, B, N, bias, alpha, R, C);
  }
}

}  // namespace

#endif  // FR_LIB_OPS_FR_GEMM_H_
