// Native CPU operators for fr_lib, loaded into MXNet through its extension
// library API (include/mxnet/lib_api.h, MXNet >= 1.7). Built on first use by
// fr_lib.ops.build(); see fr_lib/ops/__init__.py for why these exist.
//
// fr_prelu(x, alpha): per-channel PReLU on axis 1, one pass forward and one
// pass backward (MXNet 1.9's LeakyReLU(act_type='prelu') backward is slow on
// CPU, and composing PReLU from broadcast operators takes four passes).
//
// fr_margin_ce(cos, label, target; scale, replace): softmax cross-entropy
// over scale * cos with, when replace=1, the true-class entry cos[i, y_i]
// replaced by target[i]. It reads the (batch, classes) matrix once forward
// and writes its gradient once backward, so a margin loss costs no more
// passes over that matrix than plain softmax (the target itself, one value
// per row, is computed by ordinary MXNet operators and differentiated by
// autograd). Outputs: loss and the row log-sum-exp (kept for backward).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;  // NOLINT

namespace {

typedef std::unordered_map<std::string, std::string> Attrs;

int64_t InnerSize(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (size_t i = 2; i < shape.size(); ++i) n *= shape[i];
  return n;
}

// y = x if x > 0 else alpha[c] * x, for planes p = n * C + c of I elements.
template <typename T>
void PreluForward(const T* x, const T* alpha, T* y, int64_t N, int64_t C,
                  int64_t I, bool shared) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < N * C; ++p) {
    const T a = alpha[shared ? 0 : p % C];
    const T* xp = x + p * I;
    T* yp = y + p * I;
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) {
      const T v = xp[i];
      yp[i] = v > 0 ? v : a * v;
    }
  }
}

// dx = g if x > 0 else alpha[c] * g;  dalpha[c] = sum over x <= 0 of g * x.
// Per-channel slopes: one thread owns a channel, so the slope gradient needs
// no atomics; each plane is summed in T and the planes in double.
template <typename T>
void PreluBackward(const T* g, const T* x, const T* alpha, T* dx, T* dalpha,
                   int64_t N, int64_t C, int64_t I, bool shared) {
  if (!shared) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      const T a = alpha[c];
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t off = (n * C + c) * I;
        const T* xp = x + off;
        const T* gp = g + off;
        T* dp = dx + off;
        T part = 0;
#pragma omp simd reduction(+ : part)
        for (int64_t i = 0; i < I; ++i) {
          const T v = xp[i], gv = gp[i];
          const bool pos = v > 0;
          dp[i] = pos ? gv : a * gv;
          part += pos ? T(0) : gv * v;
        }
        acc += part;
      }
      dalpha[c] = T(acc);
    }
    return;
  }
  const T a = alpha[0];
  const int64_t total = N * C * I;
  double acc = 0;
#pragma omp parallel for reduction(+ : acc) schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const T v = x[i], gv = g[i];
    const bool pos = v > 0;
    dx[i] = pos ? gv : a * gv;
    acc += pos ? 0.0 : static_cast<double>(gv * v);
  }
  dalpha[0] = T(acc);
}

bool Shared(const MXTensor& x, const MXTensor& alpha) {
  return alpha.shape[0] == 1 && x.shape[1] != 1;
}

}  // namespace

MXReturnValue PreluParse(const Attrs&, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue PreluType(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32 && in->at(0) != kFloat64) {
    MX_ERROR_MSG << "fr_prelu: x must be float32 or float64 (CPU operator)";
    return MX_FAIL;
  }
  if (in->at(1) != in->at(0)) {
    MX_ERROR_MSG << "fr_prelu: alpha must have the dtype of x";
    return MX_FAIL;
  }
  out->at(0) = in->at(0);
  return MX_SUCCESS;
}

MXReturnValue PreluShape(const Attrs&, std::vector<std::vector<unsigned int> >* in,
                         std::vector<std::vector<unsigned int> >* out) {
  const std::vector<unsigned int>& x = in->at(0);
  const std::vector<unsigned int>& alpha = in->at(1);
  if (x.size() < 2) {
    MX_ERROR_MSG << "fr_prelu: x must have >= 2 dimensions (N, C, ...), got "
                 << x.size();
    return MX_FAIL;
  }
  if (alpha.size() != 1 || (alpha[0] != 1 && alpha[0] != x[1])) {
    MX_ERROR_MSG << "fr_prelu: alpha must have shape (1,) or (" << x[1] << ",)";
    return MX_FAIL;
  }
  out->at(0) = x;
  return MX_SUCCESS;
}

