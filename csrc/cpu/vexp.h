// An exp() the compiler can vectorise: the CPU epilogues evaluate one exp per similarity entry, and
// glibc's scalar expf in a loop costs ~10x a vectorised pass. Cody-Waite range reduction
// x = n ln2 + r with |r| <= ln2 / 2, a degree-6 Taylor polynomial for e^r (relative error ~1.2e-7,
// about 1 ulp), and 2^n assembled in the exponent bits. Inputs below -87.3 (including -inf, which
// the kernels use as a mask) return exactly 0; NaN returns NaN, like std::exp (the clamps below would
// otherwise turn it into e^-87.3); the kernels only call it on arguments <= ~0.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sslsteal {

inline float vexp(float x) {
  const float xc = std::fmin(std::fmax(x, -87.3f), 88.3f);
  const float t = xc * 1.44269504088896341f;
  // Round to nearest with the 1.5 * 2^23 trick (no floor/nearbyint, so it vectorises on SSE2).
  const float fi = (t + 12582912.0f) - 12582912.0f;
  const float r = (xc - fi * 0.693145751953125f) - fi * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fi) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x != x ? x : (x < -87.3f ? 0.0f : p * scale);
}

inline double vexp(double x) { return std::exp(x); }

}  // namespace sslsteal
