// Enough of the CUDA execution model, on the CPU, to run csrc/*.cu's kernels on CPU tensors in CI,
// where there is no GPU (tests/cuda_emulation/__init__.py rewrites each `kernel<<<grid, block>>>(args)`
// into a Launch of this file).
//
// A launch runs its blocks one after another; a block's threads are fibers (ucontext) on one OS
// thread, so every thread of a block can wait for the others:
//   - __syncthreads() suspends a thread until every thread of its block that has not returned waits
//     there too;
//   - __shfl_xor_sync(mask, v, m) exchanges v within the warp (32 consecutive threads), after all 32
//     lanes have arrived, and refuses a partial mask, a partial warp or a warp some lanes have left;
//   - threads waiting at different barriers are a deadlock, reported instead of hanging.
// Between barriers the threads run in an order shuffled anew each time (seeded: set_seed), so a
// read of shared memory that lacks its __syncthreads sees another order's data and fails the tests.
// __shared__ arrays become function statics: one per kernel instantiation, enough because only one
// block runs at a time.  Launch configurations are checked against the GPU's limits (dimensions >= 1,
// grid.y and grid.z <= 65535, <= 1024 threads, <= 48 KiB of dynamic shared memory) and a dimension that
// a dim3 would truncate is an error, not a silent wrap.  Arithmetic is the CPU's IEEE arithmetic
// with no contraction (-ffp-contract=off), so the round-to-nearest intrinsics are the plain operators.
//
// Accesses outside a tensor's memory, and vector accesses off their alignment, are caught by the
// sanitized build (AddressSanitizer, which needs the annotated stack switches below, and UBSan's
// alignment check); a wrong index inside a tensor reads another row and fails the tests' comparisons.
// What it cannot show: speed, the memory model beyond barriers (no concurrent blocks, no atomics), and
// the device's transcendental approximations (rsqrt here is exact).
#pragma once

#include <ucontext.h>

#include "tensor_api.h"  // csrc's light ATen headers: the kernels' own translation units stay as cheap to build

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)  // an occupancy hint to ptxas: nothing for the emulator
#define __shared__ static
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (false)
#define CUDART_INF_F (std::numeric_limits<float>::infinity())
#define CUDART_INF (std::numeric_limits<double>::infinity())

struct uint3 {
  unsigned int x = 0, y = 0, z = 0;
};

// A launch dimension; a value a GPU's unsigned int would truncate is refused.
struct dim3 {
  unsigned int x, y, z;
  dim3(int64_t x_ = 1, int64_t y_ = 1, int64_t z_ = 1) : x(narrow(x_)), y(narrow(y_)), z(narrow(z_)) {}
  static unsigned int narrow(int64_t v) {
    TORCH_CHECK(v >= 0 && v <= static_cast<int64_t>(UINT_MAX), "emulated CUDA: a launch dimension of ", v,
                " does not fit dim3's unsigned int (a GPU would silently truncate it)");
    return static_cast<unsigned int>(v);
  }
};

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace c10::cuda {
struct CUDAStream {};
inline CUDAStream getCurrentCUDAStream() { return {}; }
struct CUDAGuard {
  explicit CUDAGuard(c10::Device device) {
    TORCH_CHECK(device.is_cpu(), "emulated CUDA runs on CPU tensors, got ", device);
  }
};
}  // namespace c10::cuda

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
inline T max(T a, T b) {
  return a < b ? b : a;
}
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }

namespace cuda_emulation {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int64_t kMaxThreads = 1024, kMaxGridYZ = 65535, kMaxSharedBytes = 48 * 1024;

enum class Wait { kRunnable, kSyncthreads, kWarp, kDone };

struct Thread {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  uint3 index;
  Wait wait = Wait::kRunnable;
  std::array<unsigned char, 16> offered;  // this lane's value in the current shuffle
};

struct Block {
  std::vector<Thread> threads;
  ucontext_t scheduler;
  const void* scheduler_stack = nullptr;  // its bounds, for AddressSanitizer's stack switches
  size_t scheduler_stack_bytes = 0;
  const std::function<void()>* kernel = nullptr;
  int current = -1;
  std::exception_ptr error;
};

struct State {
  Block* block = nullptr;
  uint64_t seed = 0, launches = 0;
};
inline State& state() {
  static State s;
  return s;
}

// AddressSanitizer (the sanitized build, tests/cuda_emulation's `sanitize`) must be told of every
// switch to another stack, or it takes the other stack's frames for overflows.
#if defined(__SANITIZE_ADDRESS__)
inline void leaving(void** fake_stack, const void* bottom, size_t bytes) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, bytes);
}
inline void arrived(void* fake_stack, const void** bottom, size_t* bytes) {
  __sanitizer_finish_switch_fiber(fake_stack, bottom, bytes);
}
#else
inline void leaving(void**, const void*, size_t) {}
inline void arrived(void*, const void**, size_t*) {}
#endif

inline void thread_main() {
  Block& block = *state().block;
  arrived(nullptr, &block.scheduler_stack, &block.scheduler_stack_bytes);
  try {
    (*block.kernel)();
  } catch (...) {
    if (!block.error) block.error = std::current_exception();
  }
  block.threads[block.current].wait = Wait::kDone;
  leaving(nullptr, block.scheduler_stack, block.scheduler_stack_bytes);
}  // falls through to uc_link: the scheduler

inline Thread& this_thread() {
  TORCH_CHECK(state().block != nullptr, "emulated CUDA: a barrier or shuffle outside a kernel");
  return state().block->threads[state().block->current];
}

inline void suspend(Wait why) {
  Thread& me = this_thread();
  Block& block = *state().block;
  me.wait = why;
  void* fake_stack = nullptr;
  leaving(&fake_stack, block.scheduler_stack, block.scheduler_stack_bytes);
  swapcontext(&me.context, &block.scheduler);
  arrived(fake_stack, nullptr, nullptr);
}

// Wakes the threads whose barrier is complete; false when every thread has returned.
inline bool release(Block& block) {
  const int n = static_cast<int>(block.threads.size());
  bool live = false, woken = false, all_at_syncthreads = true;
  for (int first = 0; first < n; first += warpSize) {
    int present = 0, at_shuffle = 0;
    for (int t = first; t < std::min(n, first + warpSize); ++t) {
      const Wait w = block.threads[t].wait;
      present += w != Wait::kDone;
      at_shuffle += w == Wait::kWarp;
      all_at_syncthreads &= w == Wait::kDone || w == Wait::kSyncthreads;
    }
    live |= present > 0;
    if (present == 0 || at_shuffle != present) continue;
    TORCH_CHECK(present == warpSize, "emulated CUDA: a warp shuffle in block (", blockIdx.x, ", ", blockIdx.y, ", ",
                blockIdx.z, ") warp ", first / warpSize, " with ", present, " of 32 lanes present (a partial warp, or ",
                "lanes that returned early)");
    for (int t = first; t < first + warpSize; ++t) block.threads[t].wait = Wait::kRunnable;
    woken = true;
  }
  if (woken || !live) return live;
  TORCH_CHECK(all_at_syncthreads, "emulated CUDA: deadlock in block (", blockIdx.x, ", ", blockIdx.y, ", ",
              blockIdx.z, "): some threads wait at __syncthreads, others at a warp shuffle");
  for (auto& t : block.threads) {
    if (t.wait == Wait::kSyncthreads) t.wait = Wait::kRunnable;
  }
  return true;
}

inline void run_block(Block& block, std::mt19937_64& rng) {
  for (auto& t : block.threads) {
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = t.stack.get();
    t.context.uc_stack.ss_size = kStackBytes;
    t.context.uc_link = &block.scheduler;
    makecontext(&t.context, thread_main, 0);
    t.wait = Wait::kRunnable;
  }
  std::vector<int> order(block.threads.size());
  std::iota(order.begin(), order.end(), 0);
  do {
    std::shuffle(order.begin(), order.end(), rng);
    for (const int t : order) {
      if (block.threads[t].wait != Wait::kRunnable) continue;
      block.current = t;
      threadIdx = block.threads[t].index;
      void* fake_stack = nullptr;
      leaving(&fake_stack, block.threads[t].stack.get(), kStackBytes);
      swapcontext(&block.scheduler, &block.threads[t].context);
      arrived(fake_stack, nullptr, nullptr);
      if (block.error) std::rethrow_exception(block.error);
    }
  } while (release(block));
}

