// Channels-last (NHWC) training operators for MobileFaceNet-style networks,
// CPU float32, each with its backward pass (fr_lib.model_zoo.native_train).
//
// Why: in MXNet 1.9 a training step of MobileFaceNet spends most of its time
// outside the convolutions: every BatchNorm and PReLU between two oneDNN
// convolutions makes its own passes over the activations plus two layout
// conversions (oneDNN's blocked layout <-> the plain one). Here activations
// stay NHWC from the first 1x1 convolution to the last; BatchNorm with batch
// statistics and PReLU are one operator (two passes forward, two backward),
// and the convolutions are small register-tiled GEMMs (fr_gemm.h) or direct
// depthwise loops with no layout conversion at all.
//
// fr_pw_conv(x, w): 1x1 convolution, x (N, H, W, Cin), w (Cout, Cin, 1, 1) as
//   MXNet stores it; y (N, H, W, Cout). Cin and Cout multiples of 32.
// fr_dw_conv(x, w; kernel, stride, pad): depthwise convolution, x (N, H, W, C),
//   w (C, 1, kh, kw); C a multiple of 16.
// fr_bn_act(z, gamma, beta[, alpha], running_mean, running_var; eps, momentum,
//   act): BatchNorm over all axes but the last, with the statistics of this
//   batch (training mode), then PReLU when act=1 (alpha: one slope per
//   channel). Outputs y, the batch mean and the biased batch variance (no
//   gradient). Updates the running statistics in place (mutable inputs, like
//   BatchNorm's auxiliary states): running = momentum * running +
//   (1 - momentum) * batch. C a multiple of 16.
// fr_pw_bn_act(x, w, gamma, beta[, alpha], running_mean, running_var; eps,
//   momentum, act): fr_bn_act(fr_pw_conv(x, w), ...) in one operator, with
//   the same outputs (y, mean, var) and running-statistics update. It makes
//   fewer passes over the convolution output z: forward, the batch sums are
//   taken from the GEMM's register tile as it is stored; backward, dz is
//   formed a block of rows at a time in a cache-sized buffer and consumed
//   there by both GEMMs of the convolution's backward pass (dz is never
//   written to memory). z itself is kept in the operator's state from
//   forward to backward (not an output: an unused output would get a
//   zero-filled gradient of its size in every backward pass). Like every
//   intermediate of a static_alloc graph, it holds the last forward pass:
//   two forward passes of one graph node before its backward pass are not
//   supported (an imperative call has a state of its own).
// fr_dw_bn_act(x, w, gamma, beta[, alpha], running_mean, running_var;
//   stride, pad, eps, momentum, act): fr_bn_act(fr_dw_conv(x, w), ...) the
//   same way; backward (3x3 kernels, padding 1), dz is formed a block of
//   output rows at a time (with one row either side) and consumed there by
//   the weight gradient and the input gradient.
//
// Backward inputs are MXNet's: output gradients, forward inputs, outputs.
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fr_gemm.h"
#include "mxnet/lib_api.h"

using namespace mxnet::ext;  // NOLINT

namespace {

typedef std::unordered_map<std::string, std::string> Attrs;

int IntAttr(const Attrs& attrs, const char* key, int fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : std::stoi(it->second);
}
double NumAttr(const Attrs& attrs, const char* key, double fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : std::stod(it->second);
}

// [begin, end) of part t of n items split over T threads, in multiples of q.
void Split(int64_t n, int t, int T, int64_t q, int64_t* b, int64_t* e) {
  const int64_t blocks = (n + q - 1) / q;
  *b = std::min(n, blocks * t / T * q);
  *e = std::min(n, blocks * (t + 1) / T * q);
}

bool IsF32(const std::vector<int>& types, const char* op) {
  for (int t : types) {
    if (t != kFloat32) {
      MX_ERROR_MSG << op << ": every input must be float32 (CPU operator)";
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------- 1x1 conv

// dW (M x N, row-major) += sum over k in [k0, k1) of dZ[k][m] * X[k][n]:
// dZ rows of length M (= Cout), X rows of length N (= Cin); both multiples
// of 32 (fr_pw_conv's shape check), so every tile is a full 8 x 32.
FR_CLONES void WeightGrad(const float* dZ, const float* X, int64_t M, int64_t N,
                          int64_t k0, int64_t k1, float* dW) {
  constexpr int64_t kc = 128;
  for (int64_t kb = k0; kb < k1; kb += kc) {
    const int64_t ke = std::min(k1, kb + kc);
    for (int64_t m = 0; m < M; m += 8) {
      for (int64_t n = 0; n < N; n += kNR) {
        v16 acc[8][2];
        for (int r = 0; r < 8; ++r) {
          acc[r][0] = Load(dW + (m + r) * N + n);
          acc[r][1] = Load(dW + (m + r) * N + n + 16);
        }
        for (int64_t k = kb; k < ke; ++k) {
          const v16 x0 = Load(X + k * N + n), x1 = Load(X + k * N + n + 16);
          const float* g = dZ + k * M + m;
          for (int r = 0; r < 8; ++r) {
            acc[r][0] += g[r] * x0;
            acc[r][1] += g[r] * x1;
          }
        }
        for (int r = 0; r < 8; ++r) {
          Store(dW + (m + r) * N + n, acc[r][0]);
          Store(dW + (m + r) * N + n + 16, acc[r][1]);
        }
      }
    }
  }
}

// Y (rows x N) = X (rows x K) * B, B packed (PackPanels), rows split over threads.
void ParallelGemm(const float* X, int64_t rows, int64_t K, const float* B, int64_t N,
                  float* Y) {
#pragma omp parallel
  {
    int64_t b, e;
    Split(rows, omp_get_thread_num(), omp_get_num_threads(), 8, &b, &e);
    if (e > b) Gemm(X + b * K, e - b, K, B, N, nullptr, nullptr, nullptr, Y + b * N);
  }
}

// Sums T per-thread buffers of n floats (parts[t * n + i]) into out.
void SumParts(const std::vector<float>& parts, int T, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int t = 0; t < T; ++t) s += parts[t * n + i];
    out[i] = static_cast<float>(s);
  }
}

MXReturnValue TwoInOneOut(const Attrs&, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue F32Type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if (!IsF32(*in, "fr_lib training operator")) return MX_FAIL;
  for (auto& t : *out) t = kFloat32;
  return MX_SUCCESS;
}

}  // namespace

MXReturnValue PwShape(const Attrs&, std::vector<std::vector<unsigned int> >* in,
                      std::vector<std::vector<unsigned int> >* out) {
  const auto& x = in->at(0);
  const auto& w = in->at(1);
  if (x.size() != 4 || w.size() != 4 || w[2] != 1 || w[3] != 1 || w[1] != x[3]) {
    MX_ERROR_MSG << "fr_pw_conv: expected x (N, H, W, Cin) and w (Cout, Cin, 1, 1)";
    return MX_FAIL;
  }
  if (x[3] % kNR || w[0] % kNR) {
    MX_ERROR_MSG << "fr_pw_conv: Cin and Cout must be multiples of " << kNR
                 << ", got " << x[3] << " and " << w[0];
    return MX_FAIL;
  }
  out->at(0) = {x[0], x[1], x[2], w[0]};
  return MX_SUCCESS;
}

MXReturnValue PwForward(const Attrs&, std::vector<MXTensor>* in,
                        std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& x = in->at(0);
  MXTensor& w = in->at(1);
  const int64_t rows = x.shape[0] * x.shape[1] * x.shape[2];
  const int64_t cin = x.shape[3], cout = w.shape[0];
  std::vector<float> packed(Panels(cout) * kNR * cin);
  PackPanelsT(w.data<float>(), cin, cout, cin, packed.data());
  ParallelGemm(x.data<float>(), rows, cin, packed.data(), cout, out->at(0).data<float>());
  return MX_SUCCESS;
}

// in: dy, x, w, y; out: dx, dw.
MXReturnValue PwBackward(const Attrs&, std::vector<MXTensor>* in,
                         std::vector<MXTensor>* out, const OpResource&) {
  const float* dy = in->at(0).data<float>();
  MXTensor& x = in->at(1);
  MXTensor& w = in->at(2);
  const int64_t rows = x.shape[0] * x.shape[1] * x.shape[2];
  const int64_t cin = x.shape[3], cout = w.shape[0];
  std::vector<float> packed(Panels(cin) * kNR * cout);
  PackPanels(w.data<float>(), cout, cin, cin, packed.data());
  ParallelGemm(dy, rows, cout, packed.data(), cin, out->at(0).data<float>());
  const int T = omp_get_max_threads();
  std::vector<float> parts(static_cast<size_t>(T) * cout * cin, 0.f);
#pragma omp parallel num_threads(T)
  {
    int64_t b, e;
    const int t = omp_get_thread_num();
    Split(rows, t, omp_get_num_threads(), 8, &b, &e);
    if (e > b) WeightGrad(dy, x.data<float>(), cout, cin, b, e, parts.data() + t * cout * cin);
  }
  SumParts(parts, T, cout * cin, out->at(1).data<float>());
  return MX_SUCCESS;
}

REGISTER_OP(fr_pw_conv)
    .setParseAttrs(TwoInOneOut)
    .setInferType(F32Type)
    .setInferShape(PwShape)
    .setForward(PwForward, "cpu")
    .setBackward(PwBackward, "cpu");

// ------------------------------------------------------------ depthwise conv

namespace {

struct Dw {
  int64_t N, H, W, C, kh, kw, stride, pad, OH, OW;
};

bool DwGeometry(const Attrs& attrs, const std::vector<int64_t>& x,
                const std::vector<int64_t>& w, Dw* d) {
  d->N = x[0]; d->H = x[1]; d->W = x[2]; d->C = x[3];
  d->kh = w[2]; d->kw = w[3];
  d->stride = IntAttr(attrs, "stride", 1);
  d->pad = IntAttr(attrs, "pad", 0);
  d->OH = (d->H + 2 * d->pad - d->kh) / d->stride + 1;
  d->OW = (d->W + 2 * d->pad - d->kw) / d->stride + 1;
  return d->stride >= 1 && d->pad >= 0 && d->H + 2 * d->pad >= d->kh &&
         d->W + 2 * d->pad >= d->kw;
}

// wr[(ky * kw + kx) * C + c] = w[c][0][ky][kx]
std::vector<float> DwRepack(const float* w, const Dw& d) {
  const int64_t taps = d.kh * d.kw;
  std::vector<float> wr(taps * d.C);
  for (int64_t c = 0; c < d.C; ++c)
    for (int64_t t = 0; t < taps; ++t) wr[t * d.C + c] = w[c * taps + t];
  return wr;
}

// Output rows [r0, r1) of (N * OH) rows.
FR_CLONES void DwForwardRows(const float* x, const float* wr, float* y, const Dw& d,
                             int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / d.OH, oh = r % d.OH;
    const float* img = x + n * d.H * d.W * d.C;
    float* out = y + r * d.OW * d.C;
    for (int64_t c = 0; c < d.C; c += 16) {
      for (int64_t ow = 0; ow < d.OW; ++ow) {
        v16 acc{};
        for (int64_t ky = 0; ky < d.kh; ++ky) {
          const int64_t ih = oh * d.stride - d.pad + ky;
          if (ih < 0 || ih >= d.H) continue;
          for (int64_t kx = 0; kx < d.kw; ++kx) {
            const int64_t iw = ow * d.stride - d.pad + kx;
            if (iw < 0 || iw >= d.W) continue;
            acc += Load(img + (ih * d.W + iw) * d.C + c) *
                   Load(wr + (ky * d.kw + kx) * d.C + c);
          }
        }
        Store(out + ow * d.C + c, acc);
      }
    }
  }
}

// Input-gradient rows [r0, r1) of (N * H) rows (gather form: no conflicts);
// the weight gradient of output rows [q0, q1) of (N * OH) into dwr.
FR_CLONES void DwBackwardRows(const float* dy, const float* x, const float* wr,
                              float* dx, float* dwr, const Dw& d, int64_t r0, int64_t r1,
                              int64_t q0, int64_t q1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / d.H, ih = r % d.H;
    const float* g = dy + n * d.OH * d.OW * d.C;
    float* out = dx + r * d.W * d.C;
    for (int64_t c = 0; c < d.C; c += 16) {
      for (int64_t iw = 0; iw < d.W; ++iw) {
        v16 acc{};
        for (int64_t ky = 0; ky < d.kh; ++ky) {
          const int64_t t = ih + d.pad - ky;
          if (t < 0 || t % d.stride) continue;
          const int64_t oh = t / d.stride;
          if (oh >= d.OH) continue;
          for (int64_t kx = 0; kx < d.kw; ++kx) {
            const int64_t u = iw + d.pad - kx;
            if (u < 0 || u % d.stride) continue;
            const int64_t ow = u / d.stride;
            if (ow >= d.OW) continue;
            acc += Load(g + (oh * d.OW + ow) * d.C + c) *
                   Load(wr + (ky * d.kw + kx) * d.C + c);
          }
        }
        Store(out + iw * d.C + c, acc);
      }
    }
  }
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / d.OH, oh = q % d.OH;
    const float* img = x + n * d.H * d.W * d.C;
    const float* g = dy + q * d.OW * d.C;
    for (int64_t ky = 0; ky < d.kh; ++ky) {
      const int64_t ih = oh * d.stride - d.pad + ky;
      if (ih < 0 || ih >= d.H) continue;
      for (int64_t kx = 0; kx < d.kw; ++kx) {
        float* acc_row = dwr + (ky * d.kw + kx) * d.C;
        for (int64_t c = 0; c < d.C; c += 16) {
          v16 acc = Load(acc_row + c);
          for (int64_t ow = 0; ow < d.OW; ++ow) {
            const int64_t iw = ow * d.stride - d.pad + kx;
            if (iw < 0 || iw >= d.W) continue;
            acc += Load(g + ow * d.C + c) * Load(img + (ih * d.W + iw) * d.C + c);
          }
          Store(acc_row + c, acc);
        }
      }
    }
  }
}

