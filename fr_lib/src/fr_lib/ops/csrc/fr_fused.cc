// fr_fused_net(x, params; program): forward pass of a whole inference-only
// convolutional network (MobileFaceNet family) in one operator, CPU float32.
//
// Why: in MXNet 1.9 every PReLU between two oneDNN convolutions costs its own
// memory pass plus two layout conversions (oneDNN's blocked layout <-> the
// plain one), more time than all the convolutions of MobileFaceNet together.
// Here the activations stay in one layout (NHWC) from the first layer to the
// last, BatchNorm is folded into the weights (by fr_lib.model_zoo.fused) and
// bias, PReLU and the residual sum are applied to each output tile while it
// is still in registers.
//
// Layout: x is (N, C, H, W) float32; each image runs through the whole
// program on one thread (OpenMP over the images), so its activations stay in
// that core's caches; with fewer images than threads, the threads share each
// layer of one image instead. Output (N, C * H * W) of the last layer, in NCHW order
// (MXNet's Flatten of the NCHW result).
//
// program: whitespace-separated integers, kFields per layer:
//   op kh kw stride pad groups cin cout prelu save residual w_off b_off a_off
// op: kGemm (1x1 convolution, stride 1, no padding; weights packed in panels
//     of 32 output channels: [ceil(cout/32)][cin][32], bias/alpha padded to a
//     multiple of 32), kStem (first layer, groups 1, reads the NCHW input
//     through im2col; weights packed like kGemm with cin*kh*kw rows ordered
//     (c, ky, kx)), kDepthwise (groups == cin == cout; weights [kh*kw][C]),
//     kGrouped (any groups; weights as MXNet's (cout, cin/groups, kh, kw)),
//     kPairs (groups of 2 input and 2 output channels, cin == cout ==
//     2 * groups: InsightFace's mbf; weights [2][kh*kw][C], first the weight
//     of each output channel's own input channel c, then of its partner c ^ 1,
//     so it runs as two depthwise convolutions in one pass).
// save = 1: this layer's input is kept for a later residual = 1 layer, which
// adds it to its output (same shape). *_off: offsets into params; a_off is
// ignored when prelu = 0.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include "fr_gemm.h"
#include "mxnet/lib_api.h"

using namespace mxnet::ext;  // NOLINT

