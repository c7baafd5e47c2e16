// CPU kernels of the modulated layer norm (csrc/norm_ops.h has the equations).  Rows are split
// with at::parallel_for; within a row the channel loops are contiguous and vectorise.  The
// backward writes grad_x row by row and adds each row's share of grad_scale and grad_shift to the
// running thread's own (B, C) double partial sums, which are then reduced in a fixed order.

#include "norm_ops.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace infdiff {
namespace {

constexpr int64_t kRowGrain = 16;

template <typename scalar_t>
void forward_impl(const scalar_t* x, const scalar_t* scale, const scalar_t* shift, scalar_t* y,
                  at::opmath_type<scalar_t>* mean, at::opmath_type<scalar_t>* rstd, int64_t rows, int64_t per_item,
                  int64_t channels, double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, rows, kRowGrain, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const scalar_t* xr = x + r * channels;
      const int64_t b = r / per_item;
      acc_t sum = 0;
      for (int64_t c = 0; c < channels; ++c) sum += static_cast<acc_t>(xr[c]);
      const acc_t mu = sum / channels;
      acc_t squares = 0;  // two passes over the row (it is in cache): no cancellation in E[x^2] - E[x]^2
      for (int64_t c = 0; c < channels; ++c) {
        const acc_t d = static_cast<acc_t>(xr[c]) - mu;
        squares += d * d;
      }
      const acc_t inv = acc_t(1) / std::sqrt(squares / channels + static_cast<acc_t>(eps));
      const scalar_t* a = scale + b * channels;
      const scalar_t* s = shift + b * channels;
      scalar_t* yr = y + r * channels;
      for (int64_t c = 0; c < channels; ++c) {
        yr[c] = static_cast<scalar_t>((static_cast<acc_t>(xr[c]) - mu) * inv * static_cast<acc_t>(a[c]) +
                                      static_cast<acc_t>(s[c]));
      }
      mean[r] = mu;
      rstd[r] = inv;
    }
  });
}

template <typename scalar_t>
void backward_impl(const scalar_t* grad, const scalar_t* x, const scalar_t* scale,
                   const at::opmath_type<scalar_t>* mean, const at::opmath_type<scalar_t>* rstd, scalar_t* grad_x,
                   double* partials, int64_t rows, int64_t batch, int64_t per_item, int64_t channels) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t slice = 2 * batch * channels;  // one thread's grad_scale and grad_shift partial sums
  at::parallel_for(0, rows, kRowGrain, [&](int64_t first, int64_t last) {
    double* mine = partials + at::get_thread_num() * slice;
    for (int64_t r = first; r < last; ++r) {
      const int64_t b = r / per_item;
      const scalar_t* gr = grad + r * channels;
      const scalar_t* xr = x + r * channels;
      const scalar_t* a = scale + b * channels;
      const acc_t mu = mean[r], inv = rstd[r];
      double* d_scale = mine + b * channels;
      double* d_shift = mine + batch * channels + b * channels;
      acc_t sum_g = 0, sum_gx = 0;
      for (int64_t c = 0; c < channels; ++c) {
        const acc_t g = static_cast<acc_t>(gr[c]), xh = (static_cast<acc_t>(xr[c]) - mu) * inv;
        const acc_t ga = g * static_cast<acc_t>(a[c]);
        sum_g += ga;
        sum_gx += ga * xh;
        d_scale[c] += static_cast<double>(g * xh);
        d_shift[c] += static_cast<double>(g);
      }
      const acc_t mean_g = sum_g / channels, mean_gx = sum_gx / channels;
      scalar_t* out = grad_x + r * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const acc_t xh = (static_cast<acc_t>(xr[c]) - mu) * inv;
        const acc_t ga = static_cast<acc_t>(gr[c]) * static_cast<acc_t>(a[c]);
        out[c] = static_cast<scalar_t>(inv * (ga - mean_g - xh * mean_gx));
      }
    }
  });
}

void check_cpu(std::initializer_list<at::Tensor> tensors) {
  for (const auto& t : tensors) INFDIFF_CHECK(t.device().is_cpu(), "the cpp backend needs CPU tensors");
}

}  // namespace

std::vector<at::Tensor> modulated_layer_norm(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                             double eps) {
  check_cpu({x, scale, shift});
  auto f = prepare_modulated_norm_forward(x, scale, shift);
  if (f.rows > 0 && f.x.size(2) > 0) {
    AT_DISPATCH_FLOATING_TYPES(f.x.scalar_type(), "infdiff_modulated_layer_norm", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      forward_impl<scalar_t>(f.x.data_ptr<scalar_t>(), f.scale.data_ptr<scalar_t>(), f.shift.data_ptr<scalar_t>(),
                             f.y.data_ptr<scalar_t>(), f.mean.data_ptr<acc_t>(), f.rstd.data_ptr<acc_t>(), f.rows,
                             f.x.size(1), f.x.size(2), eps);
    });
  }
  return {f.y, f.mean, f.rstd};
}

std::vector<at::Tensor> modulated_layer_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                      const at::Tensor& scale, const at::Tensor& mean,
                                                      const at::Tensor& rstd) {
  check_cpu({grad, x, scale, mean, rstd});
  check_modulated_norm_backward_inputs(grad, x, scale, mean, rstd);
  auto gc = grad.contiguous(), xc = x.contiguous(), sc = scale.contiguous();
  auto mc = mean.contiguous(), rc = rstd.contiguous();
  const int64_t batch = xc.size(0), rows = batch * xc.size(1), channels = xc.size(2);
  auto grad_x = at::empty_like(xc);
  auto partials = at::zeros({at::get_num_threads(), 2, batch, channels}, xc.options().dtype(at::kDouble));
  if (rows > 0 && channels > 0) {
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "infdiff_modulated_layer_norm_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_impl<scalar_t>(gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), sc.data_ptr<scalar_t>(),
                              mc.data_ptr<acc_t>(), rc.data_ptr<acc_t>(), grad_x.data_ptr<scalar_t>(),
                              partials.data_ptr<double>(), rows, batch, xc.size(1), channels);
    });
  }
  return with_affine_grads(grad_x, partials);
}

}  // namespace infdiff
