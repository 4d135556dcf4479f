// TF RMSProp's whole step in one pass, for MindSpore's AOT custom operators on CPU
// (effv2.training.rmsprop_tf). MindSpore's graph of it concatenates the gradients (and the
// weights, for their decay) into flat buffers, runs ~12 element-wise kernels over them and then
// slices the moment back out and subtracts it from every parameter (a StridedSlice and an
// AssignSub each): ~500 launches and ~15 full passes over every value of the network per step.
// This kernel reads each gradient, weight and slot once and writes the slots and the weights once,
// in place: the slots and the weights are MindSpore Parameters, handed to the kernel as their own
// memory (the operator is marked as writing memory, so the graph orders it among the Assigns and
// parameter reads around it). It runs on every core of the process's affinity: the step runs once
// per training step, so a thread per call costs nothing.
//
// Same values as MindSpore's operators, bit for bit: every product, sum, quotient and square root
// is rounded to float32 in the order of the Python expression. Built without -ffast-math and with
// -ffp-contract=off (no fused multiply-adds): build.py's EXACT_FLAGS.
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

// fn(begin, end) over [0, n) in one contiguous block per core; small totals on the calling thread
template <class Fn>
void across_cores(int64_t n, Fn fn) {
  static const int cores = usable_cores();
  const int64_t blocks = std::min<int64_t>(cores, std::max<int64_t>(n / (1 << 16), 1));
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

struct Constants {
  float decay, one_minus_decay, momentum, eps, lr;
  bool decayed;  // any weight decays: then g = grad + coefficient * weight for every value, 0 included
};

// values [begin, end) of one parameter, whose first value sits at `offset` in the slots
void update(const Constants &c, float coefficient, const float *grad, float *weight, float *mean_square,
            float *moment, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float g = grad[i];
    if (c.decayed) g = g + coefficient * weight[i];
    const float ms = mean_square[i] * c.decay + g * g * c.one_minus_decay;
    mean_square[i] = ms;
    const float m = moment[i] * c.momentum + c.lr * g / std::sqrt(ms + c.eps);
    moment[i] = m;
    weight[i] = weight[i] - m;
  }
}

}  // namespace

// params (inputs): k gradients, the k parameters they belong to, mean_square and moment (the
// flat slots: every parameter's values in order), lr (one value), constants (decay, 1 - decay,
// momentum, eps, 1 if any parameter decays else 0), coefficients (k: each parameter's weight
// decay); (output): one value, set to 0. For every value, with g = grad (+ coefficient * weight):
//   mean_square <- mean_square * decay + g * g * (1 - decay)
//   moment      <- moment * momentum + lr * g / sqrt(mean_square + eps)
//   weight      <- weight - moment
extern "C" int TFRMSPropStep(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam < 8 || (nparam - 6) % 2 != 0 || !all_float32(nparam, dtypes)) return 1;
  const int k = (nparam - 6) / 2;
  const int ms_at = 2 * k, moment_at = ms_at + 1, lr_at = ms_at + 2, constants_at = ms_at + 3, decay_at = ms_at + 4;
  std::vector<int64_t> offsets(k + 1, 0);
  for (int i = 0; i < k; ++i) {
    const int64_t size = elements(ndims[i], shapes[i]);
    if (elements(ndims[k + i], shapes[k + i]) != size) return 1;
    offsets[i + 1] = offsets[i] + size;
  }
  const int64_t n = offsets[k];
  if (elements(ndims[ms_at], shapes[ms_at]) != n || elements(ndims[moment_at], shapes[moment_at]) != n) return 1;
  if (elements(ndims[lr_at], shapes[lr_at]) != 1 || elements(ndims[constants_at], shapes[constants_at]) != 5 ||
      elements(ndims[decay_at], shapes[decay_at]) != k || elements(ndims[nparam - 1], shapes[nparam - 1]) != 1) {
    return 1;
  }
  const float *constants = static_cast<const float *>(params[constants_at]);
  const Constants c{constants[0], constants[1], constants[2], constants[3], *static_cast<const float *>(params[lr_at]),
                    constants[4] != 0.0f};
  const float *coefficients = static_cast<const float *>(params[decay_at]);
  float *mean_square = static_cast<float *>(params[ms_at]);
  float *moment = static_cast<float *>(params[moment_at]);

  across_cores(n, [&](int64_t begin, int64_t end) {
    // the parameters overlapping [begin, end) of the slots
    int i = static_cast<int>(std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin()) - 1;
    for (; i < k && offsets[i] < end; ++i) {
      const int64_t first = std::max(begin, offsets[i]) - offsets[i], last = std::min(end, offsets[i + 1]) - offsets[i];
      update(c, coefficients[i], static_cast<const float *>(params[i]), static_cast<float *>(params[k + i]),
             mean_square + offsets[i], moment + offsets[i], first, last);
    }
  });
  *static_cast<float *>(params[nparam - 1]) = 0.0f;
  return 0;
}
