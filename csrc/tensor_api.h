// The part of ATen the kernel files use: tensors and their methods, the dtype dispatch, and the four
// factory functions, from PyTorch's per-operator headers.  <torch/extension.h> (autograd, nn, pybind11)
// is left to bindings.cpp alone: parsed by nvcc's host and device passes it made each .cu file take
// ~100 s to compile instead of ~30 s (measured on this project's 2-core machine), and kernel builds
// run at the start of every GPU session.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

#include <string>
#include <type_traits>

namespace infdiff {
namespace detail {

// Error messages are assembled here from text alone, never by streaming a number into an ostream.
// Where torch's libraries carry their own static copy of libstdc++ (the torch 2.11+cu130 wheel on the
// project's H200 machine: our modules linked no libstdc++.so there), an extension's `stream << int64_t`
// looks the stream's locale facets up with the other copy's ids and segfaults; streaming text needs
// no facet and works (seen there: every TORCH_CHECK message with a number crashed, those with only
// text and dtype names did not).
inline void append(std::string& out, const char* text) { out += text; }
inline void append(std::string& out, const std::string& text) { out += text; }
inline void append(std::string& out, at::ScalarType dtype) { out += c10::toString(dtype); }
inline void append(std::string& out, const c10::Device& device) { out += device.str(); }
inline void append(std::string& out, at::IntArrayRef sizes) {
  out += "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  out += "]";
}
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
void append(std::string& out, T number) {
  out += std::to_string(number);  // to_chars-based in libstdc++: no locale
}

template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string out;
  (append(out, parts), ...);
  return out;
}

}  // namespace detail
}  // namespace infdiff

// TORCH_CHECK with the message built by infdiff::detail::message (only on failure, as TORCH_CHECK's own).
#define INFDIFF_CHECK(cond, ...) TORCH_CHECK(cond, ::infdiff::detail::message(__VA_ARGS__))
