// SiLU (x * sigmoid(x)) forward and backward as one pass each over the tensor, for MindSpore's
// AOT custom operators on CPU. MindSpore's own CPU graph runs Sigmoid and Mul as two kernels
// (and a third and fourth in the backward), each a full pass over memory.
//
// Built with -O3 -ffast-math -march=native -fopenmp: -ffast-math lets GCC call glibc's vector
// expf (libmvec), which is what makes one pass faster than MindSpore's kernels; the exponent's
// argument is clamped so that no infinity reaches fast-math code.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

int64_t element_count(int ndim, const int64_t *shape) {
  int64_t count = 1;
  for (int i = 0; i < ndim; ++i) count *= shape[i];
  return count;
}

inline float sigmoid(float x) {
  const float clamped = std::fmin(std::fmax(x, -88.0f), 88.0f);
  return 1.0f / (1.0f + std::exp(-clamped));
}

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
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid(x[i]);
  return 0;
}

// params: x, dy, dx;  d/dx x*s(x) = s(x) * (1 + x * (1 - s(x)))
extern "C" int SiLUGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                        void *extra) {
  if (nparam != 3 || !all_float32(3, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = element_count(ndims[0], shapes[0]);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
  }
  return 0;
}