// 3x3 kernels with padding 1 (every depthwise layer of MobileFaceNet but
// the global 7x7 one): the same sums as above with the taps unrolled, the
// nine weight vectors in registers, and bounds checks only at the borders
// (rows outside the image read a zero row).
bool Fast3x3(const Dw& d) {
  return d.kh == 3 && d.kw == 3 && d.pad == 1 && (d.stride == 1 || d.stride == 2);
}

// y row (n, oh) = sum over taps of x * w; rows: the three input rows (or
// zeros). STATS: also s1 += sum of (y - shift), s2 += sum of (y - shift)^2
// per channel over the row (in float over the row, then in double).
template <int S, bool STATS = false>
FR_INLINE void Dw3Row(const float* const* rows, const float* wr, float* out, int64_t W,
                      int64_t OW, int64_t C, const float* shift = nullptr,
                      double* s1 = nullptr, double* s2 = nullptr) {
  for (int64_t c = 0; c < C; c += 16) {
    v16 w[9];
    for (int t = 0; t < 9; ++t) w[t] = Load(wr + t * C + c);
    v16 sum{}, sq{};
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t iw = ow * S - 1;
      v16 a0, a1, a2;
      if (iw >= 0 && iw + 2 < W) {
        const int64_t o = iw * C + c;
        a0 = Load(rows[0] + o) * w[0] + Load(rows[1] + o) * w[3] + Load(rows[2] + o) * w[6];
        a1 = Load(rows[0] + o + C) * w[1] + Load(rows[1] + o + C) * w[4] +
             Load(rows[2] + o + C) * w[7];
        a2 = Load(rows[0] + o + 2 * C) * w[2] + Load(rows[1] + o + 2 * C) * w[5] +
             Load(rows[2] + o + 2 * C) * w[8];
      } else {
        a0 = a1 = a2 = v16{};
        for (int kx = 0; kx < 3; ++kx) {
          if (iw + kx < 0 || iw + kx >= W) continue;
          const int64_t o = (iw + kx) * C + c;
          a0 += Load(rows[0] + o) * w[kx];
          a1 += Load(rows[1] + o) * w[3 + kx];
          a2 += Load(rows[2] + o) * w[6 + kx];
        }
      }
      const v16 v = a0 + a1 + a2;
      Store(out + ow * C + c, v);
      if (STATS) {
        const v16 d = v - Load(shift + c);
        sum += d;
        sq += d * d;
      }
    }
    if (STATS) {
      float f1[16], f2[16];
      Store(f1, sum);
      Store(f2, sq);
      for (int j = 0; j < 16; ++j) { s1[c + j] += f1[j]; s2[c + j] += f2[j]; }
    }
  }
}

// Forward of output rows [r0, r1) (S = stride); also the input gradient of a
// stride-1 layer, run on dy with the flipped kernel.
template <int S>
FR_INLINE void Dw3Forward(const float* x, const float* wr, float* y, int64_t H, int64_t W,
                          int64_t OH, int64_t OW, int64_t C, const float* zeros,
                          int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / OH, oh = r % OH;
    const float* rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const int64_t ih = oh * S - 1 + ky;
      rows[ky] = (ih >= 0 && ih < H) ? x + ((n * H) + ih) * W * C : zeros;
    }
    Dw3Row<S>(rows, wr, y + r * OW * C, W, OW, C);
  }
}

