// The two passes of a squeeze-and-excitation block over its activation, with their gradients, for
// MindSpore's AOT custom operators on CPU:
// - the squeeze, m = mean of x over the pixels of each (sample, channel): MindSpore's backward
//   broadcasts dm with Tile and then divides (two passes), this one writes dm / pixels (one);
// - the gate, y = x * sigmoid(s) with s one value per (sample, channel): MindSpore's graph runs
//   the forward as Sigmoid + a broadcasting Mul and the backward as two broadcasting Muls, a
//   ReduceSum over the pixels and SigmoidGrad: three passes, where this backward makes one (dx
//   and the per-channel sum of dy * x together).
//
// Built like silu.cc (-O3 -ffast-math -march=native -fopenmp-simd, one thread).
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

bool all_float32(int count, const char **dtypes) {
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

// x is (N, C, H, W) and the second tensor (s, m or dm) is (N, C, 1, 1): the number of (n, c) rows and of pixels per row
bool se_shapes(const int *ndims, int64_t **shapes, int64_t *rows, int64_t *pixels) {
  if (ndims[0] != 4 || ndims[1] != 4) return false;
  if (shapes[1][0] != shapes[0][0] || shapes[1][1] != shapes[0][1] || shapes[1][2] != 1 || shapes[1][3] != 1) {
    return false;
  }
  *rows = shapes[0][0] * shapes[0][1];
  *pixels = shapes[0][2] * shapes[0][3];
  return true;
}

// exp(-s) with s clamped to +-80, as in silu.cc: no infinity reaches fast-math code
inline float exp_minus(float s) { return std::exp(-std::fmin(std::fmax(s, -80.0f), 80.0f)); }

}  // namespace

// params: x, m
extern "C" int ChannelMean(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  int64_t rows = 0, pixels = 0;
  if (nparam != 2 || !all_float32(2, dtypes) || !se_shapes(ndims, shapes, &rows, &pixels)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *m = static_cast<float *>(params[1]);
  for (int64_t row = 0; row < rows; ++row) {
    const float *x_row = x + row * pixels;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < pixels; ++i) total += x_row[i];
    m[row] = total / static_cast<float>(pixels);
  }
  return 0;
}

// params: x (for its shape), dm, dx
extern "C" int ChannelMeanGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  int64_t rows = 0, pixels = 0;
  if (nparam != 3 || !all_float32(3, dtypes) || !se_shapes(ndims, shapes, &rows, &pixels)) return 1;
  const float *dm = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  for (int64_t row = 0; row < rows; ++row) {
    const float share = dm[row] / static_cast<float>(pixels);
    float *dx_row = dx + row * pixels;
#pragma omp simd
    for (int64_t i = 0; i < pixels; ++i) dx_row[i] = share;
  }
  return 0;
}

// params: x, s, y
extern "C" int ChannelGate(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  int64_t rows = 0, pixels = 0;
  if (nparam != 3 || !all_float32(3, dtypes) || !se_shapes(ndims, shapes, &rows, &pixels)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *s = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  for (int64_t row = 0; row < rows; ++row) {
    const float gate = 1.0f / (1.0f + exp_minus(s[row]));
    const float *x_row = x + row * pixels;
    float *y_row = y + row * pixels;
#pragma omp simd
    for (int64_t i = 0; i < pixels; ++i) y_row[i] = x_row[i] * gate;
  }
  return 0;
}

// params: x, s, dy, dx, ds;  dx = dy * g, ds = g * (1 - g) * sum(dy * x) with g = sigmoid(s) and
// 1 - g = e * g (e = exp(-s)), not a subtraction that loses the digits of 1 - g where g is near 1
extern "C" int ChannelGateGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  int64_t rows = 0, pixels = 0;
  if (nparam != 5 || !all_float32(5, dtypes) || !se_shapes(ndims, shapes, &rows, &pixels)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *s = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  float *ds = static_cast<float *>(params[4]);
  for (int64_t row = 0; row < rows; ++row) {
    const float e = exp_minus(s[row]);
    const float gate = 1.0f / (1.0f + e);
    const float *x_row = x + row * pixels;
    const float *dy_row = dy + row * pixels;
    float *dx_row = dx + row * pixels;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < pixels; ++i) {
      dx_row[i] = dy_row[i] * gate;
      total += dy_row[i] * x_row[i];
    }
    ds[row] = total * gate * (e * gate);
  }
  return 0;
}
