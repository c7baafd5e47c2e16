// The window lookup's convolution and weight gradient computed tile by tile from shared memory (the kernel
// candidate "tiled_window": benchmarks/kernel_candidates.py inserts this into a copy of
// csrc/sparse_ops_cuda.cu, inside its anonymous namespace, and routes window_conv and window_conv_weight here).
//
// Why: at a quarter of the pixels each point gathers about k^2/4 neighbour rows, each row is gathered by
// as many points, and csrc's gather reads every one of them from L2 (a direct gather's traffic is about
// k^2 d times the compulsory bytes: benchmarks/sparse_kernels.py's gathered_bytes).  Here a block loads a
// tile's halo once (side kSide, one 32-channel slice: every present row in it read once, ids and scales
// beside it), then every point of the tile's interior sums its taps from shared memory.  The image's
// index map gives a tile's points directly, so nothing per tile is stored or sorted.  The forward sums
// its taps in csrc's order with csrc's arithmetic, so its outputs are the same bits; the weight gradient
// sums in another fixed order (per block, tile, point).

constexpr int kTileWarps = 8;             // warps of a tiled block; a lane is a channel of the slice
constexpr int kMinTile = 4;               // the smallest interior side worth a tile, else csrc's gather
constexpr int kTilesPerWeightBlock = 4;   // tiles one weight-gradient block sums before writing its partial
constexpr int kMaxTapsPerWarp = 16;       // ceil(121 / kTileWarps): the weight kernel takes up to 121 taps

// The halo's side for a dtype: one 32-channel slice, with its rows' ids and scales, in ~35 KiB of static
// shared memory (of the 48 a block may hold).
template <typename scalar_t>
constexpr int halo_side() {
  return sizeof(scalar_t) <= 2 ? 22 : sizeof(scalar_t) == 4 ? 16 : 11;
}

// The tiling of a (B, height, width) batch for a kernel: interiors of tile_h x tile_w pixels, so that
// with the kernel's reach each way a tile's halo is kSide x kSide.
struct TileGrid {
  int64_t n, batch;
  int32_t height, width, kernel_h, kernel_w, tile_h, tile_w, tiles_w, tiles_per_image;
  __host__ __device__ int64_t tiles() const { return batch * tiles_per_image; }
  __device__ int taps() const { return kernel_h * kernel_w; }
  // the halo slot of interior pixel u, and of tap j's neighbour relative to it (flip: the negated offset)
  __device__ int centre(int u, int side) const { return (u / tile_w + kernel_h / 2) * side + u % tile_w + kernel_w / 2; }
  __device__ int offset(int j, int side, bool flip) const {
    const int o = (j / kernel_w - kernel_h / 2) * side + j % kernel_w - kernel_w / 2;
    return flip ? -o : o;
  }
};

template <typename scalar_t, typename acc_t, int kSide>
struct HaloSlice {
  scalar_t x[kSide * kSide][kLanes];  // the slice's values at each halo pixel, 0 where no point is
  int32_t row[kSide * kSide];         // the value row there (b * n + position), -1 where none or off the grid
  acc_t scale[kSide * kSide];         // the gathered rows' scale (flip), else 1
};

// Every warp loads its share of tile `tile`'s halo: lane = channel c of the slice.
template <typename scalar_t, typename acc_t, int kSide>
__device__ void load_halo(HaloSlice<scalar_t, acc_t, kSide>& halo, const scalar_t* __restrict__ values,
                          const acc_t* __restrict__ gathered_scale, const int32_t* __restrict__ index_map,
                          const TileGrid& grid, int64_t tile, int64_t c, int64_t channels) {
  const int64_t b = tile / grid.tiles_per_image, t = tile % grid.tiles_per_image;
  const int64_t top = t / grid.tiles_w * grid.tile_h - grid.kernel_h / 2;
  const int64_t left = t % grid.tiles_w * grid.tile_w - grid.kernel_w / 2;
  for (int i = threadIdx.y; i < kSide * kSide; i += kTileWarps) {
    const int64_t r = top + i / kSide, col = left + i % kSide;
    int32_t q = -1;
    if (r >= 0 && r < grid.height && col >= 0 && col < grid.width) {
      const int32_t position = index_map[(b * grid.height + r) * grid.width + col];
      if (position >= 0) q = static_cast<int32_t>(b * grid.n + position);
    }
    halo.x[i][threadIdx.x] = q >= 0 && c < channels ? values[q * channels + c] : scalar_t(0);
    if (threadIdx.x == 0) {
      halo.row[i] = q;
      halo.scale[i] = q >= 0 && gathered_scale != nullptr ? gathered_scale[q] : acc_t(1);
    }
  }
}