// Forward of output rows [r0, r1) with the per-channel sums of (y - shift)
// and (y - shift)^2 added to s1, s2.
FR_CLONES void Dw3ForwardStatsRows(const float* x, const float* wr, float* y, const Dw& d,
                                   const float* zeros, const float* shift, int64_t r0,
                                   int64_t r1, double* s1, double* s2) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / d.OH, oh = r % d.OH;
    const float* rows[3];
    for (int ky = 0; ky < 3; ++ky) {
      const int64_t ih = oh * d.stride - 1 + ky;
      rows[ky] = (ih >= 0 && ih < d.H) ? x + ((n * d.H) + ih) * d.W * d.C : zeros;
    }
    if (d.stride == 1)
      Dw3Row<1, true>(rows, wr, y + r * d.OW * d.C, d.W, d.OW, d.C, shift, s1, s2);
    else
      Dw3Row<2, true>(rows, wr, y + r * d.OW * d.C, d.W, d.OW, d.C, shift, s1, s2);
  }
}

FR_CLONES void Dw3ForwardRows(const float* x, const float* wr, float* y, int64_t H,
                              int64_t W, int64_t OH, int64_t OW, int64_t C, int stride,
                              const float* zeros, int64_t r0, int64_t r1) {
  if (stride == 1) Dw3Forward<1>(x, wr, y, H, W, OH, OW, C, zeros, r0, r1);
  else Dw3Forward<2>(x, wr, y, H, W, OH, OW, C, zeros, r0, r1);
}

// Input gradient of a stride-2 layer, input row ih of an image whose output
// gradient row oh is g(oh): input pixel i receives output o through tap k
// when i = 2 o - 1 + k, i.e. k = 1 for even i and k = 0 (o = (i + 1) / 2)
// and k = 2 (o = (i - 1) / 2) for odd i.
template <class Rows>
FR_INLINE void Dw3GradS2Row(Rows g, const float* wr, float* out, int64_t ih, const Dw& d) {
  const int64_t C = d.C;
  int ky[2], nr = 0;
  const float* grow[2];
  if (ih % 2 == 0) {
    ky[nr] = 1; grow[nr++] = g(ih / 2);
  } else {
    if ((ih + 1) / 2 < d.OH) { ky[nr] = 0; grow[nr++] = g((ih + 1) / 2); }
    ky[nr] = 2; grow[nr++] = g((ih - 1) / 2);
  }
  for (int64_t iw = 0; iw < d.W; ++iw) {
    int kx[2], nc = 0;
    int64_t ow[2];
    if (iw % 2 == 0) {
      kx[nc] = 1; ow[nc++] = iw / 2;
    } else {
      if ((iw + 1) / 2 < d.OW) { kx[nc] = 0; ow[nc++] = (iw + 1) / 2; }
      kx[nc] = 2; ow[nc++] = (iw - 1) / 2;
    }
    for (int64_t c = 0; c < C; c += 16) {
      v16 acc{};
      for (int i = 0; i < nr; ++i)
        for (int j = 0; j < nc; ++j)
          acc += Load(grow[i] + ow[j] * C + c) * Load(wr + (ky[i] * 3 + kx[j]) * C + c);
      Store(out + iw * C + c, acc);
    }
  }
}

// Input rows [r0, r1) of (N * H) rows.
FR_CLONES void Dw3GradS2Rows(const float* dy, const float* wr, float* dx, const Dw& d,
                             int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* g = dy + (r / d.H) * d.OH * d.OW * d.C;
    Dw3GradS2Row([&](int64_t oh) { return g + oh * d.OW * d.C; }, wr, dx + r * d.W * d.C,
                 r % d.H, d);
  }
}

// Weight gradient of one output row g (input rows: the three it reads, or
// zeros), nine accumulators per channel block.
template <int S>
FR_INLINE void Dw3WeightGradRow(const float* const* rows, const float* g, float* dwr,
                                const Dw& d) {
  const int64_t C = d.C;
  for (int64_t c = 0; c < C; c += 16) {
    v16 acc[9];
    for (int t = 0; t < 9; ++t) acc[t] = Load(dwr + t * C + c);
    for (int64_t ow = 0; ow < d.OW; ++ow) {
      const v16 gv = Load(g + ow * C + c);
      const int64_t iw = ow * S - 1;
      if (iw >= 0 && iw + 2 < d.W) {
        for (int ky = 0; ky < 3; ++ky)
          for (int kx = 0; kx < 3; ++kx)
            acc[ky * 3 + kx] += gv * Load(rows[ky] + (iw + kx) * C + c);
      } else {
        for (int ky = 0; ky < 3; ++ky)
          for (int kx = 0; kx < 3; ++kx)
            if (iw + kx >= 0 && iw + kx < d.W)
              acc[ky * 3 + kx] += gv * Load(rows[ky] + (iw + kx) * C + c);
      }
    }
    for (int t = 0; t < 9; ++t) Store(dwr + t * C + c, acc[t]);
  }
}

// The three input rows that output row oh of image n reads (zeros outside).
template <int S>
FR_INLINE void Dw3InputRows(const float* x, const Dw& d, const float* zeros, int64_t n,
                            int64_t oh, const float** rows) {
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t ih = oh * S - 1 + ky;
    rows[ky] = (ih >= 0 && ih < d.H) ? x + ((n * d.H) + ih) * d.W * d.C : zeros;
  }
}

// Weight gradient of output rows [q0, q1).
template <int S>
FR_INLINE void Dw3WeightGrad(const float* dy, const float* x, float* dwr, const Dw& d,
                             const float* zeros, int64_t q0, int64_t q1) {
  for (int64_t q = q0; q < q1; ++q) {
    const float* rows[3];
    Dw3InputRows<S>(x, d, zeros, q / d.OH, q % d.OH, rows);
    Dw3WeightGradRow<S>(rows, dy + q * d.OW * d.C, dwr, d);
  }
}

FR_CLONES void Dw3WeightGradRows(const float* dy, const float* x, float* dwr, const Dw& d,
                                 const float* zeros, int64_t q0, int64_t q1) {
  if (d.stride == 1) Dw3WeightGrad<1>(dy, x, dwr, d, zeros, q0, q1);
  else Dw3WeightGrad<2>(dy, x, dwr, d, zeros, q0, q1);
}

MXReturnValue DwParse(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  if (IntAttr(attrs, "stride", 1) < 1 || IntAttr(attrs, "pad", 0) < 0) {
    MX_ERROR_MSG << "fr_dw_conv: stride must be >= 1 and pad >= 0";
    return MX_FAIL;
  }
  return MX_SUCCESS;
}

std::vector<int64_t> Shape64(const std::vector<unsigned int>& s) {
  return std::vector<int64_t>(s.begin(), s.end());
}

}  // namespace

MXReturnValue DwShape(const Attrs& attrs, std::vector<std::vector<unsigned int> >* in,
                      std::vector<std::vector<unsigned int> >* out) {
  const auto& x = in->at(0);
  const auto& w = in->at(1);
  if (x.size() != 4 || w.size() != 4 || w[0] != x[3] || w[1] != 1) {
    MX_ERROR_MSG << "fr_dw_conv: expected x (N, H, W, C) and w (C, 1, kh, kw)";
    return MX_FAIL;
  }
  if (x[3] % 16) {
    MX_ERROR_MSG << "fr_dw_conv: C must be a multiple of 16, got " << x[3];
    return MX_FAIL;
  }
  Dw d;
  if (!DwGeometry(attrs, Shape64(x), Shape64(w), &d)) {
    MX_ERROR_MSG << "fr_dw_conv: the padded input is smaller than the kernel";
    return MX_FAIL;
  }
  out->at(0) = {x[0], static_cast<unsigned int>(d.OH), static_cast<unsigned int>(d.OW), x[3]};
  return MX_SUCCESS;
}

MXReturnValue DwForward(const Attrs& attrs, std::vector<MXTensor>* in,
                        std::vector<MXTensor>* out, const OpResource&) {
  Dw d;
  DwGeometry(attrs, in->at(0).shape, in->at(1).shape, &d);
  const std::vector<float> wr = DwRepack(in->at(1).data<float>(), d);
  const float* x = in->at(0).data<float>();
  float* y = out->at(0).data<float>();
  const bool fast = Fast3x3(d);
  const std::vector<float> zeros(fast ? d.W * d.C : 0, 0.f);
#pragma omp parallel
  {
    int64_t b, e;
    Split(d.N * d.OH, omp_get_thread_num(), omp_get_num_threads(), 1, &b, &e);
    if (fast) Dw3ForwardRows(x, wr.data(), y, d.H, d.W, d.OH, d.OW, d.C, int(d.stride),
                             zeros.data(), b, e);
    else DwForwardRows(x, wr.data(), y, d, b, e);
  }
  return MX_SUCCESS;
}