MXReturnValue PreluForwardCPU(const Attrs&, std::vector<MXTensor>* in,
                              std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& x = in->at(0);
  MXTensor& alpha = in->at(1);
  const int64_t N = x.shape[0], C = x.shape[1], I = InnerSize(x.shape);
  const bool shared = Shared(x, alpha);
  if (x.dtype == kFloat32) {
    PreluForward(x.data<float>(), alpha.data<float>(), out->at(0).data<float>(),
                 N, C, I, shared);
  } else {
    PreluForward(x.data<double>(), alpha.data<double>(),
                 out->at(0).data<double>(), N, C, I, shared);
  }
  return MX_SUCCESS;
}

// Backward inputs: output gradient, then the forward inputs (x, alpha).
MXReturnValue PreluBackwardCPU(const Attrs&, std::vector<MXTensor>* in,
                               std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& g = in->at(0);
  MXTensor& x = in->at(1);
  MXTensor& alpha = in->at(2);
  const int64_t N = x.shape[0], C = x.shape[1], I = InnerSize(x.shape);
  const bool shared = Shared(x, alpha);
  if (x.dtype == kFloat32) {
    PreluBackward(g.data<float>(), x.data<float>(), alpha.data<float>(),
                  out->at(0).data<float>(), out->at(1).data<float>(), N, C, I,
                  shared);
  } else {
    PreluBackward(g.data<double>(), x.data<double>(), alpha.data<double>(),
                  out->at(0).data<double>(), out->at(1).data<double>(), N, C, I,
                  shared);
  }
  return MX_SUCCESS;
}

REGISTER_OP(fr_prelu)
    .setParseAttrs(PreluParse)
    .setInferType(PreluType)
    .setInferShape(PreluShape)
    .setForward(PreluForwardCPU, "cpu")
    .setBackward(PreluBackwardCPU, "cpu");


namespace {

// exp(x) for x <= 0 in float32, Cephes' expf polynomial (about 1 ulp), in a
// form GCC vectorises (std::exp is a scalar call per element).
inline float ExpNeg(float x) {
  x = x < -87.0f ? -87.0f : x;
  // round to nearest with the 1.5 * 2^23 trick (no libm call, vectorises)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}
inline double ExpNeg(double x) { return std::exp(x); }

bool ReadLabels(const MXTensor& label, int64_t classes, std::vector<int64_t>* out) {
  const int64_t n = label.size();
  out->resize(n);
  for (int64_t i = 0; i < n; ++i) {
    double v;
    switch (label.dtype) {
      case kFloat32: v = label.data_ptr ? static_cast<const float*>(label.data_ptr)[i] : 0; break;
      case kFloat64: v = static_cast<const double*>(label.data_ptr)[i]; break;
      case kInt32: v = static_cast<const int32_t*>(label.data_ptr)[i]; break;
      case kInt64: v = static_cast<double>(static_cast<const int64_t*>(label.data_ptr)[i]); break;
      default: return false;
    }
    const int64_t y = static_cast<int64_t>(std::llround(v));
    if (y < 0 || y >= classes || static_cast<double>(y) != v) {
      MX_ERROR_MSG << "fr_margin_ce: label " << v << " (row " << i
                   << ") is not a class id in [0, " << classes << ")";
      return false;
    }
    (*out)[i] = y;
  }
  return true;
}

// Hot float loops, compiled for AVX-512, AVX2 and baseline x86-64 and chosen
// when the library loads (GCC target_clones); elsewhere the generic ones.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FR_CLONES
#endif

FR_CLONES float ExpSumF(const float* row, int64_t n, float s, float m) {
  float part = 0;
#pragma omp simd reduction(+ : part)
  for (int64_t j = 0; j < n; ++j) part += ExpNeg(s * row[j] - m);
  return part;
}

FR_CLONES float MaxF(const float* row, int64_t n, float s, float m) {
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s * row[j]);
  return m;
}

FR_CLONES void SoftmaxGradF(const float* row, float* drow, int64_t n, float s,
                            float l, float gs) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) drow[j] = gs * ExpNeg(s * row[j] - l);
}

