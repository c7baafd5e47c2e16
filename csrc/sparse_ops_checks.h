// The argument checks the CPU and CUDA kernels share (each backend adds its own device check),
// and the dispatch of a neighbour table to each backend's table functor.
#pragma once

#include "tensor_api.h"

#include <optional>

namespace infdiff {

// The dtype kernels accumulate a dtype in (at::opmath_type): float64 for float64, float32 otherwise.
inline at::ScalarType opmath_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The convolutions' optional row scale s: one value per point on the p side of the relation
// q = p + o (the output rows, or with flip the gathered rows), in the values' accumulation dtype:
//   out[p] = s[p] sum_o w_o v[p + o]            (flip = false)
//   out[q] = sum_o w_o s[q - o] v[q - o]        (flip = true, the transpose)
inline void check_row_scale(const std::optional<at::Tensor>& scale, const at::Tensor& values, int64_t rows) {
  if (!scale) return;
  INFDIFF_CHECK(scale->dim() == 1 && scale->size(0) == rows, "scale must hold one value per point (", rows, "), got ",
                scale->sizes());
  INFDIFF_CHECK(scale->scalar_type() == opmath_dtype(values), "scale must be ", opmath_dtype(values), " for ",
                values.scalar_type(), " values, got ", scale->scalar_type());
  INFDIFF_CHECK(scale->device() == values.device(), "scale must be on the values' device ", values.device());
}

// The scale's data (contiguous, kept alive by `holder`), or nullptr without one.
template <typename acc_t>
const acc_t* row_scale_data(const std::optional<at::Tensor>& scale, at::Tensor& holder) {
  if (!scale) return nullptr;
  holder = scale->contiguous();
  return holder.data_ptr<acc_t>();
}

// A callable running `body(Table<index_t>{data, points, taps, flip}, points)` for an int32 or int64
// (K, M) table; `Table` is the backend's table-neighbours type.
template <template <typename> class Table>
auto table_neighbours(const at::Tensor& table, bool flip) {
  return [t = table.contiguous(), flip](auto body) {
    if (t.scalar_type() == at::kInt) {
      body(Table<int32_t>{t.data_ptr<int32_t>(), t.size(1), t.size(0), flip}, t.size(1));
    } else {
      body(Table<int64_t>{t.data_ptr<int64_t>(), t.size(1), t.size(0), flip}, t.size(1));
    }
  };
}

inline void check_conv_inputs(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& table) {
  INFDIFF_CHECK(values.dim() == 2, "values must be (M, C), got ", values.sizes());
  INFDIFF_CHECK(weight.dim() == 2 && weight.size(0) == values.size(1),
                "weight must be (C, K) with C = ", values.size(1), ", got ", weight.sizes());
  INFDIFF_CHECK(table.dim() == 2 && table.size(0) == weight.size(1),
                "table must be (K, M') with K = ", weight.size(1), ", got ", table.sizes());
  INFDIFF_CHECK(table.scalar_type() == at::kInt || table.scalar_type() == at::kLong, "table must be int32 or int64");
  INFDIFF_CHECK(values.scalar_type() == weight.scalar_type(), "values and weight must share a dtype");
}

inline void check_weight_grad_inputs(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& table) {
  INFDIFF_CHECK(grad.dim() == 2 && grad.size(0) == table.size(1) && grad.size(1) == values.size(1),
                "grad must be (M', C) matching the table and values, got ", grad.sizes());
  INFDIFF_CHECK(grad.scalar_type() == values.scalar_type(), "grad and values must share a dtype");
}

inline void check_table_inputs(const at::Tensor& index, const at::Tensor& index_map, int64_t height, int64_t width) {
  INFDIFF_CHECK(index.dim() == 2 && index_map.dim() == 2 && index.size(0) == index_map.size(0),
                "index must be (B, N) and index_map (B, H*W)");
  INFDIFF_CHECK(index_map.size(1) == height * width, "index_map must have H*W = ", height * width, " columns");
}

// The window convolutions: values (B*N, C) at int32 pixel ids index (B, N) of an H x W grid whose
// int32 index map (B, H*W) holds each pixel's position in N (-1 where absent); odd kernel sizes,
// so that the flipped window is the transpose.
inline void check_window_neighbours(const at::Tensor& index, const at::Tensor& index_map, int64_t height,
                                    int64_t width) {
  check_table_inputs(index, index_map, height, width);
  INFDIFF_CHECK(index.scalar_type() == at::kInt && index_map.scalar_type() == at::kInt,
                "index and index_map must be int32, got ", index.scalar_type(), " and ", index_map.scalar_type());
}

inline void check_window_inputs(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& index,
                                const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h,
                                int64_t kernel_w) {
  check_window_neighbours(index, index_map, height, width);
  INFDIFF_CHECK(kernel_h > 0 && kernel_w > 0 && kernel_h % 2 == 1 && kernel_w % 2 == 1,
                "kernel sizes must be odd, got ", kernel_h, "x", kernel_w);
  INFDIFF_CHECK(values.dim() == 2 && values.size(0) == index.numel(),
                "values must be (B*N, C) with B*N = ", index.numel(), ", got ", values.sizes());
  INFDIFF_CHECK(weight.dim() == 2 && weight.size(0) == values.size(1) && weight.size(1) == kernel_h * kernel_w,
                "weight must be (C, kh*kw) = (", values.size(1), ", ", kernel_h * kernel_w, "), got ", weight.sizes());
  INFDIFF_CHECK(values.scalar_type() == weight.scalar_type(), "values and weight must share a dtype");
}

inline void check_window_weight_inputs(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& index,
                                       const at::Tensor& index_map, int64_t height, int64_t width) {
  check_window_neighbours(index, index_map, height, width);
  INFDIFF_CHECK(values.dim() == 2 && values.size(0) == index.numel() && grad.sizes() == values.sizes(),
                "grad and values must both be (B*N, C) with B*N = ", index.numel(), ", got ", grad.sizes(), " and ",
                values.sizes());
  INFDIFF_CHECK(grad.scalar_type() == values.scalar_type(), "grad and values must share a dtype");
}

inline void check_knn_inputs(const at::Tensor& index_map, const at::Tensor& coords, const at::Tensor& query,
                             const at::Tensor& base, int64_t k) {
  INFDIFF_CHECK(index_map.dim() == 2 && coords.dim() == 3 && coords.size(0) == index_map.size(0),
                "index_map must be (B, H*W) and coords (B, N, 2)");
  INFDIFF_CHECK(query.dim() == 2 && base.dim() == 2 && query.size(0) == base.size(0), "query and base must be (G, 2)");
  INFDIFF_CHECK(k >= 1 && k <= coords.size(1), "k must be in [1, N]");
}

}  // namespace infdiff
