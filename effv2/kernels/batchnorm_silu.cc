// Training-mode batch normalisation with the SiLU after it, forward and backward, for MindSpore's
// AOT custom operators on CPU (effv2.models.fused_bn). MindSpore runs BatchNorm (oneDNN, plain
// layout), then the SiLU kernel over BatchNorm's output, and backward SiLUGrad then
// BatchNormGrad: the normalised tensor is written, kept for the backward pass and read again.
// Here the forward writes only the activation, and the backward recomputes the normalised value
// from the input and the saved per-channel statistics. Without the SiLU (the blocks' projections)
// the same kernels are batch normalisation alone.
//
// The moving statistics are updated in place, as MindSpore's BatchNorm does (its inputs are
// Parameters handed over as their own memory; the operator is marked as writing memory).
//
// Built like silu.cc (-O3 -ffast-math -march=native -fopenmp-simd, one thread: split over channels on a
// two-thread pool it ran 0.7-1.5x its one-thread time on the 2-core Xeon, slower at three of four
// shapes); sums in double.
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

// x (N, C, H, W) and the per-channel tensors at `channels` (C values each)
bool bn_shapes(const int *ndims, int64_t **shapes, const int *channels, int count, int64_t *n, int64_t *c,
               int64_t *pixels) {
  if (ndims[0] != 4) return false;
  *n = shapes[0][0];
  *c = shapes[0][1];
  *pixels = shapes[0][2] * shapes[0][3];
  for (int i = 0; i < count; ++i) {
    const int at = channels[i];
    if (ndims[at] != 1 || shapes[at][0] != *c) return false;
  }
  return true;
}

// exp(-z) with z clamped to +-80, as in silu.cc: no infinity reaches fast-math code
inline float exp_minus(float z) { return std::exp(-std::fmin(std::fmax(z, -80.0f), 80.0f)); }

// constants: eps, momentum (the weight of the batch's statistics in the moving ones), 1 to apply the SiLU
struct Constants {
  float eps, momentum;
  bool act;
};

Constants constants_of(void *p) {
  const float *c = static_cast<const float *>(p);
  return {c[0], c[1], c[2] != 0.0f};
}

}  // namespace

// params: x, gamma, beta, moving_mean, moving_variance, constants (eps, momentum, act);
// outputs: y, mean, invstd (the batch's, for the backward pass)
extern "C" int BatchNormSiLU(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                             void *extra) {
  const int channels[] = {1, 2, 3, 4, 7, 8};
  int64_t n = 0, c = 0, pixels = 0;
  if (nparam != 9 || !all_float32(nparam, dtypes) || !bn_shapes(ndims, shapes, channels, 6, &n, &c, &pixels)) return 1;
  if (ndims[6] != 4 || shapes[6][0] != n || shapes[6][1] != c || shapes[6][2] * shapes[6][3] != pixels) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  float *moving_mean = static_cast<float *>(params[3]);
  float *moving_variance = static_cast<float *>(params[4]);
  const Constants k = constants_of(params[5]);
  float *y = static_cast<float *>(params[6]);
  float *mean_out = static_cast<float *>(params[7]);
  float *invstd_out = static_cast<float *>(params[8]);
  const int64_t count = n * pixels;
  for (int64_t ch = 0; ch < c; ++ch) {
    double total = 0.0, squares = 0.0;
    for (int64_t s = 0; s < n; ++s) {
      const float *row = x + (s * c + ch) * pixels;
#pragma omp simd reduction(+ : total, squares)
      for (int64_t i = 0; i < pixels; ++i) {
        const double v = row[i];
        total += v;
        squares += v * v;
      }
    }
    const double mean = total / static_cast<double>(count);
    const double variance = std::fmax(squares / static_cast<double>(count) - mean * mean, 0.0);
    const float invstd = static_cast<float>(1.0 / std::sqrt(variance + k.eps));
    const float scale = invstd * gamma[ch];
    const float shift = beta[ch] - static_cast<float>(mean) * scale;
    for (int64_t s = 0; s < n; ++s) {
      const float *row = x + (s * c + ch) * pixels;
      float *out = y + (s * c + ch) * pixels;
      if (k.act) {
#pragma omp simd
        for (int64_t i = 0; i < pixels; ++i) {
          const float z = row[i] * scale + shift;
          out[i] = z / (1.0f + exp_minus(z));
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < pixels; ++i) out[i] = row[i] * scale + shift;
      }
    }
    mean_out[ch] = static_cast<float>(mean);
    invstd_out[ch] = invstd;
    // the moving variance takes the unbiased batch variance, as MindSpore's BatchNorm
    const double unbiased = count > 1 ? variance * count / (count - 1) : variance;
    moving_mean[ch] = static_cast<float>(moving_mean[ch] * (1.0 - k.momentum) + mean * k.momentum);
    moving_variance[ch] = static_cast<float>(moving_variance[ch] * (1.0 - k.momentum) + unbiased * k.momentum);
  }
  return 0;
}

