// CUDA kernels for infdiff's sparse convolution, the operators of sparse_ops.h: the same results as
// sparse_ops_cpu.cpp and the PyTorch reference, infdiff/ops/reference_kernels.py (the kNN search is
// knn_ops_cuda.cu, the modulated layer norm norm_ops_cuda.cu, the module's bindings bindings.cpp).
//
// Layout: a block is 32 channel lanes x kPointsPerBlock points, so a warp reads one point's
// channels contiguously (coalesced; every conv kernel takes aligned channel pairs where the row length
// is even) and the table entry it needs is one broadcast load.  Half and bfloat16 inputs accumulate in
// float, float64 in double (at::opmath_type).  The weight gradient writes one partial sum per block, in
// that type, and reduces them in a fixed order (reduce_weight_partials_kernel) instead of with atomics.
// The optional row scale s (the Monte-Carlo normaliser's inverse, in the accumulation type) multiplies
// the output rows, or with flip the gathered ones (sparse_ops_checks.h), inside the kernels.

#include "sparse_ops.h"

#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "sparse_ops_checks.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

constexpr int kLanes = 32;
constexpr int kPointsPerBlock = 8;
constexpr int kWeightPoints = 256;  // points one weight-gradient block sums
constexpr int kWeightTaps = 8;      // taps one weight-gradient block sums (one register each)
constexpr int kReduceWarps = 8;     // warps that split the chunks of one group of weight-gradient entries

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Where point p's j-th neighbour lives in the (rows, C) values (`rows` when absent), as a device
// functor `neighbours.at(p)` for a point then `.tap(j)` for an offset, shared by both kernels.

// From a (K, M) table; flip reverses its rows (the transpose of the relation).
template <typename index_t>
struct TableNeighbours {
  const index_t* table;
  int64_t points, taps;
  bool flip;
  struct Point {
    const index_t* column;
    int64_t points, taps;
    bool flip;
    __device__ int64_t tap(int64_t j) const { return column[(flip ? taps - 1 - j : j) * points]; }
  };
  __device__ Point at(int64_t p) const { return {table + p, points, taps, flip}; }
};

// From the (B, H + 2rh, W + 2rw) map of value rows (b*N + position, or B*N where absent or off the
// grid) built per call by padded_rows_kernel: one load at a fixed offset from the point's own pixel,
// no bounds checks and nothing (K, M) stored.  flip negates the offset (q = p + o iff p = q - o).
struct WindowNeighbours {
  const int32_t* index;
  const int32_t* padded;
  int64_t n, padded_h, padded_w, width, kernel_h, kernel_w;
  bool flip;
  struct Point {
    const int32_t* centre;
    int64_t padded_w, kernel_h, kernel_w, sign;
    __device__ int64_t tap(int64_t j) const {
      return centre[sign * ((j / kernel_w - kernel_h / 2) * padded_w + j % kernel_w - kernel_w / 2)];
    }
  };
  __device__ Point at(int64_t p) const {
    const int64_t pixel = index[p], row = pixel / width + kernel_h / 2, col = pixel % width + kernel_w / 2;
    return {padded + (p / n) * padded_h * padded_w + row * padded_w + col, padded_w, kernel_h, kernel_w,
            flip ? -1 : 1};
  }
};

// kWidth consecutive channels of one row, loaded and stored as one access (4 to 16 bytes for two).
template <typename scalar_t, int kWidth>
struct alignas(kWidth * sizeof(scalar_t)) ChannelRun {
  scalar_t v[kWidth];
};