template <typename T>
T RowMax(const T* row, int64_t begin, int64_t end, T s, T m) {
#pragma omp simd reduction(max : m)
  for (int64_t j = begin; j < end; ++j) m = std::max(m, s * row[j]);
  return m;
}
template <>
float RowMax(const float* row, int64_t begin, int64_t end, float s, float m) {
  return end > begin ? MaxF(row + begin, end - begin, s, m) : m;
}

template <typename T>
double RowExpSum(const T* row, int64_t begin, int64_t end, T s, T m) {
  double sum = 0;
  for (int64_t j = begin; j < end; ++j) sum += ExpNeg(s * row[j] - m);
  return sum;
}
template <>
double RowExpSum(const float* row, int64_t begin, int64_t end, float s, float m) {
  double sum = 0;  // float blocks, double total
  for (int64_t j0 = begin; j0 < end; j0 += 4096) {
    sum += ExpSumF(row + j0, std::min(end, j0 + 4096) - j0, s, m);
  }
  return sum;
}

template <typename T>
void SoftmaxGrad(const T* row, T* drow, int64_t n, T s, T l, T gs) {
  for (int64_t j = 0; j < n; ++j) drow[j] = gs * ExpNeg(s * row[j] - l);
}
template <>
void SoftmaxGrad(const float* row, float* drow, int64_t n, float s, float l, float gs) {
  SoftmaxGradF(row, drow, n, s, l, gs);
}

// With replace, the true class is left out of both the max and the sum and
// its target term added, so no cancellation happens when it dominates.
template <typename T>
void MarginCEForward(const T* cos, const int64_t* label, const T* target, T* loss,
                     T* lse, int64_t B, int64_t C, T s, bool replace) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < B; ++i) {
    const T* row = cos + i * C;
    const int64_t y = label[i];
    const T zy = s * (replace ? target[i] : row[y]);
    T m = RowMax(row, 0, y, s, zy);
    m = RowMax(row, y + 1, C, s, m);
    const double sum = RowExpSum(row, 0, y, s, m) + RowExpSum(row, y + 1, C, s, m) +
                       static_cast<double>(ExpNeg(zy - m));
    const double log_sum = std::log(sum);  // m - zy first: exact when equal
    lse[i] = static_cast<T>(log_sum + m);
    loss[i] = static_cast<T>(log_sum + (static_cast<double>(m) - zy));
  }
}

// d loss_i / d z_ij = p_ij - [j == y_i], z = s * cos (target at y_i).
template <typename T>
void MarginCEBackward(const T* gloss, const T* glse, const T* cos, const int64_t* label,
                      const T* target, const T* lse, T* dcos, T* dtarget,
                      int64_t B, int64_t C, T s, bool replace) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < B; ++i) {
    const T* row = cos + i * C;
    T* drow = dcos + i * C;
    const int64_t y = label[i];
    const T l = lse[i];
    const T g = (gloss ? gloss[i] : T(0)) + (glse ? glse[i] : T(0));  // both weight p
    const T gs = g * s;
    SoftmaxGrad(row, drow, C, s, l, gs);
    const T gl = gloss ? gloss[i] * s : T(0);  // the -z_y term of the loss
    if (replace) {
      drow[y] = 0;
      dtarget[i] = gs * ExpNeg(s * target[i] - l) - gl;
    } else {
      drow[y] -= gl;
      dtarget[i] = 0;
    }
  }
}

double AttrNumber(const Attrs& attrs, const char* key, double fallback) {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : std::stod(it->second);
}

}  // namespace

MXReturnValue MarginCEParse(const Attrs& attrs, int* num_in, int* num_out) {
  if (attrs.find("scale") == attrs.end()) {
    MX_ERROR_MSG << "fr_margin_ce: the scale attribute is required";
    return MX_FAIL;
  }
  *num_in = 3;
  *num_out = 2;
  return MX_SUCCESS;
}

