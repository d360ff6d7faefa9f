// Multi-scale deformable attention, native CPU kernels.
//
// The per-sample arithmetic lives in ../common/ms_deform_im2col.h, shared with the CUDA kernels;
// this file only decides how the work is split over threads:
//   forward:  one task per (batch, query); every head and channel of it is written by that task.
//   backward: one task per (batch, group of heads), walking the queries in order (neighbouring
//             queries sample nearby pixels, so reads stay in cache). grad_value[b, :, m, :] is
//             touched by the task of head m alone, so the accumulation needs neither atomics nor
//             per-thread buffers, and the result does not depend on the number of threads.
// float16 and bfloat16 values are read as they are and every sum runs in float
// (at::opmath_type), as in the CUDA kernels: locations, weights and gradients are handled in
// float, the output and the gradients are rounded to the input dtypes once, at the end.
#include "ms_deform_attn_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/ms_deform_attn_checks.h"
#include "../common/ms_deform_im2col.h"

namespace {

// Plain accumulation into grad_value: each (batch, head) slice belongs to one task.
template <typename acc_t>
struct AddInPlace {
  acc_t* base;
  inline void operator()(int64_t offset, int64_t channel, acc_t grad) const {
    base[offset + channel] += grad;
  }
};

// loc and attn are in acc_t (float for half types), the caller converts them.
template <typename scalar_t>
void forward_kernel(
    const msda::Dims& d,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const at::opmath_type<scalar_t>* loc,
    const at::opmath_type<scalar_t>* attn,
    scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  // float32/float64 accumulate straight into the output; half types into a float row per query.
  constexpr bool kDirect = std::is_same_v<acc_t, scalar_t>;
  const int64_t pixel_stride = d.num_heads * d.channels;
  const int64_t samples_per_head = d.num_levels * d.num_points;
  // A (batch, query) costs M * L * P * 4 * D multiply-adds; keep a task above ~32k of them.
  const int64_t grain =
      std::max<int64_t>(1, 32768 / std::max<int64_t>(1, pixel_stride * samples_per_head * 4));
  at::parallel_for(0, d.batch * d.num_queries, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(kDirect ? 0 : pixel_stride);
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / d.num_queries;
      const scalar_t* value_batch = value + b * d.num_tokens * pixel_stride;
      acc_t* acc = nullptr;
      if constexpr (kDirect) {
        acc = out + bq * pixel_stride;
      } else {
        acc = row.data();
      }
      // The output is allocated uninitialised: zero it here, where it is about to be used.
      std::fill_n(acc, pixel_stride, acc_t(0));
      for (int64_t m = 0; m < d.num_heads; ++m) {
        const int64_t sample0 = (bq * d.num_heads + m) * samples_per_head;
        acc_t* acc_head = acc + m * d.channels;
        for (int64_t l = 0; l < d.num_levels; ++l) {
          const int64_t height = shapes[2 * l];
          const int64_t width = shapes[2 * l + 1];
          const scalar_t* value_level = value_batch + starts[l] * pixel_stride + m * d.channels;
          for (int64_t p = 0; p < d.num_points; ++p) {
            const int64_t s = sample0 + l * d.num_points + p;
            const auto taps = msda::bilinear_taps<acc_t>(
                loc[2 * s], loc[2 * s + 1], height, width, pixel_stride);
            msda::sample_accumulate<scalar_t, acc_t>(
                value_level, taps, attn[s], d.channels, acc_head);
          }
        }
      }
      if constexpr (!kDirect) {
        scalar_t* out_row = out + bq * pixel_stride;
        for (int64_t c = 0; c < pixel_stride; ++c) {
          out_row[c] = static_cast<scalar_t>(acc[c]);
        }
      }
    }
  });
}

