// Multi-scale deformable attention: the per-sample arithmetic shared by the CPU and CUDA kernels.
//
// After the im2col/col2im kernels of Deformable DETR (SenseTime, Apache-2.0), rewritten for
// avsegformer. Everything here is plain inline code without CUDA- or ATen-specific calls, so the
// CPU kernels (and the CPU tests) run exactly the arithmetic the GPU runs. The only difference
// between the two is how a gradient is added into grad_value: the kernels pass an accumulator
// functor (a plain "+=" on CPU, where each (batch, head) slice belongs to one task, and an atomic
// add on CUDA).
//
// Tensor layouts (all contiguous):
//   value              [N, S, M, D]   S = sum_l H_l * W_l, levels flattened row-major
//   spatial_shapes     [L, 2]         (H_l, W_l), int64
//   level_start_index  [L]            offset of level l in S, int64
//   sampling_loc       [N, Q, M, L, P, 2]  (x, y) in [0, 1] of each level
//   attn_weight        [N, Q, M, L, P]
//   output             [N, Q, M * D]
//
// Sampling semantics (grid_sample, bilinear, zeros padding, align_corners=False): a location
// (x, y) maps to the pixel coordinate (x * W - 0.5, y * H - 0.5); each of the four neighbouring
// pixels contributes only if it lies inside the map, and the sample is skipped entirely when the
// coordinate is outside (-1, H) x (-1, W), where all four neighbours would be outside.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSDA_HOST_DEVICE inline
#endif

// Lets the host compiler vectorise the channel loops, including the dot products, which would
// otherwise stay scalar (a floating-point sum may only be reordered when asked). Host-only: the
// CUDA kernels get their parallelism from threads, and nvcc does not take OpenMP pragmas.
#if defined(_OPENMP) && !defined(__CUDA_ARCH__) && !defined(__CUDACC__)
#define MSDA_PRAGMA(text) _Pragma(#text)
#define MSDA_SIMD_REDUCE_SUM(var) MSDA_PRAGMA(omp simd reduction(+ : var))
#define MSDA_SIMD_REDUCE_SUM4(a, b, c, d) MSDA_PRAGMA(omp simd reduction(+ : a, b, c, d))
#define MSDA_SIMD _Pragma("omp simd")
#else
#define MSDA_SIMD_REDUCE_SUM(var)
#define MSDA_SIMD_REDUCE_SUM4(a, b, c, d)
#define MSDA_SIMD
#endif