// in: dy, x, w, y; out: dx, dw.
MXReturnValue DwBackward(const Attrs& attrs, std::vector<MXTensor>* in,
                         std::vector<MXTensor>* out, const OpResource&) {
  Dw d;
  DwGeometry(attrs, in->at(1).shape, in->at(2).shape, &d);
  const std::vector<float> wr = DwRepack(in->at(2).data<float>(), d);
  const int T = omp_get_max_threads();
  const int64_t taps = d.kh * d.kw;
  std::vector<float> parts(static_cast<size_t>(T) * taps * d.C, 0.f);
  const float* dy = in->at(0).data<float>();
  const float* x = in->at(1).data<float>();
  float* dx = out->at(0).data<float>();
  const bool fast = Fast3x3(d);
  const std::vector<float> zeros(fast ? std::max(d.W, d.OW) * d.C : 0, 0.f);
  std::vector<float> flipped(fast ? 9 * d.C : 0);  // w[2 - ky][2 - kx]
  for (int64_t t = 0; fast && t < 9; ++t)
    std::copy(wr.begin() + (8 - t) * d.C, wr.begin() + (9 - t) * d.C,
              flipped.begin() + t * d.C);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t b, e, qb, qe;
    Split(d.N * d.H, t, nt, 1, &b, &e);
    Split(d.N * d.OH, t, nt, 1, &qb, &qe);
    float* mine = parts.data() + t * taps * d.C;
    if (!fast) {
      DwBackwardRows(dy, x, wr.data(), dx, mine, d, b, e, qb, qe);
    } else {
      if (d.stride == 1)  // correlation of dy with the flipped kernel
        Dw3ForwardRows(dy, flipped.data(), dx, d.OH, d.OW, d.H, d.W, d.C, 1,
                       zeros.data(), b, e);
      else
        Dw3GradS2Rows(dy, wr.data(), dx, d, b, e);
      Dw3WeightGradRows(dy, x, mine, d, zeros.data(), qb, qe);
    }
  }
  std::vector<float> dwr(taps * d.C);
  SumParts(parts, T, taps * d.C, dwr.data());
  float* dw = out->at(1).data<float>();
  for (int64_t c = 0; c < d.C; ++c)
    for (int64_t k = 0; k < taps; ++k) dw[c * taps + k] = dwr[k * d.C + c];
  return MX_SUCCESS;
}

REGISTER_OP(fr_dw_conv)
    .setParseAttrs(DwParse)
    .setInferType(F32Type)
    .setInferShape(DwShape)
    .setForward(DwForward, "cpu")
    .setBackward(DwBackward, "cpu");

// ------------------------------------------------------- BatchNorm + PReLU

namespace {

// Per-channel sums of (z - shift) and (z - shift)^2 over rows [r0, r1),
// accumulated in float per block of 64 rows and in double across blocks.
FR_CLONES void BnStats(const float* z, int64_t C, const float* shift, int64_t r0,
                       int64_t r1, double* s1, double* s2) {
  std::vector<float> b1(C), b2(C);
  for (int64_t rb = r0; rb < r1; rb += 64) {
    std::fill(b1.begin(), b1.end(), 0.f);
    std::fill(b2.begin(), b2.end(), 0.f);
    const int64_t re = std::min(r1, rb + 64);
    for (int64_t r = rb; r < re; ++r) {
      const float* row = z + r * C;
      for (int64_t c = 0; c < C; c += 16) {
        const v16 v = Load(row + c) - Load(shift + c);
        Store(b1.data() + c, Load(b1.data() + c) + v);
        Store(b2.data() + c, Load(b2.data() + c) + v * v);
      }
    }
    for (int64_t c = 0; c < C; ++c) { s1[c] += b1[c]; s2[c] += b2[c]; }
  }
}

// y = act((z - mean) * scale + beta), act = PReLU(alpha) when alpha !=
// nullptr. (Subtracting the mean first: folding it into one offset loses
// precision when |mean| >> std.)
FR_CLONES void BnApply(const float* z, int64_t C, const float* mean, const float* scale,
                       const float* beta, const float* alpha, int64_t r0, int64_t r1,
                       float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* in = z + r * C;
    float* out = y + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      v16 u = (Load(in + c) - Load(mean + c)) * Load(scale + c) + Load(beta + c);
      if (alpha) u = u > 0 ? u : u * Load(alpha + c);
      Store(out + c, u);
    }
  }
}

// Backward pass 1: per-channel sums of g, g * (z - mean) and, for PReLU, of
// dy * u over u <= 0 (the slope gradient), where u = (z - mean) * scale + beta
// and g = dy * act'(u).
FR_CLONES void BnGradSums(const float* dy, const float* z, int64_t C, const float* scale,
                          const float* beta, const float* alpha, const float* mean,
                          int64_t r0, int64_t r1,
                          double* sg, double* sgz, double* sa) {
  std::vector<float> b(3 * C);
  for (int64_t rb = r0; rb < r1; rb += 64) {
    std::fill(b.begin(), b.end(), 0.f);
    const int64_t re = std::min(r1, rb + 64);
    for (int64_t r = rb; r < re; ++r) {
      const float* zr = z + r * C;
      const float* gr = dy + r * C;
      for (int64_t c = 0; c < C; c += 16) {
        const v16 xc = Load(zr + c) - Load(mean + c);
        v16 g = Load(gr + c);
        if (alpha) {
          const v16 u = xc * Load(scale + c) + Load(beta + c);
          const v16 neg = u > 0 ? v16{} : g * u;
          g = u > 0 ? g : g * Load(alpha + c);
          Store(b.data() + 2 * C + c, Load(b.data() + 2 * C + c) + neg);
        }
        Store(b.data() + c, Load(b.data() + c) + g);
        Store(b.data() + C + c, Load(b.data() + C + c) + g * xc);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      sg[c] += b[c];
      sgz[c] += b[C + c];
      sa[c] += b[2 * C + c];
    }
  }
}

// Backward pass 2: dz = a * g + bx * (z - mean) + c0 (per-channel
// coefficients).
FR_CLONES void BnGradApply(const float* dy, const float* z, int64_t C, const float* scale,
                           const float* beta, const float* alpha, const float* mean,
                           const float* a, const float* bx, const float* c0, int64_t r0,
                           int64_t r1, float* dz) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const float* gr = dy + r * C;
    float* out = dz + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      const v16 xc = Load(zr + c) - Load(mean + c);
      v16 g = Load(gr + c);
      if (alpha) {
        const v16 u = xc * Load(scale + c) + Load(beta + c);
        g = u > 0 ? g : g * Load(alpha + c);
      }
      Store(out + c, Load(a + c) * g + Load(bx + c) * xc + Load(c0 + c));
    }
  }
}

// Streaming (non-temporal) stores for the output pass of large tensors on
// AVX-512 CPUs. A plain store first reads the destination cache line from
// memory, so the output pass streams three arrays forward (z in, y read, y
// out) and four backward; an output of several MiB does not stay in the
// cache anyway, and bypassing it saves that read: measured 9-25 % (forward)
// and 14-34 % (backward) off fr_bn_act's time in a MobileFaceNet training
// step (benchmarks/README.md, "BatchNorm + PReLU with streaming stores"). Only in GCC builds that may contain AVX-512 code
// (not in the forced AVX2 and generic clones; not with clang, whose build is
// one baseline x86-64 clone, see fr_clones.h).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    (!defined(FR_LIB_ISA_FORCED) || FR_LIB_ISA_FORCED == 3)
#define FR_STREAM_STORES 1
constexpr int64_t kStreamBytes = int64_t(8) << 20;  // outputs of at least 8 MiB

// Whether the output pass over n floats at out streams (64-byte aligned: every
// row starts on a cache line since C is a multiple of 16).
bool Streams(const float* out, int64_t n) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 && n * 4 >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0;
}

// BnApply and BnGradApply with streaming stores.
__attribute__((target("avx512f"))) void BnApplyStream(
    const float* z, int64_t C, const float* mean, const float* scale, const float* beta,
    const float* alpha, int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* in = z + r * C;
    float* out = y + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      v16 u = (Load(in + c) - Load(mean + c)) * Load(scale + c) + Load(beta + c);
      if (alpha) u = u > 0 ? u : u * Load(alpha + c);
      _mm512_stream_ps(out + c, reinterpret_cast<__m512>(u));
    }
  }
  _mm_sfence();
}

