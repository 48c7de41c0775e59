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
// Attributes: scale; replace (default 1); negatives = 0 plain, 1 CurricularFace
// (two more inputs: thresholds (batch,), t (1,)), 2 Circle loss (margin);
// subcenters = K columns per class, a class's cosine being the largest;
// target_slope = 1: one more input, d target / d cos[i, y], applied in the
// backward pass (the caller then stops the gradient into the target).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "fr_clones.h"
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
      case kFloat32: v = static_cast<const float*>(label.data_ptr)[i]; break;
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

// The hot float loops below are FR_CLONES (fr_clones.h).

// How the logits of the other classes are formed from their cosines c (the
// weights are detached, as in the papers: they get no gradient):
//   kPlain        N(c) = c                                 dN/dc = 1
//   kCurricular   N(c) = c (t + c) if c > thr_i, else c    t + 2c, else 1
//                 (CurricularFace, thr_i = cos(theta_y + m), t a statistic)
//   kCircle       N(c) = [c + m]_+ (c - m)                 [c + m]_+
//                 (Circle loss, class-level form)
enum NegMode { kPlain = 0, kCurricular = 1, kCircle = 2 };

struct Neg {
  double thr, t, m;  // the parameters of the mode in use
};

template <int MODE, typename T>
inline T NegLogit(T c, T thr, T t, T m) {
  if (MODE == kCurricular) return c > thr ? c * (t + c) : c;
  if (MODE == kCircle) return std::max(c + m, T(0)) * (c - m);
  return c;
}

template <int MODE, typename T>
inline T NegSlope(T c, T thr, T t, T m) {
  if (MODE == kCurricular) return c > thr ? t + 2 * c : T(1);
  if (MODE == kCircle) return std::max(c + m, T(0));
  return T(1);
}

template <int MODE, typename T>
inline T MaxLoop(const T* row, int64_t n, T s, T mx, T thr, T t, T m) {
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s * NegLogit<MODE>(row[j], thr, t, m));
  return mx;
}

template <int MODE, typename T>
inline T ExpSumLoop(const T* row, int64_t n, T s, T mx, T thr, T t, T m) {
  T part = 0;
#pragma omp simd reduction(+ : part)
  for (int64_t j = 0; j < n; ++j)
    part += ExpNeg(s * NegLogit<MODE>(row[j], thr, t, m) - mx);
  return part;
}

template <int MODE, typename T>
inline void GradLoop(const T* row, T* drow, int64_t n, T s, T l, T gs, T thr, T t, T m) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const T c = row[j];
    drow[j] = gs * ExpNeg(s * NegLogit<MODE>(c, thr, t, m) - l) * NegSlope<MODE>(c, thr, t, m);
  }
}

#define FR_DISPATCH(mode, fn, ...)                                  \
  (mode == kCurricular ? fn<kCurricular>(__VA_ARGS__)               \
                       : mode == kCircle ? fn<kCircle>(__VA_ARGS__) \
                                         : fn<kPlain>(__VA_ARGS__))

#define FR_NEG_F float(p.thr), float(p.t), float(p.m)
FR_CLONES float MaxF(const float* row, int64_t n, float s, float mx, int mode, Neg p) {
  return FR_DISPATCH(mode, MaxLoop, row, n, s, mx, FR_NEG_F);
}
FR_CLONES float ExpSumF(const float* row, int64_t n, float s, float mx, int mode, Neg p) {
  return FR_DISPATCH(mode, ExpSumLoop, row, n, s, mx, FR_NEG_F);
}
FR_CLONES void GradF(const float* row, float* drow, int64_t n, float s, float l,
                     float gs, int mode, Neg p) {
  FR_DISPATCH(mode, GradLoop, row, drow, n, s, l, gs, FR_NEG_F);
}

double RowMax(const float* row, int64_t n, float s, float mx, int mode, Neg p) {
  return n > 0 ? MaxF(row, n, s, mx, mode, p) : mx;
}
double RowMax(const double* row, int64_t n, double s, double mx, int mode, Neg p) {
  return FR_DISPATCH(mode, MaxLoop, row, n, s, mx, p.thr, p.t, p.m);
}
double RowExpSum(const float* row, int64_t n, float s, float mx, int mode, Neg p) {
  double sum = 0;  // float blocks, double total
  for (int64_t j0 = 0; j0 < n; j0 += 4096)
    sum += ExpSumF(row + j0, std::min(n, j0 + 4096) - j0, s, mx, mode, p);
  return sum;
}
double RowExpSum(const double* row, int64_t n, double s, double mx, int mode, Neg p) {
  return FR_DISPATCH(mode, ExpSumLoop, row, n, s, mx, p.thr, p.t, p.m);
}
void RowGrad(const float* row, float* drow, int64_t n, float s, float l, float gs,
             int mode, Neg p) {
  GradF(row, drow, n, s, l, gs, mode, p);
}
void RowGrad(const double* row, double* drow, int64_t n, double s, double l, double gs,
             int mode, Neg p) {
  FR_DISPATCH(mode, GradLoop, row, drow, n, s, l, gs, p.thr, p.t, p.m);
}