namespace {

typedef std::unordered_map<std::string, std::string> Attrs;

enum Op { kGemm = 0, kStem = 1, kDepthwise = 2, kGrouped = 3, kPairs = 4 };
constexpr int kFields = 14;

struct Layer {
  int op, kh, kw, stride, pad, groups, cin, cout, prelu, save, residual;
  int64_t w_off, b_off, a_off;
  int64_t h_in, w_in, h_out, w_out;  // filled by Plan
};

// Parameters a layer reads (must fit in params).
int64_t WeightSize(const Layer& l) {
  switch (l.op) {
    case kGemm: return Panels(l.cout) * kNR * l.cin;
    case kStem: return Panels(l.cout) * kNR * l.cin * l.kh * l.kw;
    case kDepthwise: return static_cast<int64_t>(l.kh) * l.kw * l.cout;
    case kPairs: return 2 * static_cast<int64_t>(l.kh) * l.kw * l.cout;
    default: return static_cast<int64_t>(l.cout) * (l.cin / l.groups) * l.kh * l.kw;
  }
}
int64_t VectorSize(const Layer& l) {
  return (l.op == kGemm || l.op == kStem) ? Panels(l.cout) * kNR : l.cout;
}

// Parses the program and checks it against the input shape (c, h, w) and the
// parameter count; returns false with MX_ERROR_MSG set on any inconsistency.
bool Plan(const Attrs& attrs, int64_t c, int64_t h, int64_t w, int64_t nparams,
          std::vector<Layer>* layers) {
  auto it = attrs.find("program");
  if (it == attrs.end()) {
    MX_ERROR_MSG << "fr_fused_net: attribute 'program' is missing";
    return false;
  }
  std::istringstream in(it->second);
  std::vector<int64_t> v;
  int64_t x;
  while (in >> x) v.push_back(x);
  if (!in.eof() || v.empty() || v.size() % kFields != 0) {
    MX_ERROR_MSG << "fr_fused_net: 'program' must be whitespace-separated integers, "
                 << kFields << " per layer; got " << v.size() << " values";
    return false;
  }
  layers->clear();
  bool saved = false;
  for (size_t i = 0; i < v.size(); i += kFields) {
    Layer l;
    l.op = int(v[i]); l.kh = int(v[i + 1]); l.kw = int(v[i + 2]);
    l.stride = int(v[i + 3]); l.pad = int(v[i + 4]); l.groups = int(v[i + 5]);
    l.cin = int(v[i + 6]); l.cout = int(v[i + 7]); l.prelu = int(v[i + 8]);
    l.save = int(v[i + 9]); l.residual = int(v[i + 10]);
    l.w_off = v[i + 11]; l.b_off = v[i + 12]; l.a_off = v[i + 13];
    const size_t k = i / kFields;
    const char* why = nullptr;
    if (l.op < kGemm || l.op > kPairs) why = "unknown op";
    else if ((l.op == kStem) != (k == 0)) why = "the first layer, and only it, must be a stem layer";
    else if (l.kh < 1 || l.kw < 1 || l.stride < 1 || l.pad < 0 || l.groups < 1 ||
             l.cin < 1 || l.cout < 1) why = "non-positive size";
    else if (l.cin != c) why = "cin differs from the channels of its input";
    else if (l.op == kGemm && (l.kh != 1 || l.kw != 1 || l.stride != 1 || l.pad != 0))
      why = "a GEMM layer must be a 1x1 convolution with stride 1 and no padding";
    else if (l.op == kDepthwise && (l.groups != l.cin || l.cout != l.cin))
      why = "a depthwise layer needs groups == cin == cout";
    else if (l.op == kGrouped && (l.cin % l.groups || l.cout % l.groups))
      why = "groups must divide cin and cout";
    else if (l.op == kPairs && (l.cout != l.cin || l.cin != 2 * l.groups))
      why = "a pairs layer needs cin == cout == 2 * groups";
    else if (l.op != kGrouped && l.op != kDepthwise && l.op != kPairs && l.groups != 1)
      why = "groups must be 1";
    else if (l.w_off < 0 || l.w_off + WeightSize(l) > nparams ||
             l.b_off < 0 || l.b_off + VectorSize(l) > nparams ||
             (l.prelu && (l.a_off < 0 || l.a_off + VectorSize(l) > nparams)))
      why = "parameter offsets outside params";
    if (!why) {
      l.h_in = h; l.w_in = w;
      l.h_out = (h + 2 * l.pad - l.kh) / l.stride + 1;
      l.w_out = (w + 2 * l.pad - l.kw) / l.stride + 1;
      if (h + 2 * l.pad < l.kh || w + 2 * l.pad < l.kw) why = "input smaller than the kernel";
    }
    if (!why && l.save) saved = true;
    if (!why && l.residual) {
      if (!saved) {
        why = "residual without an earlier save";
      } else {
        // the saved input is the input of the last layer with save = 1
        const Layer* src = nullptr;
        for (auto p = layers->rbegin(); p != layers->rend(); ++p)
          if (p->save) { src = &*p; break; }
        if (l.save) src = &l;
        if (src->cin != l.cout || src->h_in != l.h_out || src->w_in != l.w_out)
          why = "residual shape differs from the saved input";
      }
    }
    if (why) {
      MX_ERROR_MSG << "fr_fused_net: layer " << k << ": " << why << " (op=" << l.op
                   << " k=" << l.kh << "x" << l.kw << " cin=" << l.cin
                   << " cout=" << l.cout << ", input " << c << "x" << h << "x" << w << ")";
      return false;
    }
    layers->push_back(l);
    c = l.cout; h = l.h_out; w = l.w_out;
  }
  return true;
}

// Depthwise kh x kw convolution of an NHWC image, + bias, PReLU, + R.
FR_CLONES void Depthwise(const Layer& l, const float* in, const float* w,
                         const float* bias, const float* alpha, const float* R,
                         float* out, int64_t oy0, int64_t oy1) {
  const int64_t C = l.cout, H = l.h_in, W = l.w_in;
  const int64_t vec = C / 16 * 16;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t y0 = oy * l.stride - l.pad;
    const int ky0 = static_cast<int>(std::max<int64_t>(0, -y0));
    const int ky1 = static_cast<int>(std::min<int64_t>(l.kh, H - y0));
    for (int64_t ox = 0; ox < l.w_out; ++ox) {
      const int64_t x0 = ox * l.stride - l.pad;
      const int kx0 = static_cast<int>(std::max<int64_t>(0, -x0));
      const int kx1 = static_cast<int>(std::min<int64_t>(l.kw, W - x0));
      const int64_t o = (oy * l.w_out + ox) * C;
      for (int64_t c = 0; c < vec; c += 16) {
        v16 acc = Load(bias + c);
        for (int ky = ky0; ky < ky1; ++ky) {
          const float* row = in + ((y0 + ky) * W + x0) * C + c;
          const float* wr = w + static_cast<int64_t>(ky) * l.kw * C + c;
          for (int kx = kx0; kx < kx1; ++kx) acc += Load(row + kx * C) * Load(wr + kx * C);
        }
        if (alpha) acc = acc > 0 ? acc : acc * Load(alpha + c);
        if (R) acc += Load(R + o + c);
        Store(out + o + c, acc);
      }
      for (int64_t c = vec; c < C; ++c) {
        float acc = bias[c];
        for (int ky = ky0; ky < ky1; ++ky)
          for (int kx = kx0; kx < kx1; ++kx)
            acc += in[((y0 + ky) * W + x0 + kx) * C + c] * w[(ky * l.kw + kx) * C + c];
        if (alpha) acc = acc > 0 ? acc : acc * alpha[c];
        if (R) acc += R[o + c];
        out[o + c] = acc;
      }
    }
  }
}

