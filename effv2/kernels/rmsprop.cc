// TF RMSProp's update of its two flat slots in one pass, for MindSpore's AOT custom operators on CPU
// (effv2.training.rmsprop_tf). MindSpore's graph runs it as ~12 element-wise kernels over the
// flat buffers (every parameter of the network, 16 MB for B0, 80 MB for S), each a full read and
// write; this one reads each input once and writes both slots once, on every core of the
// process's affinity (the update runs once per step, so a thread per call costs nothing).
//
// Same values as MindSpore's operators, bit for bit: every product, sum, quotient and square root
// is rounded to float32 in the order of the Python expression. Built without -ffast-math and with
// -ffp-contract=off (no fused multiply-adds), see build.py's EXACT_FLAGS.
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

bool all_float32(int count, const char **dtypes) {
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

int64_t elements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(CPU_COUNT(&set), 1);
  return std::max(static_cast<int>(std::thread::hardware_concurrency()), 1);
}

// fn(begin, end) over [0, n) in one contiguous block per core; small buffers on the calling thread
template <class Fn>
void across_cores(int64_t n, Fn fn) {
  static const int cores = usable_cores();
  const int64_t min_block = 1 << 16;
  const int64_t blocks = std::min<int64_t>(cores, std::max<int64_t>(n / min_block, 1));
  if (blocks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t block = ((n + blocks - 1) / blocks + 15) / 16 * 16;  // whole cache lines per thread
  std::vector<std::thread> workers;
  for (int64_t begin = block; begin < n; begin += block) workers.emplace_back(fn, begin, std::min(begin + block, n));
  fn(int64_t{0}, std::min(block, n));
  for (auto &worker : workers) worker.join();
}

}  // namespace

// params (inputs): grad, mean_square, moment, lr (one value), constants (decay, 1 - decay, momentum,
// eps), and with weight decay also weights and coefficients (one per element); (output): one value,
// set to 0, for the graph to order the parameters' updates after this. The two slots are
// MindSpore Parameters, handed to the kernel as their own memory, and updated there in place: an
// output slot and an Assign would copy each buffer once more per step. With g = grad (+ coefficient
// * weight):
//   mean_square <- mean_square * decay + g * g * (1 - decay)
//   moment      <- moment * momentum + lr * g / sqrt(mean_square + eps)
extern "C" int TFRMSPropUpdate(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if ((nparam != 6 && nparam != 8) || !all_float32(nparam, dtypes)) return 1;
  const bool decayed = nparam == 8;
  const int64_t n = elements(ndims[0], shapes[0]);
  if (elements(ndims[1], shapes[1]) != n || elements(ndims[2], shapes[2]) != n) return 1;
  if (decayed && (elements(ndims[5], shapes[5]) != n || elements(ndims[6], shapes[6]) != n)) return 1;
  if (elements(ndims[3], shapes[3]) != 1 || elements(ndims[4], shapes[4]) != 4) return 1;
  if (elements(ndims[nparam - 1], shapes[nparam - 1]) != 1) return 1;

  const float *grad = static_cast<const float *>(params[0]);
  float *mean_square = static_cast<float *>(params[1]);
  float *moment = static_cast<float *>(params[2]);
  const float lr = *static_cast<const float *>(params[3]);
  const float *constants = static_cast<const float *>(params[4]);
  const float decay = constants[0], one_minus_decay = constants[1], momentum = constants[2], eps = constants[3];
  const float *weights = decayed ? static_cast<const float *>(params[5]) : nullptr;
  const float *coefficients = decayed ? static_cast<const float *>(params[6]) : nullptr;
  *static_cast<float *>(params[nparam - 1]) = 0.0f;

  across_cores(n, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float g = grad[i];
      if (decayed) g = g + coefficients[i] * weights[i];
      const float ms = mean_square[i] * decay + g * g * one_minus_decay;
      mean_square[i] = ms;
      moment[i] = moment[i] * momentum + lr * g / std::sqrt(ms + eps);
    }
  });
  return 0;
}