struct NegInputs {
  int mode;
  double m;           // circle margin
  const void* thr;    // curricular: (batch,) thresholds
  const void* t;      // curricular: (1,) statistic
};

template <typename T>
Neg RowNeg(const NegInputs& in, int64_t i) {
  Neg p{0.0, 0.0, in.m};
  if (in.mode == kCurricular) {
    p.thr = static_cast<const T*>(in.thr)[i];
    p.t = static_cast<const T*>(in.t)[0];
  }
  return p;
}

// With replace, the true class is left out of both the max and the sum and
// its target term added, so no cancellation happens when it dominates.
// Sub-centre ArcFace: the matrix has K columns per class, side by side; a
// class's cosine is the largest of its K (computed per row into a buffer,
// which stays in cache), and its gradient goes to that column only.
template <int KC, typename T>
inline void ClassMaxLoop(const T* raw, int64_t C, int64_t K, T* buf, int32_t* arg) {
  const int64_t k = KC > 0 ? KC : K;  // compile-time K for the common cases
#pragma omp simd
  for (int64_t j = 0; j < C; ++j) {
    const T* g = raw + j * k;
    T best = g[0];
    int32_t at = 0;
    for (int64_t r = 1; r < k; ++r) {
      const bool gt = g[r] > best;
      best = gt ? g[r] : best;
      at = gt ? static_cast<int32_t>(r) : at;
    }
    buf[j] = best;
    arg[j] = at;
  }
}

template <int KC, typename T>
inline void ScatterLoop(const T* g, const int32_t* arg, int64_t C, int64_t K, T* out) {
  const int64_t k = KC > 0 ? KC : K;
#pragma omp simd
  for (int64_t j = 0; j < C; ++j) {
    for (int64_t r = 0; r < k; ++r) out[j * k + r] = r == arg[j] ? g[j] : T(0);
  }
}

#define FR_DISPATCH_K(K, fn, ...)                                                    \
  (K == 2 ? fn<2>(__VA_ARGS__) : K == 3 ? fn<3>(__VA_ARGS__)                         \
                                        : K == 4 ? fn<4>(__VA_ARGS__) : fn<0>(__VA_ARGS__))

FR_CLONES void ClassMaxF(const float* raw, int64_t C, int64_t K, float* buf, int32_t* arg) {
  FR_DISPATCH_K(K, ClassMaxLoop, raw, C, K, buf, arg);
}
FR_CLONES void ScatterF(const float* g, const int32_t* arg, int64_t C, int64_t K, float* out) {
  FR_DISPATCH_K(K, ScatterLoop, g, arg, C, K, out);
}
void ClassMaxT(const float* raw, int64_t C, int64_t K, float* buf, int32_t* arg) {
  ClassMaxF(raw, C, K, buf, arg);
}
void ClassMaxT(const double* raw, int64_t C, int64_t K, double* buf, int32_t* arg) {
  ClassMaxLoop<0>(raw, C, K, buf, arg);
}
void ScatterT(const float* g, const int32_t* arg, int64_t C, int64_t K, float* out) {
  ScatterF(g, arg, C, K, out);
}
void ScatterT(const double* g, const int32_t* arg, int64_t C, int64_t K, double* out) {
  ScatterLoop<0>(g, arg, C, K, out);
}

// Sub-centre ArcFace: the matrix has K columns per class, side by side; a
// class's cosine is the largest of its K (computed per row into a buffer,
// which stays in cache), and its gradient goes to that column only.
template <typename T>
const T* ClassMax(const T* raw, int64_t C, int64_t K, std::vector<T>* buf,
                  std::vector<int32_t>* arg) {
  if (K == 1) return raw;
  buf->resize(C);
  arg->resize(C);
  ClassMaxT(raw, C, K, buf->data(), arg->data());
  return buf->data();
}