// Adjacent channels swapped: (x1, x0, x3, x2, ...): each channel's partner.
FR_INLINE v16 SwapPairs(v16 x) {
#if defined(__clang__)
  return __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#else
  typedef int i16 __attribute__((vector_size(64)));
  return __builtin_shuffle(x, i16{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#endif
}

// Grouped convolution with 2 input and 2 output channels per group (cin ==
// cout): out[c] = dw(in[c], ws[c]) + dw(in[c ^ 1], wp[c]), two depthwise
// convolutions in one pass, + bias, PReLU, + R. w: ws then wp, [kh*kw][C].
FR_CLONES void Pairs(const Layer& l, const float* in, const float* w,
                     const float* bias, const float* alpha, const float* R,
                     float* out, int64_t oy0, int64_t oy1) {
  const int64_t C = l.cout, H = l.h_in, W = l.w_in;
  const int64_t vec = C / 16 * 16;
  const float* wp = w + static_cast<int64_t>(l.kh) * l.kw * C;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t y0 = oy * l.stride - l.pad;
    const int ky0 = static_cast<int>(std::max<int64_t>(0, -y0));
    const int ky1 = static_cast<int>(std::min<int64_t>(l.kh, H - y0));
    for (int64_t ox = 0; ox < l.w_out; ++ox) {
      const int64_t x0 = ox * l.stride - l.pad;
      const int kx0 = static_cast<int>(std::max<int64_t>(0, -x0));
      const int kx1 = static_cast<int>(std::min<int64_t>(l.kw, W - x0));
      const int64_t o = (oy * l.w_out + ox) * C;
      for (int64_t c = 0; c < vec; c += 16) {
        v16 acc = Load(bias + c);
        for (int ky = ky0; ky < ky1; ++ky) {
          const float* row = in + ((y0 + ky) * W + x0) * C + c;
          const int64_t k = static_cast<int64_t>(ky) * l.kw * C + c;
          for (int kx = kx0; kx < kx1; ++kx) {
            const v16 x = Load(row + kx * C);
            acc += x * Load(w + k + kx * C) + SwapPairs(x) * Load(wp + k + kx * C);
          }
        }
        if (alpha) acc = acc > 0 ? acc : acc * Load(alpha + c);
        if (R) acc += Load(R + o + c);
        Store(out + o + c, acc);
      }
      for (int64_t c = vec; c < C; ++c) {
        float acc = bias[c];
        for (int ky = ky0; ky < ky1; ++ky)
          for (int kx = kx0; kx < kx1; ++kx) {
            const float* px = in + ((y0 + ky) * W + x0 + kx) * C;
            const int64_t k = (ky * l.kw + kx) * C + c;
            acc += px[c] * w[k] + px[c ^ 1] * wp[k];
          }
        if (alpha) acc = acc > 0 ? acc : acc * alpha[c];
        if (R) acc += R[o + c];
        out[o + c] = acc;
      }
    }
  }
}

// Any grouped convolution of an NHWC image (weights (cout, cin/g, kh, kw)).
void Grouped(const Layer& l, const float* in, const float* w, const float* bias,
             const float* alpha, const float* R, float* out, int64_t oy0, int64_t oy1) {
  const int64_t Ci = l.cin, Co = l.cout, H = l.h_in, W = l.w_in;
  const int64_t gi = Ci / l.groups, go = Co / l.groups;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    for (int64_t ox = 0; ox < l.w_out; ++ox) {
      const int64_t o = (oy * l.w_out + ox) * Co;
      for (int64_t co = 0; co < Co; ++co) {
        const int64_t g = co / go;
        float acc = bias[co];
        for (int ky = 0; ky < l.kh; ++ky) {
          const int64_t y = oy * l.stride - l.pad + ky;
          if (y < 0 || y >= H) continue;
          for (int kx = 0; kx < l.kw; ++kx) {
            const int64_t x = ox * l.stride - l.pad + kx;
            if (x < 0 || x >= W) continue;
            const float* px = in + (y * W + x) * Ci + g * gi;
            const float* pw = w + (co * gi * l.kh + ky) * l.kw + kx;
            for (int64_t ci = 0; ci < gi; ++ci) acc += px[ci] * pw[ci * l.kh * l.kw];
          }
        }
        if (alpha) acc = acc > 0 ? acc : acc * alpha[co];
        if (R) acc += R[o + co];
        out[o + co] = acc;
      }
    }
  }
}

