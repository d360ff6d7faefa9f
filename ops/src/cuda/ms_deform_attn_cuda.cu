// Multi-scale deformable attention, CUDA kernels.
//
// The per-sample arithmetic lives in ../common/ms_deform_im2col.h, shared with the CPU kernels
// (which the CPU tests exercise); this file only maps the work onto threads:
//   forward:  one thread per output element (batch, query, head, channel), as in Deformable DETR,
//             so that neighbouring threads read neighbouring channels.
//   backward: one thread per (batch, query, head), looping over the channels like the CPU kernel;
//             it owns its location and attention gradients and adds into grad_value atomically.
// Half and bfloat16 values are read as they are; locations and weights are converted to float
// (at::opmath_type) once, every sum runs in float and the gradients accumulate in float buffers,
// rounded to the input dtypes at the end.
#include "ms_deform_attn_cuda.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../common/ms_deform_attn_checks.h"
#include "../common/ms_deform_im2col.h"

namespace {

constexpr int kThreadsPerBlock = 256;

int64_t num_blocks(int64_t num_threads) {
  // Grid-stride loops cover whatever a capped grid leaves over.
  const int64_t blocks = (num_threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{1} << 30));
}

template <typename acc_t>
struct AtomicAdd {
  acc_t* base;
  __device__ __forceinline__ void operator()(int64_t offset, int64_t channel, acc_t grad) const {
    gpuAtomicAdd(base + offset + channel, grad);
  }
};

template <typename scalar_t>
__global__ void forward_kernel(
    msda::Dims d,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const at::opmath_type<scalar_t>* __restrict__ attn,
    scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixel_stride = d.num_heads * d.channels;
  const int64_t samples_per_head = d.num_levels * d.num_points;
  const int64_t total = d.batch * d.num_queries * pixel_stride;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = index % d.channels;
    const int64_t bqm = index / d.channels;  // (batch * Q + query) * M + head
    const int64_t m = bqm % d.num_heads;
    const int64_t b = bqm / (d.num_heads * d.num_queries);
    const scalar_t* value_head = value + b * d.num_tokens * pixel_stride + m * d.channels + c;
    const int64_t sample0 = bqm * samples_per_head;
    acc_t acc = acc_t(0);
    for (int64_t l = 0; l < d.num_levels; ++l) {
      const int64_t height = shapes[2 * l];
      const int64_t width = shapes[2 * l + 1];
      const scalar_t* value_level = value_head + starts[l] * pixel_stride;
      for (int64_t p = 0; p < d.num_points; ++p) {
        const int64_t s = sample0 + l * d.num_points + p;
        const auto taps =
            msda::bilinear_taps<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, pixel_stride);
        msda::sample_accumulate<scalar_t, acc_t>(value_level, taps, attn[s], 1, &acc);
      }
    }
    out[index] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(
    msda::Dims d,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const at::opmath_type<scalar_t>* __restrict__ attn,
    const at::opmath_type<scalar_t>* __restrict__ grad_out,
    at::opmath_type<scalar_t>* grad_value,
    at::opmath_type<scalar_t>* __restrict__ grad_loc,
    at::opmath_type<scalar_t>* __restrict__ grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixel_stride = d.num_heads * d.channels;
  const int64_t samples_per_head = d.num_levels * d.num_points;
  const int64_t total = d.batch * d.num_queries * d.num_heads;
  for (int64_t bqm = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; bqm < total;
       bqm += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t m = bqm % d.num_heads;
    const int64_t bq = bqm / d.num_heads;
    const int64_t b = bq / d.num_queries;
    const int64_t head_offset = b * d.num_tokens * pixel_stride + m * d.channels;
    const acc_t* grad_out_head = grad_out + bq * pixel_stride + m * d.channels;
    const int64_t sample0 = bqm * samples_per_head;
    for (int64_t l = 0; l < d.num_levels; ++l) {
      const int64_t height = shapes[2 * l];
      const int64_t width = shapes[2 * l + 1];
      const int64_t level_offset = head_offset + starts[l] * pixel_stride;
      const AtomicAdd<acc_t> add_grad_value{grad_value + level_offset};
      for (int64_t p = 0; p < d.num_points; ++p) {
        const int64_t s = sample0 + l * d.num_points + p;
        const auto taps =
            msda::bilinear_taps<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, pixel_stride);
        const auto grad = msda::sample_backward<scalar_t, acc_t>(
            value + level_offset, taps, attn[s], grad_out_head, d.channels,
            height, width, add_grad_value);
        grad_loc[2 * s] = grad.loc_x;
        grad_loc[2 * s + 1] = grad.loc_y;
        grad_attn[s] = grad.attn;
      }
    }
  }
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    int64_t im2col_step) {
  const msda::Dims d = msda::check_inputs(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn_cuda_forward: value is on ", value.device());
  const c10::cuda::CUDAGuard device_guard(value.device());
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  const at::Tensor loc_c = sampling_loc.to(acc_type).contiguous();
  const at::Tensor attn_c = attn_weight.to(acc_type).contiguous();
  at::Tensor output =
      at::empty({d.batch, d.num_queries, d.num_heads * d.channels}, value.options());
  if (output.numel() == 0) {
    return output.zero_();
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_kernel<scalar_t><<<num_blocks(output.numel()), kThreadsPerBlock, 0, stream>>>(
            d, value_c.data_ptr<scalar_t>(), shapes_c.data_ptr<int64_t>(),
            starts_c.data_ptr<int64_t>(), loc_c.data_ptr<acc_t>(), attn_c.data_ptr<acc_t>(),
            output.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output,
    int64_t im2col_step) {
  const msda::Dims d = msda::check_inputs(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn_cuda_backward: value is on ", value.device());
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef({d.batch, d.num_queries, d.num_heads * d.channels}),
      "ms_deform_attn_cuda_backward: grad_output must be [N, Q, M * D] = [", d.batch, ", ",
      d.num_queries, ", ", d.num_heads * d.channels, "], got ", grad_output.sizes());
  TORCH_CHECK(
      grad_output.device() == value.device(), "grad_output is on ", grad_output.device(),
      ", value on ", value.device());
  const c10::cuda::CUDAGuard device_guard(value.device());
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  const at::Tensor loc_c = sampling_loc.to(acc_type).contiguous();
  const at::Tensor attn_c = attn_weight.to(acc_type).contiguous();
  const at::Tensor grad_out_c = grad_output.to(acc_type).contiguous();
  at::Tensor grad_value = at::zeros(value_c.sizes(), value_c.options().dtype(acc_type));
  at::Tensor grad_loc = at::zeros(loc_c.sizes(), loc_c.options().dtype(acc_type));
  at::Tensor grad_attn = at::zeros(attn_c.sizes(), attn_c.options().dtype(acc_type));
  const int64_t num_threads = d.batch * d.num_queries * d.num_heads;
  if (num_threads > 0) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          backward_kernel<scalar_t><<<num_blocks(num_threads), kThreadsPerBlock, 0, stream>>>(
              d, value_c.data_ptr<scalar_t>(), shapes_c.data_ptr<int64_t>(),
              starts_c.data_ptr<int64_t>(), loc_c.data_ptr<acc_t>(), attn_c.data_ptr<acc_t>(),
              grad_out_c.data_ptr<acc_t>(),
              grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
              grad_attn.data_ptr<acc_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  // Each gradient in the dtype of its input (no copy when they already match).
  return {
      grad_value.to(value.scalar_type()), grad_loc.to(sampling_loc.scalar_type()),
      grad_attn.to(attn_weight.scalar_type())};
}