// blockIdx.x: a tile; blockIdx.z: a 32-channel slice.  Warp y computes interior pixels y, y + 8, ...
template <typename scalar_t, int kSide, typename acc_t = at::opmath_type<scalar_t>>
__global__ void tiled_window_conv_kernel(const scalar_t* __restrict__ values, const scalar_t* __restrict__ weight_kc,
                                         const acc_t* __restrict__ scale, const int32_t* __restrict__ index_map,
                                         scalar_t* __restrict__ out, const TileGrid grid, int64_t channels,
                                         bool flip) {
  __shared__ HaloSlice<scalar_t, acc_t, kSide> halo;
  const int64_t c = blockIdx.z * static_cast<int64_t>(kLanes) + threadIdx.x;
  load_halo(halo, values, flip ? scale : nullptr, index_map, grid, blockIdx.x, c, channels);
  __syncthreads();
  if (c >= channels) return;
  const int taps = grid.taps();
  for (int u = threadIdx.y; u < grid.tile_h * grid.tile_w; u += kTileWarps) {
    const int centre = grid.centre(u, kSide);
    const int32_t p = halo.row[centre];
    if (p < 0) continue;  // no point at this pixel (or the pixel lies off the grid)
    acc_t acc = 0;
    for (int j = 0; j < taps; ++j) {
      const int i = centre + grid.offset(j, kSide, flip);
      if (halo.row[i] < 0) continue;
      acc += static_cast<acc_t>(weight_kc[j * channels + c]) *
             (static_cast<acc_t>(halo.x[i][threadIdx.x]) * halo.scale[i]);
    }
    out[p * channels + c] = static_cast<scalar_t>(acc * (scale != nullptr && !flip ? scale[p] : acc_t(1)));
  }
}

// blockIdx.x: kTilesPerWeightBlock consecutive tiles; blockIdx.z: a 32-channel slice.  Warp y keeps the
// sums of taps y, y + 8, ... in registers over every point of its tiles, then writes one partial per
// (block, tap, channel) for reduce_weight_partials_kernel.
template <typename scalar_t, int kSide, typename acc_t = at::opmath_type<scalar_t>>
__global__ void tiled_window_weight_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ values,
                                           const acc_t* __restrict__ scale, const int32_t* __restrict__ index_map,
                                           acc_t* __restrict__ partials, const TileGrid grid, int64_t channels,
                                           bool flip) {
  __shared__ HaloSlice<scalar_t, acc_t, kSide> halo;
  const int64_t c = blockIdx.z * static_cast<int64_t>(kLanes) + threadIdx.x;
  const int taps = grid.taps();
  acc_t acc[kMaxTapsPerWarp];
#pragma unroll
  for (int t = 0; t < kMaxTapsPerWarp; ++t) acc[t] = 0;
  const int64_t first = blockIdx.x * static_cast<int64_t>(kTilesPerWeightBlock);
  const int64_t last = min(grid.tiles(), first + kTilesPerWeightBlock);
  for (int64_t tile = first; tile < last; ++tile) {
    __syncthreads();  // every warp is done with the previous tile's halo
    load_halo(halo, values, flip ? scale : nullptr, index_map, grid, tile, c, channels);
    __syncthreads();
    if (c >= channels) continue;  // still at every barrier: the trip count is the block's
    for (int u = 0; u < grid.tile_h * grid.tile_w; ++u) {
      const int centre = grid.centre(u, kSide);
      const int32_t p = halo.row[centre];
      if (p < 0) continue;
      const acc_t g = static_cast<acc_t>(grad[p * channels + c]) * (scale != nullptr && !flip ? scale[p] : acc_t(1));
#pragma unroll
      for (int t = 0; t < kMaxTapsPerWarp; ++t) {  // fixed trip count, so acc stays in registers
        const int j = threadIdx.y + t * kTileWarps;
        if (j >= taps) continue;
        const int i = centre + grid.offset(j, kSide, flip);
        if (halo.row[i] >= 0) acc[t] += g * (static_cast<acc_t>(halo.x[i][threadIdx.x]) * halo.scale[i]);
      }
    }
  }
  if (c >= channels) return;
#pragma unroll
  for (int t = 0; t < kMaxTapsPerWarp; ++t) {
    const int j = threadIdx.y + t * kTileWarps;
    if (j < taps) partials[(blockIdx.x * static_cast<int64_t>(taps) + j) * channels + c] = acc[t];
  }
}

