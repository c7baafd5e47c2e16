// The sparse convolution's operators, declared once: each kernel library defines them in its backend
// file (sparse_ops_cpu.cpp, sparse_ops_cuda.cu) and binds them in bindings.cpp.  The reference is
// infdiff/ops/reference_kernels.py.  For values v (M, C), a weight w (C, K), a (K, P) neighbour table T
// (T[j, p] == M: absent) and an optional row scale s (the Monte-Carlo normaliser's inverse):
//
//   gather_conv          out[p, c] = s[p] sum_j w[c, j] * v[T[j, p], c]
//   gather_conv_weight   dw[c, j]  = sum_p s[p] g[p, c] * v[T[j, p], c]
//   window_conv(_weight) the same two with T[j, p] looked up in the (B, H*W) index map on the fly
//   neighbour_table      T[j, b*N + n] = position of pixel index[b, n] + offset_j, or B*N
//
// flip = true is the transposed relation (the gradient with respect to the values): q = p + o iff
// p = q - o, so the flipped table row gathers, and the scale then multiplies the gathered rows.
#pragma once

#include <optional>

#include "tensor_api.h"

namespace infdiff {

at::Tensor gather_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& table,
                       const std::optional<at::Tensor>& scale, bool flip);
at::Tensor gather_conv_weight(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& table,
                              const std::optional<at::Tensor>& scale, bool flip);
at::Tensor window_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& index,
                       const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h, int64_t kernel_w,
                       const std::optional<at::Tensor>& scale, bool flip);
at::Tensor window_conv_weight(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& index,
                              const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h,
                              int64_t kernel_w, const std::optional<at::Tensor>& scale, bool flip);
at::Tensor neighbour_table(const at::Tensor& index, const at::Tensor& index_map, int64_t height, int64_t width,
                           int64_t kernel_h, int64_t kernel_w);

}  // namespace infdiff
