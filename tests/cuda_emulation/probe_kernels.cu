// Kernels that probe the CUDA emulator (runtime.h): its shuffles and barriers on correct code, and
// the mistakes it claims to catch (a missing __syncthreads, threads at different barriers, a
// shuffle in a partial warp, launch configurations a GPU refuses).  Plain CUDA, translated like csrc's.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

namespace {

// Each thread publishes blockIdx.x * 1000 + t in shared memory and reads its right neighbour's
// entry; without the barrier between the two it may read what an earlier block left there.
__global__ void neighbour_exchange_kernel(int64_t* out, bool synchronise) {
  __shared__ int64_t published[256];
  const int t = threadIdx.x;
  published[t] = blockIdx.x * 1000 + t;
  if (synchronise) __syncthreads();
  out[blockIdx.x * blockDim.x + t] = published[(t + 1) % blockDim.x];
}

// The butterfly sum of the warp's lane numbers (496 in every lane); `leave_early` lets lane 3 return first.
__global__ void warp_sum_kernel(int64_t* out, bool leave_early) {
  if (leave_early && threadIdx.x % 32 == 3) return;
  int64_t value = threadIdx.x % 32;
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  out[threadIdx.x] = value;
}

// Half a warp waits at a shuffle that needs all 32 lanes while the other half waits at __syncthreads:
// a hang on a GPU.
__global__ void mixed_barriers_kernel(int64_t* out) {
  if (threadIdx.x < 16) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int64_t>(threadIdx.x), 1);
  } else {
    __syncthreads();
  }
}

// Thread t copies entry t + 1: the last thread reads one past the end (what AddressSanitizer must report).
__global__ void shifted_copy_kernel(const int64_t* in, int64_t* out, int64_t n) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t < n) out[t] = in[t + 1];
}

// Thread t copies the t-th pair of floats starting at `in` as one 8-byte access, which a GPU only
// performs at an 8-byte aligned address (the undefined behaviour the alignment sanitizer must report).
struct alignas(2 * sizeof(float)) FloatPair {
  float v[2];
};
__global__ void pair_copy_kernel(const float* in, float* out, int64_t pairs) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t < pairs) reinterpret_cast<FloatPair*>(out)[t] = reinterpret_cast<const FloatPair*>(in)[t];
}

__global__ void nothing_kernel() {}

at::Tensor neighbour_exchange(int64_t blocks, int64_t threads, bool synchronise) {
  TORCH_CHECK(threads <= 256, "neighbour_exchange publishes at most 256 entries");
  auto out = at::empty({blocks * threads}, at::kLong);
  neighbour_exchange_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(out.data_ptr<int64_t>(),
                                                                                      synchronise);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor warp_sum(int64_t threads, bool leave_early) {
  auto out = at::full({threads}, -1, at::kLong);
  warp_sum_kernel<<<1, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(out.data_ptr<int64_t>(), leave_early);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void mixed_barriers() {
  auto out = at::empty({32}, at::kLong);
  mixed_barriers_kernel<<<1, 32, 0, c10::cuda::getCurrentCUDAStream()>>>(out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor shifted_copy(const at::Tensor& in) {
  auto out = at::empty_like(in);
  shifted_copy_kernel<<<1, 64, 0, c10::cuda::getCurrentCUDAStream()>>>(in.data_ptr<int64_t>(), out.data_ptr<int64_t>(),
                                                                        in.numel());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor pair_copy(const at::Tensor& in, int64_t offset) {
  TORCH_CHECK(in.numel() >= offset + 2 && in.numel() <= 64 + offset, "pair_copy copies 1 to 32 pairs");
  const int64_t pairs = (in.numel() - offset) / 2;
  auto out = at::empty({2 * pairs}, in.options());
  pair_copy_kernel<<<1, 32, 0, c10::cuda::getCurrentCUDAStream()>>>(in.data_ptr<float>() + offset,
                                                                    out.data_ptr<float>(), pairs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void launch_nothing(std::vector<int64_t> grid, std::vector<int64_t> block, int64_t shared_bytes) {
  const dim3 g(grid.at(0), grid.at(1), grid.at(2)), b(block.at(0), block.at(1), block.at(2));
  nothing_kernel<<<g, b, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>();
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("neighbour_exchange", &neighbour_exchange, "each thread's right neighbour's entry, via shared memory");
  m.def("warp_sum", &warp_sum, "every lane's butterfly sum of the lane numbers");
  m.def("mixed_barriers", &mixed_barriers, "half a warp at a shuffle, the other half at __syncthreads");
  m.def("shifted_copy", &shifted_copy, "entry t + 1 of a (<= 64) int64 tensor in entry t: reads one past the end");
  m.def("pair_copy", &pair_copy, "the float pairs of a float32 tensor from element `offset` on, 8 bytes at a time");
  m.def("launch_nothing", &launch_nothing, "an empty kernel launched with the given configuration");
}