// The tiling for a dtype, or nothing where the kernel leaves the halo too small an interior (csrc's gather then).
template <typename scalar_t>
std::optional<TileGrid> tile_grid(const at::Tensor& index, int64_t height, int64_t width, int64_t kernel_h,
                                  int64_t kernel_w) {
  const int64_t tile_h = halo_side<scalar_t>() - kernel_h + 1, tile_w = halo_side<scalar_t>() - kernel_w + 1;
  if (tile_h < kMinTile || tile_w < kMinTile) return std::nullopt;
  const int64_t tiles_w = ceil_div(width, tile_w), tiles_h = ceil_div(height, tile_h);
  return TileGrid{index.size(1),
                  index.size(0),
                  static_cast<int32_t>(height),
                  static_cast<int32_t>(width),
                  static_cast<int32_t>(kernel_h),
                  static_cast<int32_t>(kernel_w),
                  static_cast<int32_t>(tile_h),
                  static_cast<int32_t>(tile_w),
                  static_cast<int32_t>(tiles_w),
                  static_cast<int32_t>(tiles_w * tiles_h)};
}

// window_conv by tiles, or nothing where the kernel size does not suit them (csrc's gather kernel then).
std::optional<at::Tensor> tiled_window_conv(const at::Tensor& values, const at::Tensor& weight,
                                            const std::optional<at::Tensor>& scale, const at::Tensor& index,
                                            const at::Tensor& index_map, int64_t height, int64_t width,
                                            int64_t kernel_h, int64_t kernel_w, bool flip) {
  INFDIFF_CHECK(index.numel() < std::numeric_limits<int32_t>::max(), "the window convolution needs B*N < 2^31 points");
  std::optional<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "infdiff_tiled_window_conv", [&] {
    const auto grid = tile_grid<scalar_t>(index, height, width, kernel_h, kernel_w);
    if (!grid) return;
    auto v = values.contiguous();
    auto w = weight.t().contiguous();  // (K, C)
    auto map = index_map.contiguous();
    at::Tensor s;
    const auto* scale_data = infdiff::row_scale_data<at::opmath_type<scalar_t>>(scale, s);
    const int64_t channels = v.size(1);
    out = at::empty({index.numel(), channels}, v.options());
    if (index.numel() == 0 || channels == 0) return;
    const dim3 blocks(grid->tiles(), 1, ceil_div(channels, kLanes)), threads(kLanes, kTileWarps);
    tiled_window_conv_kernel<scalar_t, halo_side<scalar_t>()><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        v.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), scale_data, map.data_ptr<int32_t>(), out->data_ptr<scalar_t>(),
        *grid, channels, flip);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// window_conv_weight by tiles, or nothing where the kernel size does not suit them.
std::optional<at::Tensor> tiled_window_weight(const at::Tensor& grad, const at::Tensor& values,
                                              const std::optional<at::Tensor>& scale, const at::Tensor& index,
                                              const at::Tensor& index_map, int64_t height, int64_t width,
                                              int64_t kernel_h, int64_t kernel_w, bool flip) {
  INFDIFF_CHECK(index.numel() < std::numeric_limits<int32_t>::max(), "the window convolution needs B*N < 2^31 points");
  const int64_t taps = kernel_h * kernel_w, channels = values.size(1);
  if (taps > kMaxTapsPerWarp * kTileWarps) return std::nullopt;
  std::optional<at::Tensor> grad_weight;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "infdiff_tiled_window_weight", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto grid = tile_grid<scalar_t>(index, height, width, kernel_h, kernel_w);
    if (!grid) return;
    if (index.numel() == 0 || channels == 0) {
      grad_weight = at::zeros({channels, taps}, values.options());  // empty sums
      return;
    }
    auto g = grad.contiguous();
    auto v = values.contiguous();
    auto map = index_map.contiguous();
    at::Tensor s;
    const auto* scale_data = infdiff::row_scale_data<acc_t>(scale, s);
    const int64_t chunks = ceil_div(grid->tiles(), kTilesPerWeightBlock);
    // every (block, tap, channel) partial is written, so they need no zero fill
    auto partials = at::empty({chunks, taps, channels}, v.options().dtype(infdiff::opmath_dtype(v)));
    grad_weight = at::empty({channels, taps}, v.options());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const dim3 blocks(chunks, 1, ceil_div(channels, kLanes)), threads(kLanes, kTileWarps);
    tiled_window_weight_kernel<scalar_t, halo_side<scalar_t>()><<<blocks, threads, 0, stream>>>(
        g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), scale_data, map.data_ptr<int32_t>(), partials.data_ptr<acc_t>(),
        *grid, channels, flip);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const dim3 reduce_grid(ceil_div(taps * channels, kLanes)), reduce_block(kLanes, kReduceWarps);
    reduce_weight_partials_kernel<<<reduce_grid, reduce_block, 0, stream>>>(
        partials.data_ptr<acc_t>(), grad_weight->data_ptr<scalar_t>(), chunks, taps, channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_weight;
}