MXReturnValue MarginCEType(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32 && in->at(0) != kFloat64) {
    MX_ERROR_MSG << "fr_margin_ce: cos must be float32 or float64 (CPU operator)";
    return MX_FAIL;
  }
  if (in->at(2) != in->at(0)) {
    MX_ERROR_MSG << "fr_margin_ce: target must have the dtype of cos";
    return MX_FAIL;
  }
  out->at(0) = in->at(0);
  out->at(1) = in->at(0);
  return MX_SUCCESS;
}

MXReturnValue MarginCEShape(const Attrs&, std::vector<std::vector<unsigned int> >* in,
                            std::vector<std::vector<unsigned int> >* out) {
  const std::vector<unsigned int>& cos = in->at(0);
  if (cos.size() != 2) {
    MX_ERROR_MSG << "fr_margin_ce: cos must be (batch, classes), got "
                 << cos.size() << " dimensions";
    return MX_FAIL;
  }
  for (int k = 1; k <= 2; ++k) {
    int64_t n = 1;
    for (unsigned int d : in->at(k)) n *= d;
    if (n != cos[0]) {
      MX_ERROR_MSG << "fr_margin_ce: " << (k == 1 ? "label" : "target")
                   << " must have one value per row (" << cos[0] << "), got " << n;
      return MX_FAIL;
    }
  }
  out->at(0) = std::vector<unsigned int>{cos[0]};
  out->at(1) = std::vector<unsigned int>{cos[0]};
  return MX_SUCCESS;
}

MXReturnValue MarginCEForwardCPU(const Attrs& attrs, std::vector<MXTensor>* in,
                                 std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& cos = in->at(0);
  const int64_t B = cos.shape[0], C = cos.shape[1];
  std::vector<int64_t> label;
  if (!ReadLabels(in->at(1), C, &label)) return MX_FAIL;
  const double s = AttrNumber(attrs, "scale", 1.0);
  const bool replace = AttrNumber(attrs, "replace", 1.0) != 0;
  if (cos.dtype == kFloat32) {
    MarginCEForward(cos.data<float>(), label.data(), in->at(2).data<float>(),
                    out->at(0).data<float>(), out->at(1).data<float>(), B, C,
                    static_cast<float>(s), replace);
  } else {
    MarginCEForward(cos.data<double>(), label.data(), in->at(2).data<double>(),
                    out->at(0).data<double>(), out->at(1).data<double>(), B, C, s,
                    replace);
  }
  return MX_SUCCESS;
}

// Backward inputs: gradients of (loss, lse), inputs (cos, label, target),
// outputs (loss, lse). Outputs: gradients of (cos, label, target).
MXReturnValue MarginCEBackwardCPU(const Attrs& attrs, std::vector<MXTensor>* in,
                                  std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& cos = in->at(2);
  const int64_t B = cos.shape[0], C = cos.shape[1];
  std::vector<int64_t> label;
  if (!ReadLabels(in->at(3), C, &label)) return MX_FAIL;
  const double s = AttrNumber(attrs, "scale", 1.0);
  const bool replace = AttrNumber(attrs, "replace", 1.0) != 0;
  MXTensor& dlabel = out->at(1);
  if (dlabel.data_ptr) std::memset(dlabel.data_ptr, 0, dlabel.size() *
      (dlabel.dtype == kFloat64 || dlabel.dtype == kInt64 ? 8 : 4));
  if (cos.dtype == kFloat32) {
    MarginCEBackward(in->at(0).data<float>(), in->at(1).data<float>(),
                     cos.data<float>(), label.data(), in->at(4).data<float>(),
                     in->at(6).data<float>(), out->at(0).data<float>(),
                     out->at(2).data<float>(), B, C, static_cast<float>(s), replace);
  } else {
    MarginCEBackward(in->at(0).data<double>(), in->at(1).data<double>(),
                     cos.data<double>(), label.data(), in->at(4).data<double>(),
                     in->at(6).data<double>(), out->at(0).data<double>(),
                     out->at(2).data<double>(), B, C, s, replace);
  }
  return MX_SUCCESS;
}

REGISTER_OP(fr_margin_ce)
    .setParseAttrs(MarginCEParse)
    .setInferType(MarginCEType)
    .setInferShape(MarginCEShape)
    .setForward(MarginCEForwardCPU, "cpu")
    .setBackward(MarginCEBackwardCPU, "cpu");

MXReturnValue initialize(int version) {
  return version >= 10700 ? MX_SUCCESS : MX_FAIL;
}
