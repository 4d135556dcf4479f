// SiLU (x * sigmoid(x)) forward and backward as one pass each over the tensor, for MindSpore's
// AOT custom operators on CPU. MindSpore's own CPU graph runs Sigmoid and Mul as two kernels
// (and a third and fourth in the backward), each a full pass over memory.
//
// Built with -O3 -ffast-math -march=native -fopenmp-simd: -ffast-math lets GCC call glibc's vector
// expf (libmvec), which is what makes one pass faster than MindSpore's kernels; the exponent's
// argument is clamped so that no infinity reaches fast-math code. One thread: an OpenMP team's
// spinning workers took the cores from MindSpore's own thread pool between kernels (a B0 step
// 1.75x slower, benchmarks/bench_levers.py).
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

int64_t element_count(int ndim, const int64_t *shape) {
  int64_t count = 1;
  for (int i = 0; i < ndim; ++i) count *= shape[i];
  return count;
}

// exp(-x) with x clamped to +-80: exp stays a normal float (no infinity, no subnormal) on both sides
inline float exp_minus(float x) { return std::exp(-std::fmin(std::fmax(x, -80.0f), 80.0f)); }

bool all_float32(int count, const char **dtypes) {
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

}  // namespace

// params: x, y
extern "C" int SiLU(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 2 || !all_float32(2, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = element_count(ndims[0], shapes[0]);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + exp_minus(x[i]));
  return 0;
}

// params: x, dy, dx;  d/dx x*s(x) = s * (1 + x * (1 - s)), with 1 - s = e * s (e = exp(-x)): computing
// 1 - s by subtraction loses its digits where s is near 1, and x multiplies the error
extern "C" int SiLUGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                        void *extra) {
  if (nparam != 3 || !all_float32(3, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = element_count(ndims[0], shapes[0]);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float e = exp_minus(x[i]);
    const float s = 1.0f / (1.0f + e);
    dx[i] = dy[i] * s * (1.0f + x[i] * e * s);
  }
  return 0;
}
