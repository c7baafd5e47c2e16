// The CPU kNN window search (knn_ops.h): one task per (batch item, coarse cell), split with
// at::parallel_for.

#include "knn_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "sparse_ops_checks.h"

namespace infdiff {

std::vector<at::Tensor> knn_window(const at::Tensor& index_map, const at::Tensor& coords, const at::Tensor& query,
                                   const at::Tensor& base, int64_t height, int64_t width, int64_t radius, int64_t k) {
  check_knn_inputs(index_map, coords, query, base, k);
  auto map = index_map.to(at::kLong).contiguous();
  auto pts = coords.to(at::kFloat).contiguous();
  auto q = query.to(at::kFloat).contiguous();
  auto bs = base.to(at::kLong).contiguous();
  const int64_t batch = map.size(0), n = pts.size(1), cells = q.size(0), side = 2 * radius + 1;
  const int64_t window = side * side;
  auto dist = at::empty({batch, cells, k}, q.options());
  auto ids = at::empty({batch, cells, k}, bs.options());
  const float bound = static_cast<float>(std::pow((radius + 0.5) / static_cast<double>(std::max(height, width)), 2));
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t* mp = map.data_ptr<int64_t>();
  const float* pp = pts.data_ptr<float>();
  const float* qp = q.data_ptr<float>();
  const int64_t* bp = bs.data_ptr<int64_t>();
  float* dp = dist.data_ptr<float>();
  int64_t* op = ids.data_ptr<int64_t>();
  const float fh = static_cast<float>(height), fw = static_cast<float>(width);
  at::parallel_for(0, batch * cells, 16, [&](int64_t first, int64_t last) {
    std::vector<double> exact(k);
    for (int64_t task = first; task < last; ++task) {
      const int64_t b = task / cells, g = task % cells;
      float* d = dp + task * k;
      int64_t* id = op + task * k;
      std::fill(d, d + k, inf);
      std::fill(id, id + k, int64_t(-1));
      const float qy = qp[2 * g], qx = qp[2 * g + 1];
      const int64_t* map_b = mp + b * height * width;
      bool proven = k <= window;
      if (proven) {
        for (int64_t j = 0; j < window; ++j) {
          const int64_t r = bp[2 * g] + j / side - radius, c = bp[2 * g + 1] + j % side - radius;
          if (r < 0 || r >= height || c < 0 || c >= width) continue;
          const int64_t position = map_b[r * width + c];
          if (position < 0) continue;
          volatile float dy = (static_cast<float>(r) + 0.5f) / fh - qy;  // volatile: no FMA contraction
          volatile float dx = (static_cast<float>(c) + 0.5f) / fw - qx;
          volatile float yy = dy * dy;
          volatile float xx = dx * dx;
          insert_nearest<float>(d, id, k, yy + xx, position);
        }
        proven = d[k - 1] <= bound;
      }
      if (!proven) {
        std::fill(exact.begin(), exact.end(), std::numeric_limits<double>::infinity());
        std::fill(id, id + k, int64_t(-1));
        const float* pb = pp + b * n * 2;
        for (int64_t i = 0; i < n; ++i) {
          const double dy = static_cast<double>(qy) - static_cast<double>(pb[2 * i]);
          const double dx = static_cast<double>(qx) - static_cast<double>(pb[2 * i + 1]);
          volatile double yy = dy * dy;
          volatile double xx = dx * dx;
          insert_nearest<double>(exact.data(), id, k, yy + xx, i);
        }
        for (int64_t i = 0; i < k; ++i) d[i] = static_cast<float>(exact[i]);
      }
    }
  });
  return {dist, ids};
}


}  // namespace infdiff
