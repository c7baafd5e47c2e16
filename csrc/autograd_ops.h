// The compiled operators' autograd in C++, for eager calls: the formulas infdiff/ops/backends.py and
// modulated_norm.py register for the torch.library operators, with no Python in the call nor in the
// backward.  A torch.library operator with a Python autograd formula spends most of a small call in the
// interpreter (benchmarks/op_overhead.py on the 2-core CPU: 86 us for a forward and backward whose kernels take 15);
// torch.compile still traces those operators (their fake kernels), and these functions serve eager code.
// Included by bindings.cpp alone (compiled by the host compiler in both builds, never by nvcc).
//
//   sparse convolution   y = conv(x, w; s, flip)           dx = conv(g, w; s, !flip)   dw = conv_weight(g, x; s, flip)
//   modulated norm       [y, mean, rstd] = norm(x, a, b)   [dx, da, db] = norm_backward(g, x, a, mean, rstd)
//
// (the neighbour relation is symmetric, so the values' gradient is the flipped convolution; the row scale s
// and the statistics are constants).  Second derivatives are refused, as the Python formulas' are.
#pragma once

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <vector>

#include "norm_ops.h"
#include "sparse_ops.h"

namespace infdiff {
namespace eager {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

inline void refuse_second_derivatives(const char* op) {
  INFDIFF_CHECK(!torch::autograd::GradMode::is_enabled(), "second derivatives of infdiff's ", op,
                " are not implemented (backward was called with create_graph=True)");
}

// Each kernel call carries the name of the torch.library operator it stands for in a profile, so one reads
// the same on either path (benchmarks/step_breakdown.py sums the time under those names).
#define INFDIFF_PROFILED_AS(name) RECORD_FUNCTION(name, std::vector<c10::IValue>())

inline std::optional<at::Tensor> present(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// A convolution's neighbour relation, as a neighbour table (K, P).
struct TableNeighbours {
  static constexpr const char* conv_name = "infdiff::gather_conv";
  static constexpr const char* conv_weight_name = "infdiff::gather_conv_weight";
  at::Tensor table;

  at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& s, bool flip) const {
    return infdiff::gather_conv(x, w, table, s, flip);
  }
  at::Tensor conv_weight(const at::Tensor& g, const at::Tensor& x, const std::optional<at::Tensor>& s,
                         bool flip) const {
    return infdiff::gather_conv_weight(g, x, table, s, flip);
  }
  void save(variable_list& tensors, AutogradContext*) const { tensors.push_back(table); }
  static TableNeighbours load(const at::Tensor* tensors, AutogradContext*) { return {tensors[0]}; }
};

// The same relation looked up in the (B, H*W) index map of the pixel ids, for a kernel_h x kernel_w window.
struct WindowNeighbours {
  static constexpr const char* conv_name = "infdiff::window_conv";
  static constexpr const char* conv_weight_name = "infdiff::window_conv_weight";
  at::Tensor index, index_map;
  int64_t height, width, kernel_h, kernel_w;

  at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& s, bool flip) const {
    return infdiff::window_conv(x, w, index, index_map, height, width, kernel_h, kernel_w, s, flip);
  }
  at::Tensor conv_weight(const at::Tensor& g, const at::Tensor& x, const std::optional<at::Tensor>& s,
                         bool flip) const {
    return infdiff::window_conv_weight(g, x, index, index_map, height, width, kernel_h, kernel_w, s, flip);
  }
  void save(variable_list& tensors, AutogradContext* ctx) const {
    tensors.push_back(index);
    tensors.push_back(index_map);
    ctx->saved_data["window"] = std::vector<int64_t>{height, width, kernel_h, kernel_w};
  }
  static WindowNeighbours load(const at::Tensor* tensors, AutogradContext* ctx) {
    const auto window = ctx->saved_data["window"].toIntVector();
    return {tensors[0], tensors[1], window[0], window[1], window[2], window[3]};
  }
};

// The depthwise sparse convolution of values (M, C) by weight (C, K) with the row scale s (M,) or none.
// Its arguments as the autograd engine counts them: values, weight, scale (edges 0, 1 and, when given, 2).
template <class Neighbours>
struct SparseConv : torch::autograd::Function<SparseConv<Neighbours>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& values, const at::Tensor& weight,
                            const std::optional<at::Tensor>& scale, bool flip, const Neighbours& neighbours) {
    variable_list saved{values, weight, scale.value_or(at::Tensor())};
    neighbours.save(saved, ctx);
    ctx->save_for_backward(std::move(saved));
    ctx->saved_data["flip"] = flip;
    INFDIFF_PROFILED_AS(Neighbours::conv_name);
    return neighbours.conv(values, weight, scale, flip);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto scale = present(saved[2]);
    INFDIFF_CHECK(!scale || !ctx->needs_input_grad(2),
                  "the sparse convolutions' row scale is not differentiable; pass it detached");
    refuse_second_derivatives("sparse convolutions");
    const auto neighbours = Neighbours::load(saved.data() + 3, ctx);
    const bool flip = ctx->saved_data["flip"].toBool();
    const at::Tensor grad = grads[0].contiguous();
    at::Tensor grad_values, grad_weight;
    if (ctx->needs_input_grad(0)) {
      INFDIFF_PROFILED_AS(Neighbours::conv_name);
      grad_values = neighbours.conv(grad, saved[1], scale, !flip);
    }
    if (ctx->needs_input_grad(1)) {
      INFDIFF_PROFILED_AS(Neighbours::conv_weight_name);
      grad_weight = neighbours.conv_weight(grad, saved[0], scale, flip);
    }
    return {grad_values, grad_weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// [y, mean, rstd] of the modulated layer norm of x (B, R, C) by scale and shift (B, C); the statistics are
// not differentiable, and an unused y's gradient stays absent (no zero-filled gradients are launched).
struct ModulatedNorm : torch::autograd::Function<ModulatedNorm> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                               const at::Tensor& shift, double eps) {
    INFDIFF_PROFILED_AS("infdiff::modulated_layer_norm");
    auto outputs = infdiff::modulated_layer_norm(x, scale, shift, eps);
    ctx->save_for_backward({x, scale, outputs[1], outputs[2]});
    ctx->mark_non_differentiable({outputs[1], outputs[2]});
    ctx->set_materialize_grads(false);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    refuse_second_derivatives("modulated layer norm");
    const auto saved = ctx->get_saved_variables();
    INFDIFF_PROFILED_AS("infdiff::modulated_layer_norm_backward");
    auto grad = infdiff::modulated_layer_norm_backward(grads[0].contiguous(), saved[0], saved[1], saved[2], saved[3]);
    return {grad[0], grad[1], grad[2], at::Tensor()};
  }
};

inline at::Tensor gather_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& table,
                              const std::optional<at::Tensor>& scale, bool flip) {
  return SparseConv<TableNeighbours>::apply(values, weight, scale, flip, TableNeighbours{table});
}

inline at::Tensor window_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& index,
                              const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h,
                              int64_t kernel_w, const std::optional<at::Tensor>& scale, bool flip) {
  const WindowNeighbours neighbours{index, index_map, height, width, kernel_h, kernel_w};
  return SparseConv<WindowNeighbours>::apply(values, weight, scale, flip, neighbours);
}

inline variable_list modulated_layer_norm(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                          double eps) {
  return ModulatedNorm::apply(x, scale, shift, eps);
}

}  // namespace eager
}  // namespace infdiff