// One thread per (point, lane); the lane walks the channels c = kWidth * lane, + 32 kWidth, ..., a
// run of kWidth at a time (2 where the rows allow aligned pairs: a 64-channel bf16 row is then one
// 128-byte warp access per tap instead of two of 64), so the point's neighbour rows (table entries or
// index-map loads) come from DRAM once and from L1 for the later channel groups.
template <int kWidth, typename scalar_t, typename Neighbours, typename acc_t = at::opmath_type<scalar_t>>
__global__ void gather_conv_kernel(const scalar_t* __restrict__ values, const scalar_t* __restrict__ weight_kc,
                                   const acc_t* __restrict__ scale, const Neighbours neighbours,
                                   scalar_t* __restrict__ out, int64_t rows, int64_t points, int64_t channels,
                                   int64_t taps) {
  using Run = ChannelRun<scalar_t, kWidth>;
  const int64_t p = blockIdx.x * static_cast<int64_t>(kPointsPerBlock) + threadIdx.y;
  if (p >= points) return;
  const auto point = neighbours.at(p);
  const bool scale_gathered = scale != nullptr && neighbours.flip;
  const acc_t scale_out = scale != nullptr && !neighbours.flip ? scale[p] : acc_t(1);
  for (int64_t c = threadIdx.x * static_cast<int64_t>(kWidth); c < channels; c += kLanes * kWidth) {
    acc_t acc[kWidth] = {};
    for (int64_t j = 0; j < taps; ++j) {
      const int64_t q = point.tap(j);
      if (q >= rows) continue;
      const Run x = *reinterpret_cast<const Run*>(values + q * channels + c);
      const Run w = *reinterpret_cast<const Run*>(weight_kc + j * channels + c);
      const acc_t scale_q = scale_gathered ? scale[q] : acc_t(1);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) acc[i] += static_cast<acc_t>(w.v[i]) * (static_cast<acc_t>(x.v[i]) * scale_q);
    }
    Run y;
#pragma unroll
    for (int i = 0; i < kWidth; ++i) y.v[i] = static_cast<scalar_t>(acc[i] * scale_out);
    *reinterpret_cast<Run*>(out + p * channels + c) = y;
  }
}