__attribute__((target("avx512f"))) void BnGradApplyStream(
    const float* dy, const float* z, int64_t C, const float* scale, const float* beta,
    const float* alpha, const float* mean, const float* a, const float* bx,
    const float* c0, int64_t r0, int64_t r1, float* dz) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const float* gr = dy + r * C;
    float* out = dz + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      const v16 xc = Load(zr + c) - Load(mean + c);
      v16 g = Load(gr + c);
      if (alpha) {
        const v16 u = xc * Load(scale + c) + Load(beta + c);
        g = u > 0 ? g : g * Load(alpha + c);
      }
      const v16 d = Load(a + c) * g + Load(bx + c) * xc + Load(c0 + c);
      _mm512_stream_ps(out + c, reinterpret_cast<__m512>(d));
    }
  }
  _mm_sfence();
}
#else
bool Streams(const float*, int64_t) { return false; }
#endif

// Per-thread double partial sums of `count` arrays of C channels, reduced.
struct Partials {
  Partials(int T, int count, int64_t C) : T(T), count(count), C(C),
      v(static_cast<size_t>(T) * count * C, 0.0) {}
  double* of(int t, int k) { return v.data() + (static_cast<size_t>(t) * count + k) * C; }
  double total(int k, int64_t c) {
    double s = 0;
    for (int t = 0; t < T; ++t) s += of(t, k)[c];
    return s;
  }
  int T, count;
  int64_t C;
  std::vector<double> v;
};

struct BnShape {
  int64_t R, C;
};
BnShape RowsChannels(const std::vector<int64_t>& s) {
  BnShape b{1, s.back()};
  for (size_t i = 0; i + 1 < s.size(); ++i) b.R *= s[i];
  return b;
}

// Forward pass 1 over z (R x C): per-channel sums of (z - shift), shift =
// the first row (E[(z-a)^2] - E[z-a]^2 stays accurate when |mean| >> std).
void BnStatsAll(const float* z, int64_t R, int64_t C, const float* shift, Partials* p) {
#pragma omp parallel num_threads(p->T)
  {
    int64_t b, e;
    const int t = omp_get_thread_num();
    Split(R, t, omp_get_num_threads(), 1, &b, &e);
    BnStats(z, C, shift, b, e, p->of(t, 0), p->of(t, 1));
  }
}

// From the sums of (z - shift): the batch mean and (biased) variance, the
// running statistics updated, and scale = gamma / sqrt(var + eps).
void BnFinish(Partials* p, const float* shift, int64_t R, int64_t C, const float* gamma,
              double eps, double momentum, float* mean, float* var, float* rmean,
              float* rvar, float* scale) {
  for (int64_t c = 0; c < C; ++c) {
    const double m1 = p->total(0, c) / R, m2 = p->total(1, c) / R;
    const double v = std::max(0.0, m2 - m1 * m1), mu = shift[c] + m1;
    mean[c] = static_cast<float>(mu);
    var[c] = static_cast<float>(v);
    rmean[c] = static_cast<float>(momentum * rmean[c] + (1 - momentum) * mu);
    rvar[c] = static_cast<float>(momentum * rvar[c] + (1 - momentum) * v);
    scale[c] = static_cast<float>(gamma[c] / std::sqrt(v + eps));
  }
}

// Forward pass 2: y = act((z - mean) * scale + beta) over all rows.
void BnApplyAll(const float* z, int64_t R, int64_t C, const float* mean, const float* scale,
                const float* beta, const float* alpha, float* y) {
  const bool stream = Streams(y, R * C);
#pragma omp parallel
  {
    int64_t b, e;
    Split(R, omp_get_thread_num(), omp_get_num_threads(), 1, &b, &e);
#ifdef FR_STREAM_STORES
    if (stream) BnApplyStream(z, C, mean, scale, beta, alpha, b, e, y);
#endif
    if (!stream) BnApply(z, C, mean, scale, beta, alpha, b, e, y);
  }
}

// Backward pass 1 and what pass 2 needs: dz = a g + bx (z - mean) + c0.
struct BnGrad {
  explicit BnGrad(int64_t C) : scale(C), a(C), bx(C), c0(C) {}
  std::vector<float> scale, a, bx, c0;
};

// The sums over dy and z; writes dgamma, dbeta and (alpha != nullptr) dalpha.
void BnGradPrepare(const float* dy, const float* z, int64_t R, int64_t C, const float* gamma,
                   const float* beta, const float* alpha, const float* mean,
                   const float* var, double eps, float* dgamma, float* dbeta, float* dalpha,
                   BnGrad* g) {
  std::vector<double> inv(C);
  for (int64_t c = 0; c < C; ++c) {
    inv[c] = 1.0 / std::sqrt(static_cast<double>(var[c]) + eps);
    g->scale[c] = static_cast<float>(gamma[c] * inv[c]);
  }
  const int T = omp_get_max_threads();
  Partials p(T, 3, C);
#pragma omp parallel num_threads(T)
  {
    int64_t b, e;
    const int t = omp_get_thread_num();
    Split(R, t, omp_get_num_threads(), 1, &b, &e);
    BnGradSums(dy, z, C, g->scale.data(), beta, alpha, mean, b, e, p.of(t, 0), p.of(t, 1),
               p.of(t, 2));
  }
  // With xhat = (z - mean) inv: dbeta = sum g, dgamma = sum g xhat and
  // dz = gamma inv (g - dbeta / R - xhat dgamma / R).
  for (int64_t c = 0; c < C; ++c) {
    const double sg = p.total(0, c), sgx = p.total(1, c) * inv[c];  // sum g xhat
    const double k = gamma[c] * inv[c];
    dbeta[c] = static_cast<float>(sg);
    dgamma[c] = static_cast<float>(sgx);
    g->a[c] = static_cast<float>(k);
    g->bx[c] = static_cast<float>(-k * inv[c] * sgx / R);
    g->c0[c] = static_cast<float>(-k * sg / R);
    if (alpha) dalpha[c] = static_cast<float>(p.total(2, c));
  }
}

// dz of rows [r0, r1) (pass 2, plain stores; dz points at row r0).
FR_INLINE void BnGradRows(const float* dy, const float* z, int64_t C, const BnGrad& g,
                          const float* beta, const float* alpha, const float* mean,
                          int64_t r0, int64_t r1, float* dz) {
  BnGradApply(dy + r0 * C, z + r0 * C, C, g.scale.data(), beta, alpha, mean, g.a.data(),
              g.bx.data(), g.c0.data(), 0, r1 - r0, dz);
}

// Zeros for the gradients of the last `count` outputs (running statistics).
void ZeroLast(std::vector<MXTensor>* out, size_t count) {
  for (size_t k = out->size() - count; k < out->size(); ++k) {
    MXTensor& t = out->at(k);
    if (t.data_ptr) std::memset(t.data_ptr, 0, t.size() * sizeof(float));
  }
}

}  // namespace

MXReturnValue BnParse(const Attrs& attrs, int* num_in, int* num_out) {
  const int act = IntAttr(attrs, "act", 1);
  if (act != 0 && act != 1) {
    MX_ERROR_MSG << "fr_bn_act: act must be 0 (none) or 1 (PReLU), got " << act;
    return MX_FAIL;
  }
  if (NumAttr(attrs, "eps", 1e-5) <= 0) {
    MX_ERROR_MSG << "fr_bn_act: eps must be > 0";
    return MX_FAIL;
  }
  *num_in = act ? 6 : 5;
  *num_out = 3;
  return MX_SUCCESS;
}

MXReturnValue BnMutate(const Attrs& attrs, std::vector<int>* indices) {
  const int first = IntAttr(attrs, "act", 1) ? 4 : 3;
  *indices = {first, first + 1};
  return MX_SUCCESS;
}

// The per-channel inputs in[first..] (gamma, beta, alpha, running statistics)
// must have shape (C,); the outputs are z-shaped, then the batch mean and variance.
MXReturnValue PerChannelShapes(const char* op, const std::vector<unsigned int>& z,
                               unsigned int C, size_t first,
                               std::vector<std::vector<unsigned int> >* in,
                               std::vector<std::vector<unsigned int> >* out) {
  for (size_t k = first; k < in->size(); ++k) {
    if (in->at(k).size() != 1 || in->at(k)[0] != C) {
      MX_ERROR_MSG << op << ": gamma, beta, alpha and the running statistics "
                      "must have shape (" << C << ",)";
      return MX_FAIL;
    }
  }
  out->at(0) = z;
  out->at(1) = {C};
  out->at(2) = {C};
  return MX_SUCCESS;
}

MXReturnValue BnShapeFn(const Attrs&, std::vector<std::vector<unsigned int> >* in,
                        std::vector<std::vector<unsigned int> >* out) {
  const auto& z = in->at(0);
  if (z.size() < 2 || z.back() % 16) {
    MX_ERROR_MSG << "fr_bn_act: z must be (..., C) with C a multiple of 16";
    return MX_FAIL;
  }
  return PerChannelShapes("fr_bn_act", z, z.back(), 1, in, out);
}

