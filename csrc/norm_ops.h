// The modulated layer norm both kernel libraries implement (norm_ops_cpu.cpp, norm_ops_cuda.cu), and
// the argument checks they share.  For x (B, R, C) and per-sample scale and shift (B, C):
//
//   y[b, r, c] = (x[b, r, c] - mean[b, r]) * rstd[b, r] * scale[b, c] + shift[b, c],
//   mean = the channels' mean, rstd = 1 / sqrt(their biased variance + eps),
//
// a LayerNorm without affine followed by FiLM with the norm's affine folded in
// (infdiff/nn/film.py).  The backward, with x^ = (x - mean) * rstd and g' = g * scale[b]:
//
//   grad_x = rstd * (g' - mean_c(g') - x^ * mean_c(g' x^)),
//   grad_scale[b, c] = sum_r g x^,   grad_shift[b, c] = sum_r g,
//
// recomputing x^ from x and the saved row statistics (float32, or float64 for float64 inputs).
#pragma once

#include "tensor_api.h"

#include <vector>

#include "sparse_ops_checks.h"

namespace infdiff {

std::vector<at::Tensor> modulated_layer_norm(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                             double eps);
std::vector<at::Tensor> modulated_layer_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                      const at::Tensor& scale, const at::Tensor& mean,
                                                      const at::Tensor& rstd);

inline void check_modulated_norm_inputs(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  INFDIFF_CHECK(x.dim() == 3, "x must be (B, R, C), got ", x.sizes());
  INFDIFF_CHECK(scale.dim() == 2 && scale.size(0) == x.size(0) && scale.size(1) == x.size(2),
                "scale must be (B, C) = (", x.size(0), ", ", x.size(2), "), got ", scale.sizes());
  INFDIFF_CHECK(shift.sizes() == scale.sizes(), "shift must be shaped like scale ", scale.sizes(), ", got ",
                shift.sizes());
  INFDIFF_CHECK(scale.scalar_type() == x.scalar_type() && shift.scalar_type() == x.scalar_type(),
                "x, scale and shift must share a dtype, got ", x.scalar_type(), ", ", scale.scalar_type(), " and ",
                shift.scalar_type());
}

inline void check_modulated_norm_backward_inputs(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
                                                 const at::Tensor& mean, const at::Tensor& rstd) {
  check_modulated_norm_inputs(x, scale, scale);
  INFDIFF_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(),
                "grad must be shaped and typed like x ", x.sizes(), ", got ", grad.sizes());
  INFDIFF_CHECK(mean.numel() == x.size(0) * x.size(1) && rstd.numel() == mean.numel(),
                "mean and rstd must hold one value per row of x (", x.size(0) * x.size(1), ")");
  INFDIFF_CHECK(mean.scalar_type() == opmath_dtype(x) && rstd.scalar_type() == opmath_dtype(x),
                "mean and rstd must be ", opmath_dtype(x));
}

// The forward's contiguous inputs and freshly allocated outputs, alike on either device.
struct ModulatedNormForward {
  at::Tensor x, scale, shift, y, mean, rstd;
  int64_t rows;
};

inline ModulatedNormForward prepare_modulated_norm_forward(const at::Tensor& x, const at::Tensor& scale,
                                                           const at::Tensor& shift) {
  check_modulated_norm_inputs(x, scale, shift);
  ModulatedNormForward f{x.contiguous(), scale.contiguous(), shift.contiguous(), {}, {}, {}, x.size(0) * x.size(1)};
  f.y = at::empty_like(f.x);
  f.mean = at::empty({f.rows}, f.x.options().dtype(opmath_dtype(f.x)));
  f.rstd = at::empty_like(f.mean);
  return f;
}

// partials (P, 2, B, C) of sum_r g x^ and sum_r g, reduced in a fixed order (deterministic) into
// grad_scale and grad_shift of the inputs' dtype.
inline std::vector<at::Tensor> with_affine_grads(const at::Tensor& grad_x, const at::Tensor& partials) {
  return {grad_x, partials.select(1, 0).sum(0).to(grad_x.scalar_type()),
          partials.select(1, 1).sum(0).to(grad_x.scalar_type())};
}

}  // namespace infdiff
