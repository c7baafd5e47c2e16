// CPU kernels for infdiff's sparse convolution, the operators of sparse_ops.h (see infdiff/ops/sparse_conv.py
// and reference_kernels.py for the reference each one reproduces; the kNN search is knn_ops_cpu.cpp, the
// modulated layer norm norm_ops_cpu.cpp, the module's bindings bindings.cpp).
//
// Points are processed in blocks: within a block the kernel walks the offsets j outermost, so the
// block's output rows (block x C values) stay in L1 while the j-th table row is read contiguously
// (or, for the window kernels, each point's j-th neighbour is read from a small padded map that
// stays in cache), and the innermost loop runs over channels, which are contiguous and vectorise.
// Work is split with at::parallel_for, which honours torch.set_num_threads.  The optional row scale
// s (the Monte-Carlo normaliser's inverse) sits on the p side of the relation q = p + o: on the
// output rows, or with flip on the gathered ones (sparse_ops_checks.h), so no pass of its own.

#include "sparse_ops.h"

#include <ATen/Parallel.h>

#include "sparse_ops_checks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kConvBlock = 32;    // points whose output rows one task accumulates
constexpr int64_t kWeightBlock = 64;  // points summed in the input dtype before a double add

// Where the j-th neighbour of point p lives in the (rows, C) values, or `rows` when it is absent.
// Each kernel walks points in blocks of at most kWeightBlock; a `Block` answers for one block:
// `block.tap(j, p0)[p - p0]` is the row of point p's j-th neighbour.

// Neighbours read from a (K, M) table; flip reverses its rows (the transpose of the relation).
template <typename index_t>
struct TableNeighbours {
  const index_t* table;
  int64_t points, taps;
  bool flip;

  struct Block {
    const TableNeighbours& nb;
    Block(const TableNeighbours& neighbours, int64_t, int64_t) : nb(neighbours) {}
    const index_t* tap(int64_t j, int64_t p0) const {
      return nb.table + (nb.flip ? nb.taps - 1 - j : j) * nb.points + p0;
    }
  };
};

// Neighbours looked up in the index map: nothing (K, M) is kept.  `padded` is the (B, H + 2rh,
// W + 2rw) map of flattened value rows (b*N + position, or B*N where the pixel is absent or off the
// grid), built per call in O(B H W); a point's j-th neighbour is then one load at a fixed offset
// from its own pixel, with no bounds checks.  Offset j is row-major over the kh x kw window
// (F.conv2d's order); flip negates it (q = p + o iff p = q - o).
struct WindowNeighbours {
  const int32_t* index;   // (B*N) flat pixel ids
  const int32_t* padded;  // (B, PH, PW) value rows
  int64_t n, padded_h, padded_w, width, kernel_h, kernel_w;
  bool flip;

  struct Tap {
    const int32_t* const* centre;
    int64_t step;
    int32_t operator[](int64_t i) const { return centre[i][step]; }
  };
  struct Block {
    const WindowNeighbours& nb;
    const int32_t* centre[kWeightBlock];  // each point's own pixel in `padded`
    Block(const WindowNeighbours& neighbours, int64_t p0, int64_t p1) : nb(neighbours) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t pixel = nb.index[p];
        const int64_t row = pixel / nb.width + nb.kernel_h / 2, col = pixel % nb.width + nb.kernel_w / 2;
        centre[p - p0] = nb.padded + (p / nb.n) * nb.padded_h * nb.padded_w + row * nb.padded_w + col;
      }
    }
    Tap tap(int64_t j, int64_t) const {
      const int64_t dy = j / nb.kernel_w - nb.kernel_h / 2, dx = j % nb.kernel_w - nb.kernel_w / 2;
      return {centre, (nb.flip ? -1 : 1) * (dy * nb.padded_w + dx)};
    }
  };
};

