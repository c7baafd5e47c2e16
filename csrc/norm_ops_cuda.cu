// CUDA kernels of the modulated layer norm (csrc/norm_ops.h has the equations); fp32, fp16, bf16
// and fp64, accumulating in at::opmath_type (float for the half types).
//
// Forward and grad_x: one warp per row, its lanes striding over the channels (coalesced), the row
// sums reduced with warp shuffles.  grad_scale and grad_shift: a block of 32 channel lanes x
// kRowsPerBlock rows sums a chunk of kChunkRows rows of one batch item into one partial per chunk,
// and the partials are reduced with a deterministic sum (no atomics).

#include "norm_ops.h"

#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace infdiff {
namespace {

constexpr int kLanes = 32;
constexpr int kRowsPerBlock = 8;  // warps per block, one row each at a time
constexpr int64_t kChunkRows = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename acc_t>
__device__ acc_t warp_sum(acc_t value) {
  for (int offset = kLanes / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ scale,
                               const scalar_t* __restrict__ shift, scalar_t* __restrict__ y, acc_t* __restrict__ mean,
                               acc_t* __restrict__ rstd, int64_t rows, int64_t per_item, int64_t channels, acc_t eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (r >= rows) return;  // whole warps leave together: the shuffles below see full warps
  const scalar_t* xr = x + r * channels;
  acc_t sum = 0;
  for (int64_t c = threadIdx.x; c < channels; c += kLanes) sum += static_cast<acc_t>(xr[c]);
  const acc_t mu = warp_sum(sum) / channels;
  acc_t squares = 0;
  for (int64_t c = threadIdx.x; c < channels; c += kLanes) {
    const acc_t d = static_cast<acc_t>(xr[c]) - mu;
    squares += d * d;
  }
  const acc_t inv = rsqrt(warp_sum(squares) / channels + eps);
  const int64_t b = r / per_item;
  const scalar_t* a = scale + b * channels;
  const scalar_t* s = shift + b * channels;
  scalar_t* yr = y + r * channels;
  for (int64_t c = threadIdx.x; c < channels; c += kLanes) {
    yr[c] = static_cast<scalar_t>((static_cast<acc_t>(xr[c]) - mu) * inv * static_cast<acc_t>(a[c]) +
                                  static_cast<acc_t>(s[c]));
  }
  if (threadIdx.x == 0) {
    mean[r] = mu;
    rstd[r] = inv;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void grad_x_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                              const scalar_t* __restrict__ scale, const acc_t* __restrict__ mean,
                              const acc_t* __restrict__ rstd, scalar_t* __restrict__ grad_x, int64_t rows,
                              int64_t per_item, int64_t channels) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (r >= rows) return;
  const scalar_t* gr = grad + r * channels;
  const scalar_t* xr = x + r * channels;
  const scalar_t* a = scale + (r / per_item) * channels;
  const acc_t mu = mean[r], inv = rstd[r];
  acc_t sum_g = 0, sum_gx = 0;
  for (int64_t c = threadIdx.x; c < channels; c += kLanes) {
    const acc_t ga = static_cast<acc_t>(gr[c]) * static_cast<acc_t>(a[c]);
    sum_g += ga;
    sum_gx += ga * (static_cast<acc_t>(xr[c]) - mu) * inv;
  }
  const acc_t mean_g = warp_sum(sum_g) / channels, mean_gx = warp_sum(sum_gx) / channels;
  scalar_t* out = grad_x + r * channels;
  for (int64_t c = threadIdx.x; c < channels; c += kLanes) {
    const acc_t xh = (static_cast<acc_t>(xr[c]) - mu) * inv;
    const acc_t ga = static_cast<acc_t>(gr[c]) * static_cast<acc_t>(a[c]);
    out[c] = static_cast<scalar_t>(inv * (ga - mean_g - xh * mean_gx));
  }
}

// partials (chunks, 2, B, C): chunk k of batch item b sums rows [k * kChunkRows, (k + 1) * kChunkRows) of b.
template <typename scalar_t, typename acc_t>
__global__ void grad_affine_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                   const acc_t* __restrict__ mean, const acc_t* __restrict__ rstd,
                                   acc_t* __restrict__ partials, int64_t batch, int64_t per_item, int64_t channels) {
  __shared__ acc_t shared[2][kRowsPerBlock][kLanes];
  const int64_t chunk = blockIdx.x, b = blockIdx.z;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kLanes + threadIdx.x;
  const int64_t first = chunk * kChunkRows, last = min(per_item, first + kChunkRows);
  acc_t d_scale = 0, d_shift = 0;
  if (c < channels) {
    for (int64_t n = first + threadIdx.y; n < last; n += kRowsPerBlock) {
      const int64_t r = b * per_item + n;
      const acc_t g = static_cast<acc_t>(grad[r * channels + c]);
      d_scale += g * (static_cast<acc_t>(x[r * channels + c]) - mean[r]) * rstd[r];
      d_shift += g;
    }
  }
  shared[0][threadIdx.y][threadIdx.x] = d_scale;
  shared[1][threadIdx.y][threadIdx.x] = d_shift;
  __syncthreads();
  if (threadIdx.y < 2 && c < channels) {
    acc_t total = 0;
    for (int i = 0; i < kRowsPerBlock; ++i) total += shared[threadIdx.y][i][threadIdx.x];
    partials[((chunk * 2 + threadIdx.y) * batch + b) * channels + c] = total;
  }
}

void check_cuda(std::initializer_list<at::Tensor> tensors) {
  for (const auto& t : tensors) INFDIFF_CHECK(t.is_cuda(), "the cuda backend needs CUDA tensors");
}

}  // namespace