// Everything but value is in acc_t: the gradients are accumulated in float for half types.
template <typename scalar_t>
void backward_kernel(
    const msda::Dims& d,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const at::opmath_type<scalar_t>* loc,
    const at::opmath_type<scalar_t>* attn,
    const at::opmath_type<scalar_t>* grad_out,
    at::opmath_type<scalar_t>* grad_value,
    at::opmath_type<scalar_t>* grad_loc,
    at::opmath_type<scalar_t>* grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixel_stride = d.num_heads * d.channels;
  const int64_t samples_per_head = d.num_levels * d.num_points;
  // A task owns grad_value[b, :, m, :] for a group of heads, so that the per-query inputs and
  // outputs (locations, weights, grad_output and the location/weight gradients: contiguous over
  // the heads) are read from memory once per group instead of once per head. Groups are as large
  // as the thread count allows; the accumulation order per head, hence the result, is the same
  // for any grouping.
  const int64_t tasks_wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t groups_per_batch = std::clamp<int64_t>(
      (tasks_wanted + d.batch - 1) / std::max<int64_t>(1, d.batch), 1,
      std::max<int64_t>(1, d.num_heads));
  const int64_t group_size = (d.num_heads + groups_per_batch - 1) / groups_per_batch;
  at::parallel_for(0, d.batch * groups_per_batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups_per_batch;
      const int64_t m_begin = (task % groups_per_batch) * group_size;
      const int64_t m_end = std::min(d.num_heads, m_begin + group_size);
      for (int64_t q = 0; q < d.num_queries; ++q) {
        const int64_t bq = b * d.num_queries + q;
        for (int64_t m = m_begin; m < m_end; ++m) {
          const int64_t head_offset = b * d.num_tokens * pixel_stride + m * d.channels;
          const int64_t sample0 = (bq * d.num_heads + m) * samples_per_head;
          const acc_t* grad_out_head = grad_out + bq * pixel_stride + m * d.channels;
          for (int64_t l = 0; l < d.num_levels; ++l) {
            const int64_t height = shapes[2 * l];
            const int64_t width = shapes[2 * l + 1];
            const int64_t level_offset = head_offset + starts[l] * pixel_stride;
            const AddInPlace<acc_t> add_grad_value{grad_value + level_offset};
            for (int64_t p = 0; p < d.num_points; ++p) {
              const int64_t s = sample0 + l * d.num_points + p;
              const auto taps = msda::bilinear_taps<acc_t>(
                  loc[2 * s], loc[2 * s + 1], height, width, pixel_stride);
              const auto grad = msda::sample_backward<scalar_t, acc_t>(
                  value + level_offset, taps, attn[s], grad_out_head, d.channels, height, width,
                  add_grad_value);
              grad_loc[2 * s] = grad.loc_x;
              grad_loc[2 * s + 1] = grad.loc_y;
              grad_attn[s] = grad.attn;
            }
          }
        }
      }
    }
  });
}

void check_cpu_dtype(const at::Tensor& value) {
  const auto dtype = value.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      "ms_deform_attn (CPU kernel): value must be float32, float64, float16 or bfloat16, got ",
      dtype, " (use the PyTorch path for other dtypes)");
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    int64_t im2col_step) {
  const msda::Dims d = msda::check_inputs(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu_forward: value is on ", value.device());
  check_cpu_dtype(value);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  const at::Tensor loc_c = sampling_loc.to(acc_type).contiguous();
  const at::Tensor attn_c = attn_weight.to(acc_type).contiguous();
  at::Tensor output =
      at::empty({d.batch, d.num_queries, d.num_heads * d.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_kernel<scalar_t>(
            d, value_c.data_ptr<scalar_t>(), shapes_c.data_ptr<int64_t>(),
            starts_c.data_ptr<int64_t>(), loc_c.data_ptr<acc_t>(), attn_c.data_ptr<acc_t>(),
            output.data_ptr<scalar_t>());
      });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output,
    int64_t im2col_step) {
  const msda::Dims d = msda::check_inputs(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu_backward: value is on ", value.device());
  check_cpu_dtype(value);
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef({d.batch, d.num_queries, d.num_heads * d.channels}),
      "ms_deform_attn_cpu_backward: grad_output must be [N, Q, M * D] = [", d.batch, ", ",
      d.num_queries, ", ", d.num_heads * d.channels, "], got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device().is_cpu(), "grad_output is on ", grad_output.device());
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  const at::Tensor loc_c = sampling_loc.to(acc_type).contiguous();
  const at::Tensor attn_c = attn_weight.to(acc_type).contiguous();
  const at::Tensor grad_out_c = grad_output.to(acc_type).contiguous();
  at::Tensor grad_value = at::zeros(value_c.sizes(), value_c.options().dtype(acc_type));
  // Every entry of these two is written by the kernel.
  at::Tensor grad_loc = at::empty_like(loc_c);
  at::Tensor grad_attn = at::empty_like(attn_c);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        backward_kernel<scalar_t>(
            d, value_c.data_ptr<scalar_t>(), shapes_c.data_ptr<int64_t>(),
            starts_c.data_ptr<int64_t>(), loc_c.data_ptr<acc_t>(), attn_c.data_ptr<acc_t>(),
            grad_out_c.data_ptr<acc_t>(), grad_value.data_ptr<acc_t>(),
            grad_loc.data_ptr<acc_t>(), grad_attn.data_ptr<acc_t>());
      });
  // Each gradient in the dtype of its input (no copy when they already match).
  return {
      grad_value.to(value.scalar_type()), grad_loc.to(sampling_loc.scalar_type()),
      grad_attn.to(attn_weight.scalar_type())};
}