MXReturnValue BnForward(const Attrs& attrs, std::vector<MXTensor>* in,
                        std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& zt = in->at(0);
  const BnShape s = RowsChannels(zt.shape);
  const float* z = zt.data<float>();
  const bool act = in->size() > 5;
  const float* alpha = act ? in->at(3).data<float>() : nullptr;
  Partials p(omp_get_max_threads(), 2, s.C);
  const std::vector<float> first(z, z + s.C);
  BnStatsAll(z, s.R, s.C, first.data(), &p);
  float* mean = out->at(1).data<float>();
  std::vector<float> scale(s.C);
  BnFinish(&p, first.data(), s.R, s.C, in->at(1).data<float>(), NumAttr(attrs, "eps", 1e-5),
           NumAttr(attrs, "momentum", 0.9), mean, out->at(2).data<float>(),
           in->at(act ? 4 : 3).data<float>(), in->at(act ? 5 : 4).data<float>(),
           scale.data());
  BnApplyAll(z, s.R, s.C, mean, scale.data(), in->at(2).data<float>(), alpha,
             out->at(0).data<float>());
  return MX_SUCCESS;
}

// in: dy, dmean, dvar, z, gamma, beta[, alpha], running_mean, running_var, y,
// mean, var; out: dz, dgamma, dbeta[, dalpha], and zeros for the running
// statistics.
MXReturnValue BnBackward(const Attrs& attrs, std::vector<MXTensor>* in,
                         std::vector<MXTensor>* out, const OpResource&) {
  const bool act = out->size() > 5;
  MXTensor& zt = in->at(3);
  const BnShape s = RowsChannels(zt.shape);
  const float* dy = in->at(0).data<float>();
  const float* z = zt.data<float>();
  const float* beta = in->at(5).data<float>();
  const float* alpha = act ? in->at(6).data<float>() : nullptr;
  const size_t o = act ? 9 : 8;  // outputs y, mean, var start here
  const float* mean = in->at(o + 1).data<float>();
  BnGrad g(s.C);
  BnGradPrepare(dy, z, s.R, s.C, in->at(4).data<float>(), beta, alpha, mean,
                in->at(o + 2).data<float>(), NumAttr(attrs, "eps", 1e-5),
                out->at(1).data<float>(), out->at(2).data<float>(),
                act ? out->at(3).data<float>() : nullptr, &g);
  ZeroLast(out, 2);
  float* dz = out->at(0).data<float>();
  const bool stream = Streams(dz, s.R * s.C);
#pragma omp parallel
  {
    int64_t b, e;
    Split(s.R, omp_get_thread_num(), omp_get_num_threads(), 1, &b, &e);
#ifdef FR_STREAM_STORES
    if (stream)
      BnGradApplyStream(dy, z, s.C, g.scale.data(), beta, alpha, mean, g.a.data(),
                        g.bx.data(), g.c0.data(), b, e, dz);
#endif
    if (!stream) BnGradRows(dy, z, s.C, g, beta, alpha, mean, b, e, dz + b * s.C);
  }
  return MX_SUCCESS;
}

REGISTER_OP(fr_bn_act)
    .setParseAttrs(BnParse)
    .setInferType(F32Type)
    .setInferShape(BnShapeFn)
    .setMutateInputs(BnMutate)
    .setForward(BnForward, "cpu")
    .setBackward(BnBackward, "cpu");

// ------------------------------------------- 1x1 conv + BatchNorm + PReLU

namespace {

// One MR x 32 tile of Z = X * B (B packed, PackPanels), stored, and its rows
// added to the per-column float sums s1 += z - shift, s2 += (z - shift)^2.
template <int MR>
FR_INLINE void TileStats(const float* A, const float* B, int64_t K, const float* shift,
                         float* C, int64_t ldc, float* s1, float* s2) {
  v16 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = v16{};
  for (int64_t k = 0; k < K; ++k) {
    const v16 w0 = Load(B + k * kNR), w1 = Load(B + k * kNR + 16);
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * K + k];
      acc[r][0] += a * w0;
      acc[r][1] += a * w1;
    }
  }
  const v16 h0 = Load(shift), h1 = Load(shift + 16);
  v16 p0 = Load(s1), p1 = Load(s1 + 16), q0 = Load(s2), q1 = Load(s2 + 16);
  for (int r = 0; r < MR; ++r) {
    Store(C + r * ldc, acc[r][0]);
    Store(C + r * ldc + 16, acc[r][1]);
    const v16 d0 = acc[r][0] - h0, d1 = acc[r][1] - h1;
    p0 += d0;
    p1 += d1;
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  Store(s1, p0);
  Store(s1 + 16, p1);
  Store(s2, q0);
  Store(s2 + 16, q1);
}

// Z rows [r0, r1) = X * B (N a multiple of 32), and the per-column sums of
// (z - shift) and (z - shift)^2 over those rows into s1, s2: in float per
// block of 64 rows, in double across blocks (as BnStats).
FR_CLONES void GemmStats(const float* X, int64_t K, const float* B, int64_t N,
                         const float* shift, int64_t r0, int64_t r1, float* Z,
                         double* s1, double* s2) {
  const int64_t panels = N / kNR;
  std::vector<float> f1(N), f2(N);
  for (int64_t rb = r0; rb < r1; rb += 64) {
    std::fill(f1.begin(), f1.end(), 0.f);
    std::fill(f2.begin(), f2.end(), 0.f);
    const int64_t re = std::min(r1, rb + 64);
    int64_t m = rb;
    for (; m + 8 <= re; m += 8)
      for (int64_t p = 0; p < panels; ++p)
        TileStats<8>(X + m * K, B + p * K * kNR, K, shift + p * kNR, Z + m * N + p * kNR,
                     N, f1.data() + p * kNR, f2.data() + p * kNR);
    for (; m < re; ++m)
      for (int64_t p = 0; p < panels; ++p)
        TileStats<1>(X + m * K, B + p * K * kNR, K, shift + p * kNR, Z + m * N + p * kNR,
                     N, f1.data() + p * kNR, f2.data() + p * kNR);
    for (int64_t c = 0; c < N; ++c) { s1[c] += f1[c]; s2[c] += f2[c]; }
  }
}

// Buffers for the states' z, recycled: a static_alloc graph keeps one state
// per node, but an imperative call (or a graph without static_alloc) creates
// a state per forward pass, and a fresh allocation of many MiB would be paid
// in page faults every step. At most kPoolBytes are kept.
std::mutex pool_mutex;
std::multimap<size_t, float*> pool;
size_t pool_bytes = 0;
constexpr size_t kPoolBytes = size_t(2) << 30;

float* Acquire(size_t n) {
  {
    std::lock_guard<std::mutex> lock(pool_mutex);
    auto it = pool.find(n);
    if (it != pool.end()) {
      float* p = it->second;
      pool.erase(it);
      pool_bytes -= n * sizeof(float);
      return p;
    }
  }
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
}

void Release(float* p, size_t n) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(pool_mutex);
  if (pool_bytes + n * sizeof(float) > kPoolBytes) {
    std::free(p);
    return;
  }
  pool.emplace(n, p);
  pool_bytes += n * sizeof(float);
}

// The state of fr_pw_bn_act and fr_dw_bn_act: the convolution output z
// from forward to backward, and the BatchNorm attributes.
class ConvBnState : public CustomStatefulOp {
 public:
  explicit ConvBnState(const Attrs& attrs)
      : eps_(NumAttr(attrs, "eps", 1e-5)), momentum_(NumAttr(attrs, "momentum", 0.9)) {}
  ~ConvBnState() override { Release(z_, n_); }

