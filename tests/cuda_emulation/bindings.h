// The emulator's Python-visible controls, added to the bindings of the one translated file that defines
// the module (the only one that includes this and so parses <torch/extension.h>).
#pragma once

#include <torch/extension.h>

#include "runtime.h"

namespace cuda_emulation {

inline void bind(pybind11::module& m) {
  m.def("set_seed", [](uint64_t seed) { state().seed = seed; }, "seed of the threads' shuffled order");
  m.def("launches", [] { return state().launches; }, "kernel launches emulated so far");
}

}  // namespace cuda_emulation
