// Python bindings of the MultiScaleDeformableAttention extension.
#include <torch/csrc/utils/pybind.h>

#include "ms_deform_attn.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention (Deformable DETR interface), CPU and CUDA kernels";
  m.def(
      "ms_deform_attn_forward", &ms_deform_attn_forward,
      "ms_deform_attn_forward(value [N,S,M,D], spatial_shapes [L,2], level_start_index [L], "
      "sampling_loc [N,Q,M,L,P,2], attn_weight [N,Q,M,L,P], im2col_step) -> [N,Q,M*D]",
      pybind11::arg("value"), pybind11::arg("spatial_shapes"),
      pybind11::arg("level_start_index"), pybind11::arg("sampling_loc"),
      pybind11::arg("attn_weight"), pybind11::arg("im2col_step"));
  m.def(
      "ms_deform_attn_backward", &ms_deform_attn_backward,
      "ms_deform_attn_backward(value, spatial_shapes, level_start_index, sampling_loc, "
      "attn_weight, grad_output [N,Q,M*D], im2col_step) -> [grad_value, grad_sampling_loc, "
      "grad_attn_weight]",
      pybind11::arg("value"), pybind11::arg("spatial_shapes"),
      pybind11::arg("level_start_index"), pybind11::arg("sampling_loc"),
      pybind11::arg("attn_weight"), pybind11::arg("grad_output"), pybind11::arg("im2col_step"));
  m.def(
      "built_with_cuda", &ms_deform_attn_built_with_cuda,
      "True when this build contains the CUDA kernels");
}