// blockIdx.x: a chunk of kWeightPoints points; blockIdx.y: kWeightTaps taps from j0 = y * kWeightTaps;
// blockIdx.z: 32 kWidth channels (runs of kWidth per lane, as in gather_conv_kernel).  Each thread keeps
// one accumulator per tap of its tile and channel of its run in registers, so a point's gradient row is
// read once per tile of taps rather than once per tap; the block's warps are then summed through shared
// memory into one partial per (chunk, tap, channel), in acc_t.
template <int kWidth, typename scalar_t, typename Neighbours, typename acc_t = at::opmath_type<scalar_t>>
__global__ void gather_conv_weight_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ values,
                                          const acc_t* __restrict__ scale, const Neighbours neighbours,
                                          acc_t* __restrict__ partials, int64_t rows, int64_t points,
                                          int64_t channels, int64_t taps) {
  using Run = ChannelRun<scalar_t, kWidth>;
  __shared__ acc_t sums[kPointsPerBlock][kWeightTaps][kLanes * kWidth];
  const int64_t j0 = blockIdx.y * static_cast<int64_t>(kWeightTaps);
  const int64_t c = (blockIdx.z * static_cast<int64_t>(kLanes) + threadIdx.x) * kWidth;
  const int tile = static_cast<int>(min(static_cast<int64_t>(kWeightTaps), taps - j0));
  acc_t acc[kWeightTaps][kWidth];
#pragma unroll
  for (int i = 0; i < kWeightTaps; ++i) {
#pragma unroll
    for (int w = 0; w < kWidth; ++w) acc[i][w] = 0;
  }
  if (c < channels) {
    const int64_t first = blockIdx.x * static_cast<int64_t>(kWeightPoints);
    const int64_t last = min(points, first + kWeightPoints);
    const bool scale_gathered = scale != nullptr && neighbours.flip;
    for (int64_t p = first + threadIdx.y; p < last; p += kPointsPerBlock) {
      const auto point = neighbours.at(p);
      const acc_t scale_p = scale != nullptr && !neighbours.flip ? scale[p] : acc_t(1);
      const Run g = *reinterpret_cast<const Run*>(grad + p * channels + c);
      acc_t g_scaled[kWidth];
#pragma unroll
      for (int w = 0; w < kWidth; ++w) g_scaled[w] = static_cast<acc_t>(g.v[w]) * scale_p;
#pragma unroll
      for (int i = 0; i < kWeightTaps; ++i) {  // fixed trip counts, so acc stays in registers
        const int64_t q = i < tile ? point.tap(j0 + i) : rows;
        if (q >= rows) continue;
        const Run x = *reinterpret_cast<const Run*>(values + q * channels + c);
        const acc_t scale_q = scale_gathered ? scale[q] : acc_t(1);
#pragma unroll
        for (int w = 0; w < kWidth; ++w) {
          acc[i][w] += g_scaled[w] * (static_cast<acc_t>(x.v[w]) * scale_q);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kWeightTaps; ++i) {
#pragma unroll
    for (int w = 0; w < kWidth; ++w) sums[threadIdx.y][i][threadIdx.x * kWidth + w] = acc[i][w];
  }
  __syncthreads();
  if (c < channels) {
    for (int i = threadIdx.y; i < tile; i += kPointsPerBlock) {  // warp y sums taps y, y + 8, ...
      for (int w = 0; w < kWidth; ++w) {
        acc_t total = 0;
        for (int r = 0; r < kPointsPerBlock; ++r) total += sums[r][i][threadIdx.x * kWidth + w];
        partials[(blockIdx.x * taps + j0 + i) * channels + c + w] = total;
      }
    }
  }
}

// The weight gradient's last pass: dw[c, j] = sum over the chunks b of partials[b, j, c] in one fixed order
// (warp w sums the chunks w, w + kReduceWarps, ..., then lane c of warp 0 adds the warps' sums in warp order),
// written transposed into the (C, K) gradient in the values' dtype: one kernel where a zero fill, a sum, a
// transpose and a cast were four.  blockIdx.x: kLanes consecutive (j, c) entries, one per lane.
template <typename scalar_t, typename acc_t>
__global__ void reduce_weight_partials_kernel(const acc_t* __restrict__ partials, scalar_t* __restrict__ grad_weight,
                                              int64_t chunks, int64_t taps, int64_t channels) {
  __shared__ acc_t sums[kReduceWarps][kLanes];
  const int64_t entries = taps * channels;
  const int64_t entry = blockIdx.x * static_cast<int64_t>(kLanes) + threadIdx.x;  // j * channels + c: coalesced
  acc_t total = 0;
  if (entry < entries) {
    for (int64_t b = threadIdx.y; b < chunks; b += kReduceWarps) total += partials[b * entries + entry];
  }
  sums[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && entry < entries) {
    acc_t sum = 0;
    for (int w = 0; w < kReduceWarps; ++w) sum += sums[w][threadIdx.x];
    grad_weight[(entry % channels) * taps + entry / channels] = static_cast<scalar_t>(sum);
  }
}

__global__ void padded_rows_kernel(const int32_t* __restrict__ index_map, int32_t* __restrict__ padded, int64_t batch,
                                   int64_t n, int64_t height, int64_t width, int64_t rh, int64_t rw) {
  const int64_t task = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (task >= batch * height * width) return;
  const int64_t b = task / (height * width), r = task / width % height, c = task % width;
  const int64_t pw = width + 2 * rw, ph = height + 2 * rh;
  const int32_t position = index_map[task];
  padded[b * ph * pw + (r + rh) * pw + c + rw] = static_cast<int32_t>(position < 0 ? batch * n : position + b * n);
}

template <typename index_t>
__global__ void neighbour_table_kernel(const int64_t* __restrict__ index, const int64_t* __restrict__ index_map,
                                       index_t* __restrict__ table, int64_t n, int64_t points, int64_t height,
                                       int64_t width, int64_t kernel_h, int64_t kernel_w) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t j = blockIdx.y;
  if (p >= points) return;
  const int64_t b = p / n, pixel = index[p];
  const int64_t r = pixel / width + j / kernel_w - kernel_h / 2, c = pixel % width + j % kernel_w - kernel_w / 2;
  int64_t position = -1;
  if (r >= 0 && r < height && c >= 0 && c < width) position = index_map[b * height * width + r * width + c];
  table[j * points + p] = static_cast<index_t>(position >= 0 ? position + b * n : points);
}

#define INFDIFF_DISPATCH_INDEX(TABLE, ...)                                   \
  [&] {                                                                      \
    if ((TABLE).scalar_type() == at::kInt) {                                 \
      using index_t = int32_t;                                               \
      return __VA_ARGS__();                                                  \
    }                                                                        \
    using index_t = int64_t;                                                 \
    return __VA_ARGS__();                                                    \
  }()

// launch(width) with the channel-run width as a std::integral_constant: 2 when the rows hold an even number
// of channels and every tensor starts pair-aligned (a view may start anywhere), else 1.
template <typename scalar_t, typename Launch>
void with_run_width(int64_t channels, std::initializer_list<at::Tensor> tensors, Launch launch) {
  const bool pairs = channels % 2 == 0 && std::all_of(tensors.begin(), tensors.end(), [](const at::Tensor& t) {
                       return reinterpret_cast<uintptr_t>(t.data_ptr()) % (2 * sizeof(scalar_t)) == 0;
                     });
  if (pairs) {
    launch(std::integral_constant<int, 2>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

template <typename WithNeighbours>
at::Tensor conv_forward(const at::Tensor& values, const at::Tensor& weight, const std::optional<at::Tensor>& scale,
                        WithNeighbours with_neighbours) {
  const c10::cuda::CUDAGuard guard(values.device());
  auto v = values.contiguous();
  auto w = weight.t().contiguous();  // (K, C)
  const int64_t channels = v.size(1), taps = w.size(0);
  at::Tensor out, s;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "infdiff_gather_conv_cuda", [&] {
    const auto* scale_data = infdiff::row_scale_data<at::opmath_type<scalar_t>>(scale, s);
    with_neighbours([&](const auto& neighbours, int64_t points) {
      out = at::empty({points, channels}, v.options());
      if (points == 0 || channels == 0) return;
      const dim3 block(kLanes, kPointsPerBlock);
      const dim3 grid(ceil_div(points, kPointsPerBlock));
      with_run_width<scalar_t>(channels, {v, w, out}, [&](auto width) {
        gather_conv_kernel<decltype(width)::value><<<grid, block, 0, stream>>>(
            v.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), scale_data, neighbours, out.data_ptr<scalar_t>(),
            v.size(0), points, channels, taps);
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

template <typename WithNeighbours>
at::Tensor conv_weight(const at::Tensor& grad, const at::Tensor& values, const std::optional<at::Tensor>& scale,
                       int64_t taps, WithNeighbours with_neighbours) {
  const c10::cuda::CUDAGuard guard(values.device());
  auto g = grad.contiguous();
  auto v = values.contiguous();
  const int64_t points = g.size(0), channels = v.size(1);
  if (points == 0 || channels == 0 || taps == 0) return at::zeros({channels, taps}, v.options());  // empty sums
  const int64_t chunks = ceil_div(points, kWeightPoints);
  // the weight kernel writes every (chunk, tap, channel) entry, so the partials need no zero fill
  auto partials = at::empty({chunks, taps, channels}, v.options().dtype(infdiff::opmath_dtype(v)));
  auto grad_weight = at::empty({channels, taps}, v.options());
  const dim3 block(kLanes, kPointsPerBlock), reduce_grid(ceil_div(taps * channels, kLanes)),
      reduce_block(kLanes, kReduceWarps);
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "infdiff_gather_conv_weight_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto* scale_data = infdiff::row_scale_data<acc_t>(scale, s);
    with_neighbours([&](const auto& neighbours, int64_t) {
      with_run_width<scalar_t>(channels, {g, v}, [&](auto width) {
        constexpr int kWidth = decltype(width)::value;
        const dim3 grid(chunks, ceil_div(taps, kWeightTaps), ceil_div(channels, kLanes * kWidth));
        gather_conv_weight_kernel<kWidth><<<grid, block, 0, stream>>>(
            g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), scale_data, neighbours, partials.data_ptr<acc_t>(),
            v.size(0), points, channels, taps);
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    reduce_weight_partials_kernel<<<reduce_grid, reduce_block, 0, stream>>>(
        partials.data_ptr<acc_t>(), grad_weight.data_ptr<scalar_t>(), chunks, taps, channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_weight;
}

auto window_neighbours(const at::Tensor& index, const at::Tensor& index_map, int64_t height, int64_t width,
                       int64_t kernel_h, int64_t kernel_w, bool flip) {
  const int64_t batch = index.size(0), n = index.size(1), rh = kernel_h / 2, rw = kernel_w / 2;
  INFDIFF_CHECK(batch * n < std::numeric_limits<int32_t>::max(), "the window convolution needs B*N < 2^31 points");
  auto map = index_map.contiguous();
  auto padded = at::full({batch, height + 2 * rh, width + 2 * rw}, static_cast<int32_t>(batch * n), map.options());
  if (batch * height * width > 0) {
    padded_rows_kernel<<<ceil_div(batch * height * width, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        map.data_ptr<int32_t>(), padded.data_ptr<int32_t>(), batch, n, height, width, rh, rw);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return [idx = index.contiguous(), padded, width, kernel_h, kernel_w, flip](auto body) {
    body(WindowNeighbours{idx.data_ptr<int32_t>(), padded.data_ptr<int32_t>(), idx.size(1), padded.size(1),
                          padded.size(2), width, kernel_h, kernel_w, flip},
         idx.numel());
  };
}

void check_cuda(std::initializer_list<at::Tensor> tensors) {
  for (const auto& t : tensors) INFDIFF_CHECK(t.is_cuda(), "the cuda backend needs CUDA tensors");
}

}  // namespace

namespace infdiff {

at::Tensor gather_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& table,
                       const std::optional<at::Tensor>& scale, bool flip) {
  check_cuda({values, weight, table});
  infdiff::check_conv_inputs(values, weight, table);
  infdiff::check_row_scale(scale, values, flip ? values.size(0) : table.size(1));
  return conv_forward(values, weight, scale, infdiff::table_neighbours<TableNeighbours>(table, flip));
}

at::Tensor gather_conv_weight(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& table,
                              const std::optional<at::Tensor>& scale, bool flip) {
  check_cuda({grad, values, table});
  infdiff::check_weight_grad_inputs(grad, values, table);
  infdiff::check_row_scale(scale, values, flip ? values.size(0) : grad.size(0));
  return conv_weight(grad, values, scale, table.size(0), infdiff::table_neighbours<TableNeighbours>(table, flip));
}

at::Tensor window_conv(const at::Tensor& values, const at::Tensor& weight, const at::Tensor& index,
                       const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h, int64_t kernel_w,
                       const std::optional<at::Tensor>& scale, bool flip) {
  check_cuda({values, weight, index, index_map});
  infdiff::check_window_inputs(values, weight, index, index_map, height, width, kernel_h, kernel_w);
  infdiff::check_row_scale(scale, values, values.size(0));
  const c10::cuda::CUDAGuard guard(values.device());
  return conv_forward(values, weight, scale,
                      window_neighbours(index, index_map, height, width, kernel_h, kernel_w, flip));
}

at::Tensor window_conv_weight(const at::Tensor& grad, const at::Tensor& values, const at::Tensor& index,
                              const at::Tensor& index_map, int64_t height, int64_t width, int64_t kernel_h,
                              int64_t kernel_w, const std::optional<at::Tensor>& scale, bool flip) {
  check_cuda({grad, values, index, index_map});
  infdiff::check_window_weight_inputs(grad, values, index, index_map, height, width);
  infdiff::check_row_scale(scale, values, values.size(0));
  const c10::cuda::CUDAGuard guard(values.device());
  return conv_weight(grad, values, scale, kernel_h * kernel_w,
                     window_neighbours(index, index_map, height, width, kernel_h, kernel_w, flip));
}

at::Tensor neighbour_table(const at::Tensor& index, const at::Tensor& index_map, int64_t height, int64_t width,
                           int64_t kernel_h, int64_t kernel_w) {
  check_cuda({index, index_map});
  infdiff::check_table_inputs(index, index_map, height, width);
  const c10::cuda::CUDAGuard guard(index.device());
  auto idx = index.to(at::kLong).contiguous();
  auto map = index_map.to(at::kLong).contiguous();
  const int64_t n = idx.size(1), points = idx.size(0) * n, taps = kernel_h * kernel_w;
  const bool small = points < std::numeric_limits<int32_t>::max();
  auto table = at::empty({taps, points}, idx.options().dtype(small ? at::kInt : at::kLong));
  if (points == 0) return table;
  const dim3 grid(ceil_div(points, 256), taps);
  auto stream = c10::cuda::getCurrentCUDAStream();
  INFDIFF_DISPATCH_INDEX(table, [&] {
    neighbour_table_kernel<index_t><<<grid, 256, 0, stream>>>(idx.data_ptr<int64_t>(), map.data_ptr<int64_t>(),
                                                              table.data_ptr<index_t>(), n, points, height, width,
                                                              kernel_h, kernel_w);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return table;
}

}  // namespace infdiff