// The (B, H + 2rh, W + 2rw) map of value rows WindowNeighbours reads.
at::Tensor padded_rows(const at::Tensor& index_map, int64_t n, int64_t height, int64_t width, int64_t kernel_h,
                       int64_t kernel_w) {
  const int64_t batch = index_map.size(0), rh = kernel_h / 2, rw = kernel_w / 2;
  const int64_t ph = height + 2 * rh, pw = width + 2 * rw;
  INFDIFF_CHECK(batch * n < std::numeric_limits<int32_t>::max(), "the window convolution needs B*N < 2^31 points");
  const auto absent = static_cast<int32_t>(batch * n);
  auto padded = at::full({batch, ph, pw}, absent, index_map.options());
  const int32_t* map = index_map.data_ptr<int32_t>();
  int32_t* out = padded.data_ptr<int32_t>();
  at::parallel_for(0, batch * height, 64, [&](int64_t first, int64_t last) {
    for (int64_t task = first; task < last; ++task) {
      const int64_t b = task / height, r = task % height;
      const int32_t* src = map + task * width;
      int32_t* dst = out + b * ph * pw + (r + rh) * pw + rw;
      const auto base = static_cast<int32_t>(b * n);
      for (int64_t c = 0; c < width; ++c) dst[c] = src[c] < 0 ? absent : src[c] + base;
    }
  });
  return padded;
}

template <typename scalar_t, typename Neighbours>
void gather_conv_impl(const scalar_t* values, const scalar_t* weight_kc, const scalar_t* scale,
                      const Neighbours& neighbours, scalar_t* out, int64_t rows, int64_t points, int64_t channels,
                      int64_t taps) {
  const bool scale_gathered = scale != nullptr && neighbours.flip;
  const int64_t blocks = (points + kConvBlock - 1) / kConvBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t block_id = first; block_id < last; ++block_id) {
      const int64_t p0 = block_id * kConvBlock, p1 = std::min(points, p0 + kConvBlock);
      const typename Neighbours::Block block(neighbours, p0, p1);
      std::fill(out + p0 * channels, out + p1 * channels, scalar_t(0));
      for (int64_t j = 0; j < taps; ++j) {
        const auto row = block.tap(j, p0);
        const scalar_t* w = weight_kc + j * channels;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t q = row[p - p0];
          if (q >= rows) continue;  // absent: the zero padding row
          const scalar_t* src = values + q * channels;
          scalar_t* dst = out + p * channels;
          if (scale_gathered) {
            const scalar_t s = scale[q];
#pragma omp simd
            for (int64_t c = 0; c < channels; ++c) dst[c] += w[c] * (s * src[c]);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < channels; ++c) dst[c] += w[c] * src[c];
          }
        }
      }
      if (scale == nullptr || neighbours.flip) continue;
      for (int64_t p = p0; p < p1; ++p) {  // the block's rows are still in L1
        const scalar_t s = scale[p];
        scalar_t* dst = out + p * channels;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) dst[c] *= s;
      }
    }
  });
}

template <typename scalar_t, typename Neighbours>
void gather_conv_weight_impl(const scalar_t* grad, const scalar_t* values, const scalar_t* scale,
                             const Neighbours& neighbours, double* partials, int64_t rows, int64_t points,
                             int64_t channels, int64_t taps, int64_t chunks) {
  const int64_t per_chunk = (points + chunks - 1) / chunks;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    std::vector<scalar_t> block_sum(taps * channels);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      double* total = partials + chunk * taps * channels;  // this chunk's own partial sums
      const int64_t c0 = chunk * per_chunk, c1 = std::min(points, c0 + per_chunk);
      for (int64_t p0 = c0; p0 < c1; p0 += kWeightBlock) {
        const int64_t p1 = std::min(c1, p0 + kWeightBlock);
        const typename Neighbours::Block block(neighbours, p0, p1);
        std::fill(block_sum.begin(), block_sum.end(), scalar_t(0));
        for (int64_t j = 0; j < taps; ++j) {
          const auto row = block.tap(j, p0);
          scalar_t* acc = block_sum.data() + j * channels;
          for (int64_t p = p0; p < p1; ++p) {
            const int64_t q = row[p - p0];
            if (q >= rows) continue;
            const scalar_t* g = grad + p * channels;
            const scalar_t* src = values + q * channels;
            const scalar_t s = scale == nullptr ? scalar_t(1) : scale[neighbours.flip ? q : p];
#pragma omp simd
            for (int64_t c = 0; c < channels; ++c) acc[c] += (s * g[c]) * src[c];
          }
        }
        for (int64_t i = 0; i < taps * channels; ++i) total[i] += static_cast<double>(block_sum[i]);
      }
    }
  });
}

