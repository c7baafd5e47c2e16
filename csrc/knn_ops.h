// The kNN window search both kernel libraries implement (knn_ops_cpu.cpp, knn_ops_cuda.cu; the
// reference is infdiff/ops/reference_kernels.py's knn_window).
//
// For every coarse-cell centre query[g] and batch item b: the k present fine pixels nearest to it,
// searched in the (2R+1)^2 window around base[g], exact when the k-th distance is within
// bound = ((R + 1/2) / max(H, W))^2 (no pixel outside the window can be nearer); otherwise by an
// exact scan over all N points (in double, as the reference's brute force).  Window distances
// are computed in float32 exactly as the reference computes them (no contraction into FMAs).
#pragma once

#include "tensor_api.h"

#include <vector>

namespace infdiff {

#ifdef __CUDACC__
#define INFDIFF_HOST_DEVICE __host__ __device__
#else
#define INFDIFF_HOST_DEVICE
#endif

// Keep the k smallest (distance, candidate) pairs seen so far, nearest first; a strictly smaller
// distance is needed to move ahead, so among equal distances the earlier candidate wins, exactly
// as the reference's stable sort orders them.  The same code on the CPU and in a CUDA thread.
template <typename dist_t, typename count_t>
INFDIFF_HOST_DEVICE inline void insert_nearest(dist_t* dist, int64_t* ids, count_t k, dist_t d, int64_t id) {
  if (!(d < dist[k - 1])) return;
  count_t i = k - 1;
  while (i > 0 && d < dist[i - 1]) {
    dist[i] = dist[i - 1];
    ids[i] = ids[i - 1];
    --i;
  }
  dist[i] = d;
  ids[i] = id;
}

// [dist^2 (B, G, k) float32, ids (B, G, k) int64], nearest first, for the index map (B, H*W), the
// points' coordinates (B, N, 2), the cell centres query (G, 2) and their pixels base (G, 2).
std::vector<at::Tensor> knn_window(const at::Tensor& index_map, const at::Tensor& coords, const at::Tensor& query,
                                   const at::Tensor& base, int64_t height, int64_t width, int64_t radius, int64_t k);

}  // namespace infdiff