template <typename T>
void MarginCEForward(const T* cos, const int64_t* label, const T* target, T* loss,
                     T* lse, int64_t B, int64_t C, T s, bool replace,
                     const NegInputs& neg, int64_t K) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < B; ++i) {
    thread_local std::vector<T> buf;
    thread_local std::vector<int32_t> arg;
    const T* row = ClassMax(cos + i * C * K, C, K, &buf, &arg);
    const int64_t y = label[i];
    const Neg p = RowNeg<T>(neg, i);
    const T zy = s * (replace ? target[i] : row[y]);
    T mx = static_cast<T>(RowMax(row, y, s, zy, neg.mode, p));
    mx = static_cast<T>(RowMax(row + y + 1, C - y - 1, s, mx, neg.mode, p));
    const double sum = RowExpSum(row, y, s, mx, neg.mode, p) +
                       RowExpSum(row + y + 1, C - y - 1, s, mx, neg.mode, p) +
                       static_cast<double>(ExpNeg(zy - mx));
    const double log_sum = std::log(sum);  // mx - zy first: exact when equal
    lse[i] = static_cast<T>(log_sum + mx);
    loss[i] = static_cast<T>(log_sum + (static_cast<double>(mx) - zy));
  }
}

// d loss_i / d z_ij = p_ij - [j == y_i], then times dz/dcos.
template <typename T>
void MarginCEBackward(const T* gloss, const T* glse, const T* cos, const int64_t* label,
                      const T* target, const T* lse, T* dcos, T* dtarget,
                      int64_t B, int64_t C, T s, bool replace, const NegInputs& neg,
                      int64_t K, const T* slope) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < B; ++i) {
    thread_local std::vector<T> buf, gbuf;
    thread_local std::vector<int32_t> arg;
    const T* row = ClassMax(cos + i * C * K, C, K, &buf, &arg);
    if (K > 1) gbuf.resize(C);
    T* drow = K > 1 ? gbuf.data() : dcos + i * C;
    const int64_t y = label[i];
    const T l = lse[i];
    const T g = (gloss ? gloss[i] : T(0)) + (glse ? glse[i] : T(0));  // both weight p
    const T gs = g * s;
    RowGrad(row, drow, C, s, l, gs, neg.mode, RowNeg<T>(neg, i));
    const T gl = gloss ? gloss[i] * s : T(0);  // the -z_y term of the loss
    if (replace) {
      dtarget[i] = gs * ExpNeg(s * target[i] - l) - gl;
      // with target_slope, the target's dependence on cos[i, y] is applied
      // here (chain rule) instead of through autograd and a dense pick
      drow[y] = slope ? dtarget[i] * slope[i] : T(0);
    } else {
      drow[y] -= gl;
      dtarget[i] = 0;
    }
    if (K > 1) ScatterT(drow, arg.data(), C, K, dcos + i * C * K);  // to the winners
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
  const int mode = static_cast<int>(AttrNumber(attrs, "negatives", 0));
  if (mode < kPlain || mode > kCircle) {
    MX_ERROR_MSG << "fr_margin_ce: negatives must be 0 (plain), 1 (curricular) "
                    "or 2 (circle), got " << mode;
    return MX_FAIL;
  }
  const bool slope = AttrNumber(attrs, "target_slope", 0) != 0;
  // cos, label, target [, slope (batch,)] [, thresholds (batch,), t (1,)]
  *num_in = 3 + (slope ? 1 : 0) + (mode == kCurricular ? 2 : 0);
  *num_out = 2;
  return MX_SUCCESS;
}

MXReturnValue MarginCEType(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32 && in->at(0) != kFloat64) {
    MX_ERROR_MSG << "fr_margin_ce: cos must be float32 or float64 (CPU operator)";
    return MX_FAIL;
  }
  for (size_t k = 2; k < in->size(); ++k) {
    if (in->at(k) != in->at(0)) {
      MX_ERROR_MSG << "fr_margin_ce: input " << k << " must have the dtype of cos";
      return MX_FAIL;
    }
  }
  out->at(0) = in->at(0);
  out->at(1) = in->at(0);
  return MX_SUCCESS;
}

MXReturnValue MarginCEShape(const Attrs& attrs, std::vector<std::vector<unsigned int> >* in,
                            std::vector<std::vector<unsigned int> >* out) {
  const std::vector<unsigned int>& cos = in->at(0);
  if (cos.size() != 2) {
    MX_ERROR_MSG << "fr_margin_ce: cos must be (batch, classes), got "
                 << cos.size() << " dimensions";
    return MX_FAIL;
  }
  const int64_t K = static_cast<int64_t>(AttrNumber(attrs, "subcenters", 1));
  if (K < 1 || cos[1] % K != 0) {
    MX_ERROR_MSG << "fr_margin_ce: " << cos[1] << " columns are not a whole number of "
                 << "classes with subcenters=" << K;
    return MX_FAIL;
  }
  const bool slope = AttrNumber(attrs, "target_slope", 0) != 0;
  for (size_t k = 1; k < in->size(); ++k) {
    int64_t n = 1;
    for (unsigned int d : in->at(k)) n *= d;
    const bool is_t = k + 1 == in->size() && k >= (slope ? 5u : 4u);
    const char* name = k == 1 ? "label" : k == 2 ? "target" : (slope && k == 3) ? "slope"
                       : is_t ? "t" : "thresholds";
    const int64_t want = is_t ? 1 : cos[0];
    if (n != want) {
      MX_ERROR_MSG << "fr_margin_ce: " << name << " must have " << want
                   << " value(s), got " << n;
      return MX_FAIL;
    }
  }
  out->at(0) = std::vector<unsigned int>{cos[0]};
  out->at(1) = std::vector<unsigned int>{cos[0]};
  return MX_SUCCESS;
}

