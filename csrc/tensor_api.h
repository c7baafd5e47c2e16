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