bool reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// out (M', C) = s[p] sum_j w[:, j] * v[neighbour_j(p)]: `with_neighbours(callback)` hands the callback
// the neighbour description and the number of output points.
template <typename WithNeighbours>
at::Tensor conv_forward(const at::Tensor& values, const at::Tensor& weight, const std::optional<at::Tensor>& scale,
                        WithNeighbours with_neighbours) {
  auto v = values.contiguous();
  auto w = weight.t().contiguous();  // (K, C): one contiguous row per tap
  const int64_t channels = v.size(1), taps = w.size(0);
  at::Tensor out, s;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "infdiff_gather_conv", [&] {
    const scalar_t* scale_data = infdiff::row_scale_data<scalar_t>(scale, s);
    with_neighbours([&](const auto& neighbours, int64_t points) {
      out = at::empty({points, channels}, v.options());
      gather_conv_impl<scalar_t>(v.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), scale_data, neighbours,
                                 out.data_ptr<scalar_t>(), v.size(0), points, channels, taps);
    });
  });
  return out;
}

// dw (C, K) = sum_p s[p] g[p] v[neighbour_j(p)]: per-chunk partial sums (in double) reduced at the
// end, so no two threads ever write the same accumulator.
template <typename WithNeighbours>
at::Tensor conv_weight(const at::Tensor& grad, const at::Tensor& values, const std::optional<at::Tensor>& scale,
                       int64_t taps, WithNeighbours with_neighbours) {
  auto g = grad.contiguous();
  auto v = values.contiguous();
  const int64_t points = g.size(0), channels = v.size(1);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads() * 4, points / kWeightBlock));
  auto partials = at::zeros({chunks, taps, channels}, v.options().dtype(at::kDouble));
  at::Tensor s;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "infdiff_gather_conv_weight", [&] {
    const scalar_t* scale_data = infdiff::row_scale_data<scalar_t>(scale, s);
    with_neighbours([&](const auto& neighbours, int64_t) {
      gather_conv_weight_impl<scalar_t>(g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), scale_data, neighbours,
                                        partials.data_ptr<double>(), v.size(0), points, channels, taps, chunks);
    });
  });
  return partials.sum(0).t().contiguous().to(v.scalar_type());  // (C, K)
}

auto window_neighbours(const at::Tensor& index, const at::Tensor& index_map, int64_t height, int64_t width,
                       int64_t kernel_h, int64_t kernel_w, bool flip) {
  auto idx = index.contiguous();
  auto padded = padded_rows(index_map.contiguous(), idx.size(1), height, width, kernel_h, kernel_w);
  return [idx, padded, width, kernel_h, kernel_w, flip](auto body) {
    const WindowNeighbours neighbours{idx.data_ptr<int32_t>(), padded.data_ptr<int32_t>(), idx.size(1), padded.size(1),
                                      padded.size(2), width, kernel_h, kernel_w, flip};
    body(neighbours, idx.numel());
  };
}

}  // namespace

namespace infdiff {

// Forward (flip = false) and the gradient with respect to the values (flip = true: the neighbour
// relation is symmetric, q = p + o iff p = q - o, so the flipped table row gathers s[q - o] g[q - o]).
at::Tensor gather_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& table,
                       const std::optional<at::Tensor>& scale, bool flip) {
  infdiff::check_conv_inputs(values, weight, table);
  infdiff::check_row_scale(scale, values, flip ? values.size(0) : table.size(1));
  if (reduced_precision(values)) {  // CPU autocast: compute in float, hand back the input's precision
    return gather_conv(values.to(at::kFloat), weight.to(at::kFloat), table, scale, flip).to(values.scalar_type());
  }
  return conv_forward(values, weight, scale, infdiff::table_neighbours<TableNeighbours>(table, flip));
}