namespace msda {

// Bilinear taps of one sampling location on one level: the four neighbours (top-left, top-right,
// bottom-left, bottom-right), their element offsets relative to the level's first pixel, whether
// each lies inside the map, and the interpolation weights.
template <typename acc_t>
struct BilinearTaps {
  int64_t offset[4];
  bool inside[4];
  acc_t weight[4];
  // Fractional position inside the cell (l*) and its complement (h* = 1 - l*), for the gradient
  // with respect to the location.
  acc_t frac_h, frac_w, comp_h, comp_w;
  // False when the location is so far out that no neighbour is inside: the sample is zero.
  bool active;
};

// Computes the taps of location (loc_x, loc_y) in [0, 1] on a height x width level whose pixels
// are pixel_stride elements apart (M * D in the value layout).
template <typename acc_t>
MSDA_HOST_DEVICE BilinearTaps<acc_t> bilinear_taps(
    acc_t loc_x, acc_t loc_y, int64_t height, int64_t width, int64_t pixel_stride) {
  BilinearTaps<acc_t> taps;
  const acc_t h_im = loc_y * static_cast<acc_t>(height) - static_cast<acc_t>(0.5);
  const acc_t w_im = loc_x * static_cast<acc_t>(width) - static_cast<acc_t>(0.5);
  taps.active = h_im > static_cast<acc_t>(-1) && w_im > static_cast<acc_t>(-1) &&
                h_im < static_cast<acc_t>(height) && w_im < static_cast<acc_t>(width);
  if (!taps.active) {
    // Keep every field defined: callers may read them without checking `active` first.
    for (int i = 0; i < 4; ++i) {
      taps.offset[i] = 0;
      taps.inside[i] = false;
      taps.weight[i] = static_cast<acc_t>(0);
    }
    taps.frac_h = taps.frac_w = taps.comp_h = taps.comp_w = static_cast<acc_t>(0);
    return taps;
  }
  // h_im > -1, so truncation after adding 1 is a floor without calling floor().
  const int64_t h_low = static_cast<int64_t>(h_im + static_cast<acc_t>(1)) - 1;
  const int64_t w_low = static_cast<int64_t>(w_im + static_cast<acc_t>(1)) - 1;
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;

  taps.frac_h = h_im - static_cast<acc_t>(h_low);
  taps.frac_w = w_im - static_cast<acc_t>(w_low);
  taps.comp_h = static_cast<acc_t>(1) - taps.frac_h;
  taps.comp_w = static_cast<acc_t>(1) - taps.frac_w;

  const bool top = h_low >= 0;
  const bool bottom = h_high <= height - 1;
  const bool left = w_low >= 0;
  const bool right = w_high <= width - 1;
  taps.inside[0] = top && left;
  taps.inside[1] = top && right;
  taps.inside[2] = bottom && left;
  taps.inside[3] = bottom && right;

  const int64_t row_low = h_low * width;
  const int64_t row_high = h_high * width;
  taps.offset[0] = (row_low + w_low) * pixel_stride;
  taps.offset[1] = (row_low + w_high) * pixel_stride;
  taps.offset[2] = (row_high + w_low) * pixel_stride;
  taps.offset[3] = (row_high + w_high) * pixel_stride;

  taps.weight[0] = taps.comp_h * taps.comp_w;
  taps.weight[1] = taps.comp_h * taps.frac_w;
  taps.weight[2] = taps.frac_h * taps.comp_w;
  taps.weight[3] = taps.frac_h * taps.frac_w;
  return taps;
}

// Forward of one sample: out[c] += attn * bilinear(value)[c] for c in [0, num_channels).
// `value` points at the level's first pixel, already offset to the head (and to the first
// channel handled); channels are contiguous. The CUDA kernel calls it with num_channels = 1 (one
// thread per channel), the CPU kernel with all D channels so that the loops vectorise.
template <typename scalar_t, typename acc_t>
MSDA_HOST_DEVICE void sample_accumulate(
    const scalar_t* value,
    const BilinearTaps<acc_t>& taps,
    acc_t attn,
    int64_t num_channels,
    acc_t* out) {
  if (!taps.active) {
    return;
  }
  if (taps.inside[0] && taps.inside[1] && taps.inside[2] && taps.inside[3]) {
    // Interior sample (the common case): one pass over the channels instead of four.
    const scalar_t* v0 = value + taps.offset[0];
    const scalar_t* v1 = value + taps.offset[1];
    const scalar_t* v2 = value + taps.offset[2];
    const scalar_t* v3 = value + taps.offset[3];
    const acc_t w0 = attn * taps.weight[0];
    const acc_t w1 = attn * taps.weight[1];
    const acc_t w2 = attn * taps.weight[2];
    const acc_t w3 = attn * taps.weight[3];
    MSDA_SIMD
    for (int64_t c = 0; c < num_channels; ++c) {
      out[c] += w0 * static_cast<acc_t>(v0[c]) + w1 * static_cast<acc_t>(v1[c]) +
                w2 * static_cast<acc_t>(v2[c]) + w3 * static_cast<acc_t>(v3[c]);
    }
    return;
  }
  for (int corner = 0; corner < 4; ++corner) {
    if (!taps.inside[corner]) {
      continue;
    }
    const acc_t coeff = attn * taps.weight[corner];
    const scalar_t* v = value + taps.offset[corner];
    MSDA_SIMD
    for (int64_t c = 0; c < num_channels; ++c) {
      out[c] += coeff * static_cast<acc_t>(v[c]);
    }
  }
}

// Gradients of one sample with respect to its location and attention weight, summed over the
// channels handled by the caller.
template <typename acc_t>
struct SampleGrad {
  acc_t loc_x;
  acc_t loc_y;
  acc_t attn;
};

// Backward of one sample over channels [0, num_channels):
//   grad_value[corner][c] += attn * weight[corner] * grad_out[c]   (through `add_grad_value`)
//   returned attn  = sum_c grad_out[c] * bilinear(value)[c]
//   returned loc_x = sum_c attn * grad_out[c] * W * d bilinear / d w_im   (likewise loc_y with H)
// `value` and the grad_value position handed to `add_grad_value(element_offset, channel, g)` are
// relative to the level's first pixel of the head; `add_grad_value` is "+=" on the CPU (race-free
// by construction) and an atomic add on the GPU.
template <typename scalar_t, typename acc_t, typename AddGradValue>
MSDA_HOST_DEVICE SampleGrad<acc_t> sample_backward(
    const scalar_t* value,
    const BilinearTaps<acc_t>& taps,
    acc_t attn,
    const acc_t* grad_out,
    int64_t num_channels,
    int64_t height,
    int64_t width,
    AddGradValue add_grad_value) {
  SampleGrad<acc_t> grad;
  grad.loc_x = grad.loc_y = grad.attn = static_cast<acc_t>(0);
  if (!taps.active) {
    return grad;
  }
  // d weight[corner] / d h_im and d weight[corner] / d w_im.
  const acc_t dweight_dh[4] = {-taps.comp_w, -taps.frac_w, taps.comp_w, taps.frac_w};
  const acc_t dweight_dw[4] = {-taps.comp_h, taps.comp_h, -taps.frac_h, taps.frac_h};
  acc_t sum_dh = static_cast<acc_t>(0);
  acc_t sum_dw = static_cast<acc_t>(0);
  if (taps.inside[0] && taps.inside[1] && taps.inside[2] && taps.inside[3]) {
    // Interior sample (the common case): one pass over the channels, four independent dot
    // products, the same arithmetic per corner as the loop below.
    const scalar_t* v0 = value + taps.offset[0];
    const scalar_t* v1 = value + taps.offset[1];
    const scalar_t* v2 = value + taps.offset[2];
    const scalar_t* v3 = value + taps.offset[3];
    const acc_t w0 = attn * taps.weight[0];
    const acc_t w1 = attn * taps.weight[1];
    const acc_t w2 = attn * taps.weight[2];
    const acc_t w3 = attn * taps.weight[3];
    acc_t dot0 = static_cast<acc_t>(0);
    acc_t dot1 = static_cast<acc_t>(0);
    acc_t dot2 = static_cast<acc_t>(0);
    acc_t dot3 = static_cast<acc_t>(0);
    MSDA_SIMD_REDUCE_SUM4(dot0, dot1, dot2, dot3)
    for (int64_t c = 0; c < num_channels; ++c) {
      const acc_t g = grad_out[c];
      dot0 += g * static_cast<acc_t>(v0[c]);
      dot1 += g * static_cast<acc_t>(v1[c]);
      dot2 += g * static_cast<acc_t>(v2[c]);
      dot3 += g * static_cast<acc_t>(v3[c]);
      add_grad_value(taps.offset[0], c, w0 * g);
      add_grad_value(taps.offset[1], c, w1 * g);
      add_grad_value(taps.offset[2], c, w2 * g);
      add_grad_value(taps.offset[3], c, w3 * g);
    }
    const acc_t dots[4] = {dot0, dot1, dot2, dot3};
    for (int corner = 0; corner < 4; ++corner) {
      grad.attn += taps.weight[corner] * dots[corner];
      sum_dh += dweight_dh[corner] * dots[corner];
      sum_dw += dweight_dw[corner] * dots[corner];
    }
    grad.loc_x = attn * static_cast<acc_t>(width) * sum_dw;
    grad.loc_y = attn * static_cast<acc_t>(height) * sum_dh;
    return grad;
  }
  for (int corner = 0; corner < 4; ++corner) {
    if (!taps.inside[corner]) {
      continue;
    }
    const scalar_t* v = value + taps.offset[corner];
    const acc_t value_coeff = attn * taps.weight[corner];
    // <grad_out, value at this corner>, reused by all three gradients.
    acc_t dot = static_cast<acc_t>(0);
    MSDA_SIMD_REDUCE_SUM(dot)
    for (int64_t c = 0; c < num_channels; ++c) {
      dot += grad_out[c] * static_cast<acc_t>(v[c]);
      add_grad_value(taps.offset[corner], c, value_coeff * grad_out[c]);
    }
    grad.attn += taps.weight[corner] * dot;
    sum_dh += dweight_dh[corner] * dot;
    sum_dw += dweight_dw[corner] * dot;
  }
  grad.loc_x = attn * static_cast<acc_t>(width) * sum_dw;
  grad.loc_y = attn * static_cast<acc_t>(height) * sum_dh;
  return grad;
}

}  // namespace msda