// params: x, gamma, beta, mean, invstd, dy, constants; outputs: dx, dgamma, dbeta.
// With xhat = (x - mean) * invstd, z = xhat * gamma + beta and dz = dy * silu'(z) (dy without the SiLU):
//   dbeta = sum(dz), dgamma = sum(dz * xhat), dx = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat))
extern "C" int BatchNormSiLUGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  const int channels[] = {1, 2, 3, 4, 8, 9};
  int64_t n = 0, c = 0, pixels = 0;
  if (nparam != 10 || !all_float32(nparam, dtypes) || !bn_shapes(ndims, shapes, channels, 6, &n, &c, &pixels) ||
      ndims[5] != 4 || ndims[7] != 4 || shapes[5][0] * shapes[5][1] * shapes[5][2] * shapes[5][3] != n * c * pixels ||
      shapes[7][0] * shapes[7][1] * shapes[7][2] * shapes[7][3] != n * c * pixels) {
    return 1;
  }
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float *mean = static_cast<const float *>(params[3]);
  const float *invstd = static_cast<const float *>(params[4]);
  const float *dy = static_cast<const float *>(params[5]);
  const Constants k = constants_of(params[6]);
  float *dx = static_cast<float *>(params[7]);
  float *dgamma = static_cast<float *>(params[8]);
  float *dbeta = static_cast<float *>(params[9]);
  const int64_t count = n * pixels;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float m = mean[ch], inv = invstd[ch], g = gamma[ch], b = beta[ch];
    double sum_dz = 0.0, sum_dz_xhat = 0.0;
    // pass 1: dz into dx, and the two sums
    for (int64_t s = 0; s < n; ++s) {
      const int64_t at = (s * c + ch) * pixels;
      const float *x_row = x + at, *dy_row = dy + at;
      float *dz_row = dx + at;
#pragma omp simd reduction(+ : sum_dz, sum_dz_xhat)
      for (int64_t i = 0; i < pixels; ++i) {
        const float xhat = (x_row[i] - m) * inv;
        float dz = dy_row[i];
        if (k.act) {
          // 1 - sig as e * sig (e = exp(-z)), as silu.cc: the subtraction loses its digits where sig is near 1
          const float z = xhat * g + b;
          const float e = exp_minus(z);
          const float sig = 1.0f / (1.0f + e);
          dz = dz * sig * (1.0f + z * e * sig);
        }
        dz_row[i] = dz;
        sum_dz += dz;
        sum_dz_xhat += static_cast<double>(dz) * xhat;
      }
    }
    dbeta[ch] = static_cast<float>(sum_dz);
    dgamma[ch] = static_cast<float>(sum_dz_xhat);
    const float mean_dz = static_cast<float>(sum_dz / count), mean_dz_xhat = static_cast<float>(sum_dz_xhat / count);
    const float factor = g * inv;
    // pass 2: dx from dz
    for (int64_t s = 0; s < n; ++s) {
      const int64_t at = (s * c + ch) * pixels;
      const float *x_row = x + at;
      float *dx_row = dx + at;
#pragma omp simd
      for (int64_t i = 0; i < pixels; ++i) {
        const float xhat = (x_row[i] - m) * inv;
        dx_row[i] = factor * (dx_row[i] - mean_dz - xhat * mean_dz_xhat);
      }
    }
  }
  return 0;
}