 protected:
  // z for R x C values (a recycled buffer), or nullptr with the error set.
  float* Z(int64_t R, int64_t C, const char* op) {
    const size_t n = static_cast<size_t>(R * C);
    if (n != n_ || !z_) {
      Release(z_, n_);
      z_ = Acquire(n);
      n_ = z_ ? n : 0;
    }
    if (!z_) MX_ERROR_MSG << op << ": cannot allocate " << n * sizeof(float) << " bytes";
    return z_;
  }
  // z of the forward pass, or nullptr with the error set.
  const float* Saved(int64_t R, int64_t C, const char* op) const {
    if (z_ && n_ == static_cast<size_t>(R * C)) return z_;
    MX_ERROR_MSG << op << ": backward without its forward pass";
    return nullptr;
  }
  // BatchNorm + act of z (R x C) given the sums of (z - shift) in p; in:
  // ..., gamma, beta[, alpha], running_mean, running_var from index g.
  void Finish(Partials* p, const float* shift, int64_t R, int64_t C,
              std::vector<MXTensor>* in, size_t g, std::vector<MXTensor>* out) {
    const bool act = in->size() > g + 4;
    float* mean = out->at(1).data<float>();
    std::vector<float> scale(C);
    BnFinish(p, shift, R, C, in->at(g).data<float>(), eps_, momentum_, mean,
             out->at(2).data<float>(), in->at(g + (act ? 3 : 2)).data<float>(),
             in->at(g + (act ? 4 : 3)).data<float>(), scale.data());
    BnApplyAll(z_, R, C, mean, scale.data(), in->at(g + 1).data<float>(),
               act ? in->at(g + 2).data<float>() : nullptr, out->at(0).data<float>());
  }
  // Backward pass 1 (in: dy, dmean, dvar, forward inputs from index 3 with
  // gamma at index g, outputs y, mean, var; out: ..., dgamma, dbeta[,
  // dalpha], running statistics from index 2); zeros the last two outputs.
  void Prepare(const float* dy, int64_t R, int64_t C, std::vector<MXTensor>* in, size_t g,
               std::vector<MXTensor>* out, BnGrad* grad) const {
    const bool act = out->size() > 6;
    const size_t o = g + (act ? 5 : 4);  // y, mean, var
    BnGradPrepare(dy, z_, R, C, in->at(g).data<float>(), in->at(g + 1).data<float>(),
                  act ? in->at(g + 2).data<float>() : nullptr, in->at(o + 1).data<float>(),
                  in->at(o + 2).data<float>(), eps_, out->at(2).data<float>(),
                  out->at(3).data<float>(), act ? out->at(4).data<float>() : nullptr, grad);
    ZeroLast(out, 2);
  }

  double eps_, momentum_;
  float* z_ = nullptr;
  size_t n_ = 0;
};

// fr_pw_bn_act. in: x, w, gamma, beta[, alpha], running_mean, running_var;
// out: y, mean, var.
class PwBnAct : public ConvBnState {
 public:
  using ConvBnState::ConvBnState;

  MXReturnValue Forward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                        const OpResource&) override {
    MXTensor& xt = in->at(0);
    const float* x = xt.data<float>();
    const int64_t R = xt.shape[0] * xt.shape[1] * xt.shape[2];
    const int64_t cin = xt.shape[3], C = in->at(1).shape[0];
    float* z = Z(R, C, "fr_pw_bn_act");
    if (!z) return MX_FAIL;
    std::vector<float> packed(C * cin);
    PackPanelsT(in->at(1).data<float>(), cin, C, cin, packed.data());
    // shift: the first row of z, as BnForward (the same tile arithmetic)
    std::vector<float> shift(C);
    Gemm(x, 1, cin, packed.data(), C, nullptr, nullptr, nullptr, shift.data());
    Partials p(omp_get_max_threads(), 2, C);
#pragma omp parallel num_threads(p.T)
    {
      int64_t b, e;
      const int t = omp_get_thread_num();
      Split(R, t, omp_get_num_threads(), 8, &b, &e);
      if (e > b) GemmStats(x, cin, packed.data(), C, shift.data(), b, e, z, p.of(t, 0),
                           p.of(t, 1));
    }
    Finish(&p, shift.data(), R, C, in, 2, out);
    return MX_SUCCESS;
  }

  // in: dy, dmean, dvar, x, w, gamma, beta[, alpha], running_mean,
  // running_var, y, mean, var; out: dx, dw, dgamma, dbeta[, dalpha], and
  // zeros for the running statistics.
  MXReturnValue Backward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                         const OpResource&) override {
    const float* dy = in->at(0).data<float>();
    MXTensor& xt = in->at(3);
    const float* x = xt.data<float>();
    const int64_t R = xt.shape[0] * xt.shape[1] * xt.shape[2];
    const int64_t cin = xt.shape[3], C = in->at(4).shape[0];
    const float* z = Saved(R, C, "fr_pw_bn_act");
    if (!z) return MX_FAIL;
    BnGrad g(C);
    Prepare(dy, R, C, in, 5, out, &g);
    const bool act = out->size() > 6;
    const float* beta = in->at(6).data<float>();
    const float* alpha = act ? in->at(7).data<float>() : nullptr;
    const float* mean = in->at(act ? 11 : 10).data<float>();
    // dz a block of rows at a time (64-128 KiB, in L2), then dx = dz w and
    // the thread's part of dw += dz^T x from that block
    std::vector<float> packed(C * cin);
    PackPanels(in->at(4).data<float>(), C, cin, cin, packed.data());
    const int64_t block = std::max<int64_t>(8, std::min<int64_t>(256, 32768 / C) / 8 * 8);
    const int T = omp_get_max_threads();
    std::vector<float> parts(static_cast<size_t>(T) * C * cin, 0.f);
    float* dx = out->at(0).data<float>();
#pragma omp parallel num_threads(T)
    {
      int64_t b, e;
      const int t = omp_get_thread_num();
      Split(R, t, omp_get_num_threads(), 8, &b, &e);
      std::vector<float> dz(block * C);
      float* mine = parts.data() + static_cast<size_t>(t) * C * cin;
      for (int64_t rb = b; rb < e; rb += block) {
        const int64_t re = std::min(e, rb + block);
        BnGradRows(dy, z, C, g, beta, alpha, mean, rb, re, dz.data());
        Gemm(dz.data(), re - rb, C, packed.data(), cin, nullptr, nullptr, nullptr,
             dx + rb * cin);
        WeightGrad(dz.data(), x + rb * cin, C, cin, 0, re - rb, mine);
      }
    }
    SumParts(parts, T, C * cin, out->at(1).data<float>());
    return MX_SUCCESS;
  }
};

// The rows of one image that a block of 3x3 (pad 1) output rows [o0, o1)
// needs backward: dz rows [o0 - 1, o1 + 1) (clipped; formed from dy and z
// into buf), giving the weight gradient of rows [o0, o1) and the input
// gradient of input rows [o0, o1) (stride 1) or [2 o0, 2 o1) (stride 2; up
// to H for the last block).
template <int S>
FR_INLINE void Dw3BnBackBlock(const float* dy, const float* z, const float* x,
                              const BnGrad& g, const float* beta, const float* alpha,
                              const float* mean, const float* wr, const float* flipped,
                              const Dw& d, const float* zeros, int64_t n, int64_t o0,
                              int64_t o1, float* buf, float* dx, float* dwr) {
  const int64_t C = d.C, row = d.OW * C;
  const int64_t h0 = std::max<int64_t>(0, o0 - 1), h1 = std::min(d.OH, o1 + 1);
  const int64_t first = (n * d.OH + h0) * d.OW;
  BnGradRows(dy, z, C, g, beta, alpha, mean, first, first + (h1 - h0) * d.OW, buf);
  auto dz = [&](int64_t oh) -> const float* {
    return (oh >= 0 && oh < d.OH) ? buf + (oh - h0) * row : zeros;
  };
  for (int64_t oh = o0; oh < o1; ++oh) {
    const float* rows[3];
    Dw3InputRows<S>(x, d, zeros, n, oh, rows);
    Dw3WeightGradRow<S>(rows, dz(oh), dwr, d);
  }
  if (S == 1) {  // correlation of dz with the flipped kernel
    for (int64_t ih = o0; ih < o1; ++ih) {
      const float* rows[3] = {dz(ih - 1), dz(ih), dz(ih + 1)};
      Dw3Row<1>(rows, flipped, dx + (n * d.H + ih) * d.W * C, d.OW, d.W, C);
    }
  } else {
    const int64_t i1 = o1 == d.OH ? d.H : std::min(d.H, 2 * o1);
    for (int64_t ih = 2 * o0; ih < i1; ++ih)
      Dw3GradS2Row(dz, wr, dx + (n * d.H + ih) * d.W * C, ih, d);
  }
}

FR_CLONES void Dw3BnBackRows(const float* dy, const float* z, const float* x,
                             const BnGrad& g, const float* beta, const float* alpha,
                             const float* mean, const float* wr, const float* flipped,
                             const Dw& d, const float* zeros, int64_t q0, int64_t q1,
                             int64_t block, float* buf, float* dx, float* dwr) {
  for (int64_t q = q0; q < q1;) {
    const int64_t n = q / d.OH, o0 = q % d.OH;
    const int64_t o1 = std::min(std::min(d.OH, o0 + block), o0 + (q1 - q));
    if (d.stride == 1)
      Dw3BnBackBlock<1>(dy, z, x, g, beta, alpha, mean, wr, flipped, d, zeros, n, o0, o1,
                        buf, dx, dwr);
    else
      Dw3BnBackBlock<2>(dy, z, x, g, beta, alpha, mean, wr, flipped, d, zeros, n, o0, o1,
                        buf, dx, dwr);
    q += o1 - o0;
  }
}

// fr_dw_bn_act. in: x, w, gamma, beta[, alpha], running_mean, running_var;
// out: y, mean, var.
class DwBnAct : public ConvBnState {
 public:
  explicit DwBnAct(const Attrs& attrs) : ConvBnState(attrs), attrs_(attrs) {}