at::Tensor gather_conv_weight(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& table,
                              const std::optional<at::Tensor>& scale, bool flip) {
  infdiff::check_weight_grad_inputs(grad, values, table);
  infdiff::check_row_scale(scale, values, flip ? values.size(0) : grad.size(0));
  if (reduced_precision(values)) {
    return gather_conv_weight(grad.to(at::kFloat), values.to(at::kFloat), table, scale, flip)
        .to(values.scalar_type());
  }
  return conv_weight(grad, values, scale, table.size(0), infdiff::table_neighbours<TableNeighbours>(table, flip));
}

// The same two operations with each neighbour looked up in the index map as it is needed.
at::Tensor window_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& index,
                       const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h, int64_t kernel_w,
                       const std::optional<at::Tensor>& scale, bool flip) {
  infdiff::check_window_inputs(values, weight, index, index_map, height, width, kernel_h, kernel_w);
  infdiff::check_row_scale(scale, values, values.size(0));
  if (reduced_precision(values)) {
    return window_conv(values.to(at::kFloat), weight.to(at::kFloat), index, index_map, height, width, kernel_h,
                       kernel_w, scale, flip)
        .to(values.scalar_type());
  }
  return conv_forward(values, weight, scale,
                      window_neighbours(index, index_map, height, width, kernel_h, kernel_w, flip));
}

at::Tensor window_conv_weight(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& index,
                              const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h,
                              int64_t kernel_w, const std::optional<at::Tensor>& scale, bool flip) {
  infdiff::check_window_weight_inputs(grad, values, index, index_map, height, width);
  infdiff::check_row_scale(scale, values, values.size(0));
  if (reduced_precision(values)) {
    return window_conv_weight(grad.to(at::kFloat), values.to(at::kFloat), index, index_map, height, width, kernel_h,
                              kernel_w, scale, flip)
        .to(values.scalar_type());
  }
  return conv_weight(grad, values, scale, kernel_h * kernel_w,
                     window_neighbours(index, index_map, height, width, kernel_h, kernel_w, flip));
}

// T[j, b*N + n]: the position (in the flattened B*N values) of the pixel at index[b, n] + offset_j,
// or B*N when that pixel is outside the grid or absent.  Offsets are row-major over the window.
at::Tensor neighbour_table(const at::Tensor& index, const at::Tensor& index_map, int64_t height, int64_t width,
                           int64_t kernel_h, int64_t kernel_w) {
  infdiff::check_table_inputs(index, index_map, height, width);
  auto idx = index.to(at::kLong).contiguous();
  auto map = index_map.to(at::kLong).contiguous();
  const int64_t batch = idx.size(0), n = idx.size(1), points = batch * n, taps = kernel_h * kernel_w;
  const bool small = points < std::numeric_limits<int32_t>::max();
  auto table = at::empty({taps, points}, idx.options().dtype(small ? at::kInt : at::kLong));
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t* mp = map.data_ptr<int64_t>();
  auto fill = [&](auto* out) {
    at::parallel_for(0, points, 256, [&](int64_t first, int64_t last) {
      for (int64_t p = first; p < last; ++p) {
        const int64_t b = p / n, pixel = ip[p], row = pixel / width, col = pixel % width;
        const int64_t* map_b = mp + b * height * width;
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t r = row + j / kernel_w - kernel_h / 2, c = col + j % kernel_w - kernel_w / 2;
          int64_t position = -1;
          if (r >= 0 && r < height && c >= 0 && c < width) position = map_b[r * width + c];
          out[j * points + p] = static_cast<std::remove_pointer_t<decltype(out)>>(position >= 0 ? position + b * n
                                                                                                  : points);
        }
      }
    });
  };
  if (small) {
    fill(table.data_ptr<int32_t>());
  } else {
    fill(table.data_ptr<int64_t>());
  }
  return table;
}

}  // namespace infdiff