std::vector<at::Tensor> modulated_layer_norm(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                             double eps) {
  check_cuda({x, scale, shift});
  const c10::cuda::CUDAGuard guard(x.device());
  auto f = prepare_modulated_norm_forward(x, scale, shift);
  if (f.rows > 0 && f.x.size(2) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.x.scalar_type(), "infdiff_modulated_layer_norm", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const dim3 block(kLanes, kRowsPerBlock);
      auto stream = c10::cuda::getCurrentCUDAStream();
      forward_kernel<scalar_t, acc_t><<<ceil_div(f.rows, kRowsPerBlock), block, 0, stream>>>(
          f.x.data_ptr<scalar_t>(), f.scale.data_ptr<scalar_t>(), f.shift.data_ptr<scalar_t>(),
          f.y.data_ptr<scalar_t>(), f.mean.data_ptr<acc_t>(), f.rstd.data_ptr<acc_t>(), f.rows, f.x.size(1),
          f.x.size(2), static_cast<acc_t>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {f.y, f.mean, f.rstd};
}

std::vector<at::Tensor> modulated_layer_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                      const at::Tensor& scale, const at::Tensor& mean,
                                                      const at::Tensor& rstd) {
  check_cuda({grad, x, scale, mean, rstd});
  check_modulated_norm_backward_inputs(grad, x, scale, mean, rstd);
  const c10::cuda::CUDAGuard guard(x.device());
  auto gc = grad.contiguous(), xc = x.contiguous(), sc = scale.contiguous();
  auto mc = mean.contiguous(), rc = rstd.contiguous();
  const int64_t batch = xc.size(0), per_item = xc.size(1), channels = xc.size(2), rows = batch * per_item;
  const int64_t chunks = std::max<int64_t>(1, ceil_div(per_item, kChunkRows));
  auto grad_x = at::empty_like(xc);
  auto partials = at::zeros({chunks, 2, batch, channels}, xc.options().dtype(opmath_dtype(xc)));
  if (rows > 0 && channels > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, xc.scalar_type(), "infdiff_modulated_layer_norm_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const dim3 block(kLanes, kRowsPerBlock);
          grad_x_kernel<scalar_t, acc_t><<<ceil_div(rows, kRowsPerBlock), block, 0, stream>>>(
              gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), sc.data_ptr<scalar_t>(), mc.data_ptr<acc_t>(),
              rc.data_ptr<acc_t>(), grad_x.data_ptr<scalar_t>(), rows, per_item, channels);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          const dim3 grid(chunks, ceil_div(channels, kLanes), batch);
          grad_affine_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
              gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), mc.data_ptr<acc_t>(), rc.data_ptr<acc_t>(),
              partials.data_ptr<acc_t>(), batch, per_item, channels);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return with_affine_grads(grad_x, partials);
}

}  // namespace infdiff