// `Launch(grid, block, shared_bytes, stream).run(body)` runs body() as every thread of the grid.
class Launch {
 public:
  Launch(dim3 grid, dim3 block, int64_t shared_bytes = 0, c10::cuda::CUDAStream = {}) : grid_(grid), block_(block) {
    TORCH_CHECK(grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && block.x >= 1 && block.y >= 1 && block.z >= 1,
                "emulated CUDA: invalid configuration argument (a zero grid or block dimension: grid ", grid.x, "x",
                grid.y, "x", grid.z, ", block ", block.x, "x", block.y, "x", block.z, ")");
    TORCH_CHECK(grid.x <= static_cast<int64_t>(INT_MAX) && grid.y <= kMaxGridYZ && grid.z <= kMaxGridYZ,
                "emulated CUDA: grid ", grid.x, "x", grid.y, "x", grid.z, " exceeds the limits (2^31-1, 65535, 65535)");
    TORCH_CHECK(static_cast<int64_t>(block.x) * block.y * block.z <= kMaxThreads && block.z <= 64,
                "emulated CUDA: a block of ", block.x, "x", block.y, "x", block.z, " threads exceeds 1024 (or z > 64)");
    TORCH_CHECK(shared_bytes >= 0 && shared_bytes <= kMaxSharedBytes, "emulated CUDA: ", shared_bytes,
                " bytes of dynamic shared memory exceed 48 KiB");
  }

  void run(const std::function<void()>& body) {
    TORCH_CHECK(state().block == nullptr, "emulated CUDA: a launch inside a kernel");
    Block block;
    block.kernel = &body;
    const int64_t size = static_cast<int64_t>(block_.x) * block_.y * block_.z;
    block.threads.resize(size);
    for (int64_t t = 0; t < size; ++t) {
      block.threads[t].index = {static_cast<unsigned>(t % block_.x), static_cast<unsigned>(t / block_.x % block_.y),
                                static_cast<unsigned>(t / (static_cast<int64_t>(block_.x) * block_.y))};
      block.threads[t].stack.reset(new char[kStackBytes]);
    }
    std::mt19937_64 rng(state().seed * 0x9E3779B97F4A7C15ull + state().launches++);
    gridDim = grid_;
    blockDim = block_;
    state().block = &block;
    struct Reset {
      ~Reset() { state().block = nullptr; }
    } reset;
    for (unsigned z = 0; z < grid_.z; ++z) {
      for (unsigned y = 0; y < grid_.y; ++y) {
        for (unsigned x = 0; x < grid_.x; ++x) {
          blockIdx = {x, y, z};
          run_block(block, rng);
        }
      }
    }
  }

 private:
  dim3 grid_, block_;
};

}  // namespace cuda_emulation

inline void __syncthreads() { cuda_emulation::suspend(cuda_emulation::Wait::kSyncthreads); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize) {
  static_assert(sizeof(T) <= 16, "emulated shuffles carry at most 16 bytes");
  TORCH_CHECK(mask == 0xffffffffu && width == warpSize && lane_mask >= 0 && lane_mask < warpSize,
              "emulated CUDA: only full-warp xor shuffles are emulated (mask ", mask, ", lane mask ", lane_mask,
              ", width ", width, ")");
  cuda_emulation::Thread& me = cuda_emulation::this_thread();
  std::memcpy(me.offered.data(), &value, sizeof(T));
  cuda_emulation::suspend(cuda_emulation::Wait::kWarp);  // every lane has offered
  const auto& block = *cuda_emulation::state().block;
  T other;
  std::memcpy(&other, block.threads[block.current ^ lane_mask].offered.data(), sizeof(T));
  cuda_emulation::suspend(cuda_emulation::Wait::kWarp);  // every lane has read before any offers again
  return other;
}
