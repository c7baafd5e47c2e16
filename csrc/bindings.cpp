// The Python module of a kernel library: the same bindings for the CPU and the CUDA build, each
// linking the definitions of its own backend files (sparse_ops.h, knn_ops.h, norm_ops.h), and the
// differentiable forms of its operators for eager calls (autograd_ops.h).
#include <torch/extension.h>

#include "autograd_ops.h"
#include "knn_ops.h"
#include "norm_ops.h"
#include "sparse_ops.h"

// An ahead-of-time build (setup.py) defines the hash of the sources it compiles, which the module keeps as
// source_key: infdiff/ops/extension.py loads it only while csrc/ still holds those sources.
#define INFDIFF_STRINGIFY(x) #x
#define INFDIFF_STRING(x) INFDIFF_STRINGIFY(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gather_conv", &infdiff::gather_conv,
        "depthwise gather convolution over a neighbour table (flip: its transpose)");
  m.def("gather_conv_weight", &infdiff::gather_conv_weight,
        "gradient of the gather convolution with respect to its weight");
  m.def("window_conv", &infdiff::window_conv, "the gather convolution with neighbours looked up in the index map");
  m.def("window_conv_weight", &infdiff::window_conv_weight,
        "gradient of the window convolution with respect to its weight");
  m.def("neighbour_table", &infdiff::neighbour_table, "neighbour table of sparse pixels for a kernel window");
  m.def("knn_window", &infdiff::knn_window, "k nearest present pixels to each coarse-cell centre");
  m.def("modulated_layer_norm", &infdiff::modulated_layer_norm, "layer norm with a per-sample scale and shift");
  m.def("modulated_layer_norm_backward", &infdiff::modulated_layer_norm_backward,
        "gradients of the modulated layer norm in x, scale and shift");
  m.def("gather_conv_autograd", &infdiff::eager::gather_conv,
        "gather_conv under autograd in C++ (backward: the flipped convolution and gather_conv_weight)");
  m.def("window_conv_autograd", &infdiff::eager::window_conv, "window_conv under autograd in C++");
  m.def("modulated_layer_norm_autograd", &infdiff::eager::modulated_layer_norm,
        "modulated_layer_norm under autograd in C++ (the statistics not differentiable)");
#ifdef INFDIFF_SOURCE_KEY
  m.attr("source_key") = INFDIFF_STRING(INFDIFF_SOURCE_KEY);
#endif
}