// First layer: im2col of one output row of the NCHW image, then GEMM.
void Stem(const Layer& l, const float* img, const float* w, const float* bias,
          const float* alpha, float* out, std::vector<float>* cols, int64_t oy0,
          int64_t oy1) {
  const int64_t H = l.h_in, W = l.w_in, K = int64_t(l.cin) * l.kh * l.kw;
  cols->resize(l.w_out * K);
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    for (int64_t ox = 0; ox < l.w_out; ++ox) {
      float* col = cols->data() + ox * K;
      for (int c = 0; c < l.cin; ++c) {
        for (int ky = 0; ky < l.kh; ++ky) {
          const int64_t y = oy * l.stride - l.pad + ky;
          for (int kx = 0; kx < l.kw; ++kx) {
            const int64_t x = ox * l.stride - l.pad + kx;
            *col++ = (y < 0 || y >= H || x < 0 || x >= W) ? 0.f : img[(c * H + y) * W + x];
          }
        }
      }
    }
    Gemm(cols->data(), l.w_out, K, w, l.cout, bias, alpha, nullptr,
         out + oy * l.w_out * l.cout);
  }
}

int64_t Activations(const Layer& l) { return l.h_out * l.w_out * l.cout; }

int64_t Largest(const std::vector<Layer>& layers) {
  int64_t largest = 0;
  for (const Layer& l : layers) largest = std::max(largest, Activations(l));
  return largest;
}

// Part tid of nth of [0, n), cut at multiples of quantum.
void Split(int64_t n, int tid, int nth, int64_t quantum, int64_t* b, int64_t* e) {
  const int64_t q = (n + quantum - 1) / quantum;
  *b = std::min(n, q * tid / nth * quantum);
  *e = std::min(n, q * (tid + 1) / nth * quantum);
}