  MXReturnValue Forward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                        const OpResource&) override {
    Dw d;
    DwGeometry(attrs_, in->at(0).shape, in->at(1).shape, &d);
    const std::vector<float> wr = DwRepack(in->at(1).data<float>(), d);
    const float* x = in->at(0).data<float>();
    const int64_t R = d.N * d.OH * d.OW;
    float* z = Z(R, d.C, "fr_dw_bn_act");
    if (!z) return MX_FAIL;
    Partials p(omp_get_max_threads(), 2, d.C);
    if (Fast3x3(d)) {  // the sums as each row is stored
      const std::vector<float> zeros(d.W * d.C, 0.f);
      std::vector<float> first(d.OW * d.C);  // shift: the first output row
      Dw3ForwardRows(x, wr.data(), first.data(), d.H, d.W, d.OH, d.OW, d.C, int(d.stride),
                     zeros.data(), 0, 1);
#pragma omp parallel num_threads(p.T)
      {
        int64_t b, e;
        const int t = omp_get_thread_num();
        Split(d.N * d.OH, t, omp_get_num_threads(), 1, &b, &e);
        Dw3ForwardStatsRows(x, wr.data(), z, d, zeros.data(), first.data(), b, e,
                            p.of(t, 0), p.of(t, 1));
      }
      Finish(&p, first.data(), R, d.C, in, 2, out);
      return MX_SUCCESS;
    }
#pragma omp parallel
    {
      int64_t b, e;
      Split(d.N * d.OH, omp_get_thread_num(), omp_get_num_threads(), 1, &b, &e);
      DwForwardRows(x, wr.data(), z, d, b, e);
    }
    const std::vector<float> first(z, z + d.C);
    BnStatsAll(z, R, d.C, first.data(), &p);
    Finish(&p, first.data(), R, d.C, in, 2, out);
    return MX_SUCCESS;
  }

  // in: dy, dmean, dvar, x, w, gamma, beta[, alpha], running_mean,
  // running_var, y, mean, var; out: dx, dw, dgamma, dbeta[, dalpha], and
  // zeros for the running statistics.
  MXReturnValue Backward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                         const OpResource&) override {
    Dw d;
    DwGeometry(attrs_, in->at(3).shape, in->at(4).shape, &d);
    const int64_t R = d.N * d.OH * d.OW, C = d.C;
    const float* z = Saved(R, C, "fr_dw_bn_act");
    if (!z) return MX_FAIL;
    const float* dy = in->at(0).data<float>();
    const float* x = in->at(3).data<float>();
    BnGrad g(C);
    Prepare(dy, R, C, in, 5, out, &g);
    const bool act = out->size() > 6;
    const float* beta = in->at(6).data<float>();
    const float* alpha = act ? in->at(7).data<float>() : nullptr;
    const float* mean = in->at(act ? 11 : 10).data<float>();
    const std::vector<float> wr = DwRepack(in->at(4).data<float>(), d);
    const int64_t taps = d.kh * d.kw;
    const int T = omp_get_max_threads();
    std::vector<float> parts(static_cast<size_t>(T) * taps * C, 0.f);
    float* dx = out->at(0).data<float>();
    if (Fast3x3(d)) {
      // blocks of output rows whose dz (with one row either side) fills
      // about 160 KiB
      const int64_t row = d.OW * C;
      const int64_t block = std::max<int64_t>(1, 40960 / row - 2);
      const std::vector<float> zeros(std::max(d.W, d.OW) * C, 0.f);
      std::vector<float> flipped(9 * C);  // w[2 - ky][2 - kx]
      for (int64_t t = 0; t < 9; ++t)
        std::copy(wr.begin() + (8 - t) * C, wr.begin() + (9 - t) * C,
                  flipped.begin() + t * C);
#pragma omp parallel num_threads(T)
      {
        int64_t qb, qe;
        const int t = omp_get_thread_num();
        Split(d.N * d.OH, t, omp_get_num_threads(), 1, &qb, &qe);
        std::vector<float> buf((block + 2) * row);
        Dw3BnBackRows(dy, z, x, g, beta, alpha, mean, wr.data(), flipped.data(), d,
                      zeros.data(), qb, qe, block, buf.data(), dx,
                      parts.data() + static_cast<size_t>(t) * taps * C);
      }
    } else {  // any other kernel: dz in full, then fr_dw_conv's backward pass
      float* dz = Acquire(R * C);
      if (!dz) {
        MX_ERROR_MSG << "fr_dw_bn_act: cannot allocate " << R * C * 4 << " bytes";
        return MX_FAIL;
      }
#pragma omp parallel num_threads(T)
      {
        int64_t b, e, qb, qe;
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        Split(R, t, nt, 1, &b, &e);
        BnGradRows(dy, z, C, g, beta, alpha, mean, b, e, dz + b * C);
#pragma omp barrier
        Split(d.N * d.H, t, nt, 1, &b, &e);
        Split(d.N * d.OH, t, nt, 1, &qb, &qe);
        DwBackwardRows(dz, x, wr.data(), dx, parts.data() + static_cast<size_t>(t) * taps * C,
                       d, b, e, qb, qe);
      }
      Release(dz, R * C);
    }
    std::vector<float> dwr(taps * C);
    SumParts(parts, T, taps * C, dwr.data());
    float* dw = out->at(1).data<float>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < taps; ++k) dw[c * taps + k] = dwr[k * C + c];
    return MX_SUCCESS;
  }

 private:
  Attrs attrs_;
};

}  // namespace

MXReturnValue ConvBnParse(const Attrs& attrs, int* num_in, int* num_out) {
  if (!BnParse(attrs, num_in, num_out)) return MX_FAIL;
  *num_in += 1;  // w
  return MX_SUCCESS;
}

MXReturnValue ConvBnMutate(const Attrs& attrs, std::vector<int>* indices) {
  const int first = IntAttr(attrs, "act", 1) ? 5 : 4;
  *indices = {first, first + 1};
  return MX_SUCCESS;
}

// The BatchNorm inputs (from index 2) of a fused operator whose convolution
// output has shape conv.
MXReturnValue ConvBnShape(const char* op, const std::vector<unsigned int>& conv,
                          std::vector<std::vector<unsigned int> >* in,
                          std::vector<std::vector<unsigned int> >* out) {
  return PerChannelShapes(op, conv, conv[3], 2, in, out);
}

MXReturnValue PwBnShape(const Attrs& attrs, std::vector<std::vector<unsigned int> >* in,
                        std::vector<std::vector<unsigned int> >* out) {
  std::vector<std::vector<unsigned int> > conv_in = {in->at(0), in->at(1)}, conv_out(1);
  if (!PwShape(attrs, &conv_in, &conv_out)) return MX_FAIL;
  return ConvBnShape("fr_pw_bn_act", conv_out[0], in, out);
}

MXReturnValue DwBnShape(const Attrs& attrs, std::vector<std::vector<unsigned int> >* in,
                        std::vector<std::vector<unsigned int> >* out) {
  std::vector<std::vector<unsigned int> > conv_in = {in->at(0), in->at(1)}, conv_out(1);
  if (!DwShape(attrs, &conv_in, &conv_out)) return MX_FAIL;
  return ConvBnShape("fr_dw_bn_act", conv_out[0], in, out);
}

MXReturnValue DwBnParse(const Attrs& attrs, int* num_in, int* num_out) {
  int ignored_in, ignored_out;
  if (!DwParse(attrs, &ignored_in, &ignored_out)) return MX_FAIL;
  return ConvBnParse(attrs, num_in, num_out);
}

MXReturnValue PwBnCreate(const Attrs& attrs, const MXContext&,
                         const std::vector<std::vector<unsigned int> >&,
                         const std::vector<int>, CustomStatefulOp** op) {
  *op = CustomStatefulOp::create<PwBnAct>(attrs);
  return MX_SUCCESS;
}

MXReturnValue DwBnCreate(const Attrs& attrs, const MXContext&,
                         const std::vector<std::vector<unsigned int> >&,
                         const std::vector<int>, CustomStatefulOp** op) {
  *op = CustomStatefulOp::create<DwBnAct>(attrs);
  return MX_SUCCESS;
}

REGISTER_OP(fr_pw_bn_act)
    .setParseAttrs(ConvBnParse)
    .setInferType(F32Type)
    .setInferShape(PwBnShape)
    .setMutateInputs(ConvBnMutate)
    .setCreateOpState(PwBnCreate, "cpu");

REGISTER_OP(fr_dw_bn_act)
    .setParseAttrs(DwBnParse)
    .setInferType(F32Type)
    .setInferShape(DwBnShape)
    .setMutateInputs(ConvBnMutate)
    .setCreateOpState(DwBnCreate, "cpu");