NegInputs ReadNeg(const Attrs& attrs, std::vector<MXTensor>* in, size_t first) {
  NegInputs neg{static_cast<int>(AttrNumber(attrs, "negatives", 0)),
                AttrNumber(attrs, "margin", 0.0), nullptr, nullptr};
  if (neg.mode == kCurricular) {
    neg.thr = in->at(first).data_ptr;
    neg.t = in->at(first + 1).data_ptr;
  }
  return neg;
}

MXReturnValue MarginCEForwardCPU(const Attrs& attrs, std::vector<MXTensor>* in,
                                 std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& cos = in->at(0);
  const int64_t K = static_cast<int64_t>(AttrNumber(attrs, "subcenters", 1));
  const int64_t B = cos.shape[0], C = cos.shape[1] / K;
  std::vector<int64_t> label;
  if (!ReadLabels(in->at(1), C, &label)) return MX_FAIL;
  const double s = AttrNumber(attrs, "scale", 1.0);
  const bool replace = AttrNumber(attrs, "replace", 1.0) != 0;
  const bool has_slope = AttrNumber(attrs, "target_slope", 0) != 0;
  const NegInputs neg = ReadNeg(attrs, in, has_slope ? 4 : 3);
  if (cos.dtype == kFloat32) {
    MarginCEForward(cos.data<float>(), label.data(), in->at(2).data<float>(),
                    out->at(0).data<float>(), out->at(1).data<float>(), B, C,
                    static_cast<float>(s), replace, neg, K);
  } else {
    MarginCEForward(cos.data<double>(), label.data(), in->at(2).data<double>(),
                    out->at(0).data<double>(), out->at(1).data<double>(), B, C, s,
                    replace, neg, K);
  }
  return MX_SUCCESS;
}

void Zero(MXTensor* t) {
  if (t->data_ptr) {
    std::memset(t->data_ptr, 0, t->size() *
                (t->dtype == kFloat64 || t->dtype == kInt64 ? 8 : 4));
  }
}

// Backward inputs: gradients of (loss, lse), the inputs (cos, label, target
// [, thresholds, t]), the outputs (loss, lse). Outputs: gradients of the
// inputs; label, thresholds and t get zeros (they are not differentiable).
MXReturnValue MarginCEBackwardCPU(const Attrs& attrs, std::vector<MXTensor>* in,
                                  std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& cos = in->at(2);
  const int64_t K = static_cast<int64_t>(AttrNumber(attrs, "subcenters", 1));
  const int64_t B = cos.shape[0], C = cos.shape[1] / K;
  std::vector<int64_t> label;
  if (!ReadLabels(in->at(3), C, &label)) return MX_FAIL;
  const double s = AttrNumber(attrs, "scale", 1.0);
  const bool replace = AttrNumber(attrs, "replace", 1.0) != 0;
  const bool has_slope = AttrNumber(attrs, "target_slope", 0) != 0;
  const NegInputs neg = ReadNeg(attrs, in, has_slope ? 6 : 5);
  const void* slope = has_slope ? in->at(5).data_ptr : nullptr;
  const size_t lse_at = in->size() - 1;
  for (size_t k = 0; k < out->size(); ++k) {
    if (k != 0 && k != 2) Zero(&out->at(k));
  }
  if (cos.dtype == kFloat32) {
    MarginCEBackward(in->at(0).data<float>(), in->at(1).data<float>(),
                     cos.data<float>(), label.data(), in->at(4).data<float>(),
                     in->at(lse_at).data<float>(), out->at(0).data<float>(),
                     out->at(2).data<float>(), B, C, static_cast<float>(s), replace,
                     neg, K, static_cast<const float*>(slope));
  } else {
    MarginCEBackward(in->at(0).data<double>(), in->at(1).data<double>(),
                     cos.data<double>(), label.data(), in->at(4).data<double>(),
                     in->at(lse_at).data<double>(), out->at(0).data<double>(),
                     out->at(2).data<double>(), B, C, s, replace, neg, K,
                     static_cast<const double*>(slope));
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