// One image through the whole program. nth = 1: this thread does all of it
// (images in parallel). nth > 1: the nth threads of a parallel region share
// each layer, split by output rows, with a barrier after each layer (fewer
// images than threads). buf: three buffers of Largest(layers) floats
// (shared when nth > 1); cols: this thread's im2col buffer.
void RunImage(const std::vector<Layer>& layers, const float* params, const float* img,
              float* result, std::vector<float>* buf, std::vector<float>* cols, int tid,
              int nth) {
  int cur = -1, saved = -1;  // buffer holding the current activations / the residual
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    if (l.save) saved = cur;
    int next = 0;
    while (next == cur || next == saved) ++next;
    const float* in = cur < 0 ? nullptr : buf[cur].data();
    float* out = buf[next].data();
    const float* w = params + l.w_off;
    const float* b = params + l.b_off;
    const float* a = l.prelu ? params + l.a_off : nullptr;
    const float* R = l.residual ? buf[saved].data() : nullptr;
    int64_t r0, r1;
    if (l.op == kGemm) {
      const int64_t K = l.cin, N = l.cout;
      Split(l.h_in * l.w_in, tid, nth, 8, &r0, &r1);
      Gemm(in + r0 * K, r1 - r0, K, w, N, b, a, R ? R + r0 * N : nullptr, out + r0 * N);
    } else {
      Split(l.h_out, tid, nth, 1, &r0, &r1);
      if (l.op == kStem) Stem(l, img, w, b, a, out, cols, r0, r1);
      else if (l.op == kDepthwise) Depthwise(l, in, w, b, a, R, out, r0, r1);
      else if (l.op == kPairs) Pairs(l, in, w, b, a, R, out, r0, r1);
      else Grouped(l, in, w, b, a, R, out, r0, r1);
    }
    if (nth > 1) {
#pragma omp barrier
    }
    if (l.residual) saved = -1;
    cur = next;
  }
  if (tid != 0) return;
  const Layer& last = layers.back();
  const int64_t C = last.cout, P = last.h_out * last.w_out;
  const float* y = buf[cur].data();
  for (int64_t p = 0; p < P; ++p)  // NHWC -> NCHW order
    for (int64_t c = 0; c < C; ++c) result[c * P + p] = y[p * C + c];
}

}  // namespace

MXReturnValue FusedParse(const Attrs&, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue FusedType(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32 || in->at(1) != kFloat32) {
    MX_ERROR_MSG << "fr_fused_net: x and params must be float32";
    return MX_FAIL;
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue FusedShape(const Attrs& attrs,
                         std::vector<std::vector<unsigned int> >* in,
                         std::vector<std::vector<unsigned int> >* out) {
  const std::vector<unsigned int>& x = in->at(0);
  const std::vector<unsigned int>& p = in->at(1);
  if (x.size() != 4 || p.size() != 1) {
    MX_ERROR_MSG << "fr_fused_net: x must be (N, C, H, W) and params 1-D; got "
                 << x.size() << "-D and " << p.size() << "-D";
    return MX_FAIL;
  }
  std::vector<Layer> layers;
  if (!Plan(attrs, x[1], x[2], x[3], p[0], &layers)) return MX_FAIL;
  const Layer& last = layers.back();
  out->at(0) = {x[0], static_cast<unsigned int>(last.cout * last.h_out * last.w_out)};
  return MX_SUCCESS;
}

MXReturnValue FusedForwardCPU(const Attrs& attrs, std::vector<MXTensor>* in,
                              std::vector<MXTensor>* out, const OpResource&) {
  MXTensor& x = in->at(0);
  MXTensor& p = in->at(1);
  std::vector<Layer> layers;
  if (!Plan(attrs, x.shape[1], x.shape[2], x.shape[3], p.shape[0], &layers))
    return MX_FAIL;
  const int64_t N = x.shape[0], image = x.shape[1] * x.shape[2] * x.shape[3];
  const int64_t outsize = out->at(0).shape[1];
  const float* xd = x.data<float>();
  const float* params = p.data<float>();
  float* y = out->at(0).data<float>();
  const int64_t largest = Largest(layers);
  const int threads = omp_get_max_threads();
  if (N >= threads) {  // an image per thread
#pragma omp parallel
    {
      thread_local std::vector<float> buf[3], cols;
      for (auto& b : buf) if (static_cast<int64_t>(b.size()) < largest) b.resize(largest);
#pragma omp for schedule(dynamic, 1)
      for (int64_t n = 0; n < N; ++n)
        RunImage(layers, params, xd + n * image, y + n * outsize, buf, &cols, 0, 1);
    }
    return MX_SUCCESS;
  }
  std::vector<float> buf[3];  // fewer images than threads: share each layer
  for (auto& b : buf) b.resize(largest);
  for (int64_t n = 0; n < N; ++n) {
#pragma omp parallel
    {
      std::vector<float> cols;
      RunImage(layers, params, xd + n * image, y + n * outsize, buf, &cols,
               omp_get_thread_num(), omp_get_num_threads());
    }
  }
  return MX_SUCCESS;
}

REGISTER_OP(fr_fused_net)
    .setParseAttrs(FusedParse)
    .setInferType(FusedType)
    .setInferShape(FusedShape)
    .setForward(FusedForwardCPU, "cpu");
