// Argument checks shared by the CPU and CUDA entry points, so that a bad call fails with a message
// naming the argument instead of reading out of bounds.
#pragma once

#include <ATen/ATen.h>

namespace msda {

// Dimensions of one call, read from the tensor shapes.
struct Dims {
  int64_t batch;       // N
  int64_t num_tokens;  // S = sum_l H_l * W_l
  int64_t num_heads;   // M
  int64_t channels;    // D, per head
  int64_t num_levels;  // L
  int64_t num_queries; // Q
  int64_t num_points;  // P
};

inline Dims check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    int64_t im2col_step) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got ", value.sizes());
  TORCH_CHECK(
      sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
      "ms_deform_attn: sampling_loc must be [N, Q, M, L, P, 2], got ", sampling_loc.sizes());
  TORCH_CHECK(
      attn_weight.dim() == 5,
      "ms_deform_attn: attn_weight must be [N, Q, M, L, P], got ", attn_weight.sizes());
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
      "ms_deform_attn: spatial_shapes must be [L, 2], got ", spatial_shapes.sizes());
  TORCH_CHECK(
      level_start_index.dim() == 1,
      "ms_deform_attn: level_start_index must be [L], got ", level_start_index.sizes());
  TORCH_CHECK(
      spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes and level_start_index must be int64, got ",
      spatial_shapes.scalar_type(), " and ", level_start_index.scalar_type());
  // Locations and weights come in value's dtype, or in float32 next to a half-precision value:
  // a bfloat16 location is only good to 1/256 of the map, a third of a pixel on a 64-wide level.
  const bool half_value =
      value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  TORCH_CHECK(
      sampling_loc.scalar_type() == attn_weight.scalar_type() &&
          (sampling_loc.scalar_type() == value.scalar_type() ||
           (half_value && sampling_loc.scalar_type() == at::kFloat)),
      "ms_deform_attn: sampling_loc and attn_weight must share value's dtype (or be float32 "
      "with a float16/bfloat16 value), got ",
      value.scalar_type(), ", ", sampling_loc.scalar_type(), ", ", attn_weight.scalar_type());
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &sampling_loc, &attn_weight}) {
    TORCH_CHECK(
        t->device() == value.device(), "ms_deform_attn: all tensors must be on ", value.device(),
        ", got one on ", t->device());
  }
  TORCH_CHECK(im2col_step > 0, "ms_deform_attn: im2col_step must be positive, got ", im2col_step);

  Dims d;
  d.batch = value.size(0);
  d.num_tokens = value.size(1);
  d.num_heads = value.size(2);
  d.channels = value.size(3);
  d.num_queries = sampling_loc.size(1);
  d.num_levels = sampling_loc.size(3);
  d.num_points = sampling_loc.size(4);
  TORCH_CHECK(
      sampling_loc.size(0) == d.batch && sampling_loc.size(2) == d.num_heads,
      "ms_deform_attn: sampling_loc ", sampling_loc.sizes(), " does not match value ",
      value.sizes(), " in batch or heads");
  TORCH_CHECK(
      attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
      "ms_deform_attn: attn_weight ", attn_weight.sizes(), " does not match sampling_loc ",
      sampling_loc.sizes());
  TORCH_CHECK(
      spatial_shapes.size(0) == d.num_levels && level_start_index.size(0) == d.num_levels,
      "ms_deform_attn: sampling_loc has ", d.num_levels, " levels but spatial_shapes has ",
      spatial_shapes.size(0), " and level_start_index ", level_start_index.size(0));

  // The kernels index value with these numbers: check that every level lies inside value. This
  // reads two tiny tensors (a device sync on CUDA, negligible next to the kernels).
  const at::Tensor shapes_cpu = spatial_shapes.to(at::kCPU).contiguous();
  const at::Tensor starts_cpu = level_start_index.to(at::kCPU).contiguous();
  const int64_t* shapes = shapes_cpu.data_ptr<int64_t>();
  const int64_t* starts = starts_cpu.data_ptr<int64_t>();
  for (int64_t l = 0; l < d.num_levels; ++l) {
    const int64_t h = shapes[2 * l];
    const int64_t w = shapes[2 * l + 1];
    TORCH_CHECK(
        h > 0 && w > 0, "ms_deform_attn: level ", l, " has an empty shape (", h, ", ", w, ")");
    TORCH_CHECK(
        starts[l] >= 0 && starts[l] + h * w <= d.num_tokens,
        "ms_deform_attn: level ", l, " (start ", starts[l], ", shape ", h, "x", w,
        ") does not fit in value's ", d.num_tokens, " tokens");
  }
  return d;
}

}  // namespace msda
