// The CUDA kNN window search (knn_ops.h): one thread per (batch item, coarse cell), its k nearest
// kept in registers (k <= kMaxNeighbours).

#include "knn_ops.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <math_constants.h>

#include <algorithm>
#include <cmath>

#include "sparse_ops_checks.h"

namespace infdiff {
namespace {

constexpr int kMaxNeighbours = 32;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One thread per (batch item, coarse cell).  Window distances use round-to-nearest intrinsics so
// nothing is contracted into an FMA, and divide by the grid side as PyTorch's CUDA division by a
// scalar does (times its float reciprocal), so they equal the reference's values on the GPU.
__global__ void knn_window_kernel(const int64_t* __restrict__ index_map, const float* __restrict__ coords,
                                  const float* __restrict__ query, const int64_t* __restrict__ base,
                                  float* __restrict__ dist_out, int64_t* __restrict__ ids_out, int64_t batch,
                                  int64_t n, int64_t cells, int64_t height, int64_t width, int64_t radius, int k,
                                  float bound) {
  const int64_t task = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (task >= batch * cells) return;
  const int64_t b = task / cells, g = task % cells, side = 2 * radius + 1, window = side * side;
  float d[kMaxNeighbours];
  double exact[kMaxNeighbours];
  int64_t id[kMaxNeighbours];
  for (int i = 0; i < k; ++i) {
    d[i] = CUDART_INF_F;
    id[i] = -1;
  }
  const float qy = query[2 * g], qx = query[2 * g + 1];
  const float inv_h = __fdiv_rn(1.0f, static_cast<float>(height)), inv_w = __fdiv_rn(1.0f, static_cast<float>(width));
  const int64_t* map_b = index_map + b * height * width;
  bool proven = k <= window;
  if (proven) {
    for (int64_t j = 0; j < window; ++j) {
      const int64_t r = base[2 * g] + j / side - radius, c = base[2 * g + 1] + j % side - radius;
      if (r < 0 || r >= height || c < 0 || c >= width) continue;
      const int64_t position = map_b[r * width + c];
      if (position < 0) continue;
      const float dy = __fsub_rn(__fmul_rn(__fadd_rn(static_cast<float>(r), 0.5f), inv_h), qy);
      const float dx = __fsub_rn(__fmul_rn(__fadd_rn(static_cast<float>(c), 0.5f), inv_w), qx);
      insert_nearest<float>(d, id, k, __fadd_rn(__fmul_rn(dy, dy), __fmul_rn(dx, dx)), position);
    }
    proven = d[k - 1] <= bound;
  }
  if (!proven) {
    for (int i = 0; i < k; ++i) {
      exact[i] = CUDART_INF;
      id[i] = -1;
    }
    const float* pb = coords + b * n * 2;
    for (int64_t i = 0; i < n; ++i) {
      const double dy = __dsub_rn(static_cast<double>(qy), static_cast<double>(pb[2 * i]));
      const double dx = __dsub_rn(static_cast<double>(qx), static_cast<double>(pb[2 * i + 1]));
      insert_nearest<double>(exact, id, k, __dadd_rn(__dmul_rn(dy, dy), __dmul_rn(dx, dx)), i);
    }
    for (int i = 0; i < k; ++i) d[i] = static_cast<float>(exact[i]);
  }
  for (int i = 0; i < k; ++i) {
    dist_out[task * k + i] = d[i];
    ids_out[task * k + i] = id[i];
  }
}

}  // namespace

std::vector<at::Tensor> knn_window(const at::Tensor& index_map, const at::Tensor& coords, const at::Tensor& query,
                                   const at::Tensor& base, int64_t height, int64_t width, int64_t radius, int64_t k) {
  for (const auto& t : {index_map, coords, query, base}) {
    INFDIFF_CHECK(t.is_cuda(), "the cuda backend needs CUDA tensors");
  }
  check_knn_inputs(index_map, coords, query, base, k);
  INFDIFF_CHECK(k <= kMaxNeighbours, "the cuda kNN kernel handles k <= ", kMaxNeighbours, ", got ", k);
  const c10::cuda::CUDAGuard guard(index_map.device());
  auto map = index_map.to(at::kLong).contiguous();
  auto pts = coords.to(at::kFloat).contiguous();
  auto q = query.to(at::kFloat).contiguous();
  auto bs = base.to(at::kLong).contiguous();
  const int64_t batch = map.size(0), n = pts.size(1), cells = q.size(0);
  auto dist = at::empty({batch, cells, k}, q.options());
  auto ids = at::empty({batch, cells, k}, bs.options());
  const float bound = static_cast<float>(std::pow((radius + 0.5) / static_cast<double>(std::max(height, width)), 2));
  if (batch * cells > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    knn_window_kernel<<<ceil_div(batch * cells, 128), 128, 0, stream>>>(
        map.data_ptr<int64_t>(), pts.data_ptr<float>(), q.data_ptr<float>(), bs.data_ptr<int64_t>(),
        dist.data_ptr<float>(), ids.data_ptr<int64_t>(), batch, n, cells, height, width, radius, static_cast<int>(k),
        bound);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {dist, ids};
}

}  // namespace infdiff
