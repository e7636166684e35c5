#include "codegen/emit/glsl/glsl_library.h"

#include <set>
#include <sstream>
#include <string>

namespace kiln {

std::string glsl_helper_source(GlslHelper h) {
  switch (h) {
    case GlslHelper::IsNan:
      return R"(bool kiln_isnan(float x) { return (floatBitsToUint(x) & 0x7fffffffu) > 0x7f800000u; }
)";
    case GlslHelper::F16Bits:
      return R"(// f32 -> f16 bits, to nearest even, exactly as f32_to_f16_bits (ir/dtype.cpp).
uint kiln_f16_bits(float f) {
  uint x = floatBitsToUint(f);
  uint sign = (x >> 16) & 0x8000u;
  uint a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
  if (a >= 0x477ff000u) return sign | 0x7c00u;
  if (a < 0x38800000u) {  // an f16 subnormal or zero: shift the mantissa, rounding
    uint e = a >> 23;
    if (e < 102u) return sign;
    uint m = (a & 0x7fffffu) | 0x800000u;
    uint s = 126u - e;
    uint q = m >> s, rest = m & ((1u << s) - 1u), halfway = 1u << (s - 1u);
    return sign | (q + uint(rest > halfway || (rest == halfway && (q & 1u) != 0u)));
  }
  return sign | ((a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13);
}
)";
    case GlslHelper::F16Value:
      return R"(float kiln_f16_value(uint h) { return unpackHalf2x16(h).x; }
)";
    case GlslHelper::Bf16Bits:
      return R"(// f32 -> bf16 bits, to nearest even, exactly as f32_to_bf16_bits (ir/dtype.cpp).
uint kiln_bf16_bits(float f) {
  uint x = floatBitsToUint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
  return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}
)";
    case GlslHelper::Max:
      return R"(float kiln_max(float a, float b) { return kiln_isnan(a) ? b : kiln_isnan(b) ? a : max(a, b); }
float kiln_min(float a, float b) { return kiln_isnan(a) ? b : kiln_isnan(b) ? a : min(a, b); }
)";
    case GlslHelper::Compare:
      return R"(bool kiln_lt(float a, float b) { return !kiln_isnan(a) && !kiln_isnan(b) && a < b; }
bool kiln_eq(float a, float b) { return !kiln_isnan(a) && !kiln_isnan(b) && a == b; }
)";
    case GlslHelper::Exp2:
      return R"(float kiln_exp2(float x) { return kiln_isnan(x) ? x : exp2(x); }
)";
    case GlslHelper::Log2:
      return R"(// log2 to a few ulp everywhere, near 1 too, where a GPU's log2 is bound only in
// absolute terms (Vulkan allows 2^-21 on [0.5, 2]: 1% of log2(1.00001)). x is
// m 2^e with m in [sqrt(1/2), sqrt(2)) (from the bits, subnormals included), and
// log2(m) = 2 atanh(s) / ln 2 with s = (m - 1) / (m + 1), |s| < 0.172: the
// series to s^9 leaves 4e-9 of s.
float kiln_log2(float x) {
  uint b = floatBitsToUint(x);
  if ((b & 0x7fffffffu) == 0u) return uintBitsToFloat(0xff800000u);  // -inf
  if (b >= 0x7f800000u) return b == 0x7f800000u ? x : uintBitsToFloat(0x7fc00000u);  // inf; NaN or x < 0
  int e = int(b >> 23) - 127;
  if (b < 0x00800000u) {  // subnormal: normalize the mantissa
    int shift = 23 - findMSB(b);
    b <<= uint(shift);
    e = -126 - shift;
  }
  precise float m = uintBitsToFloat((b & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356) {
    m *= 0.5;
    e += 1;
  }
  precise float s = (m - 1.0) / (m + 1.0);
  float s2 = s * s;
  float p = s2 * (0.333333333 + s2 * (0.2 + s2 * (0.142857143 + s2 * 0.111111111)));
  precise float t = s * 2.88539008;  // 2 / ln 2
  return float(e) + (t + t * p);
}
)";
    case GlslHelper::Sqrt:
      return R"(float kiln_sqrt(float x) {
  uint b = floatBitsToUint(x);
  if (b > 0x80000000u) return uintBitsToFloat(0x7fc00000u);  // x < 0 or a negative NaN
  return b >= 0x7f800000u ? x : sqrt(x);
}
)";
    case GlslHelper::Sin:
      return R"(// sin with x reduced to [-pi, pi] first, where GPUs' sin is accurate (Cody-Waite:
// 2 pi in three parts, the first two short enough that k * part is exact for
// |x| < 25735). precise keeps the steps in this order.
float kiln_sin(float x) {
  if ((floatBitsToUint(x) & 0x7fffffffu) >= 0x7f800000u) return uintBitsToFloat(0x7fc00000u);
  precise float k = roundEven(x * 0.159154937);
  precise float r = ((x - k * 6.28125) - k * 0.00193548202514648438) + k * 1.74845553e-07;
  return sin(r);
}
)";
    case GlslHelper::ToBool:
      return R"(bool kiln_to_bool(float x) { return (floatBitsToUint(x) & 0x7fffffffu) != 0u; }
)";
    case GlslHelper::ToInt:
      return R"(// Truncates toward zero, saturating; NaN -> 0.
int kiln_to_i32(float x) {
  uint a = floatBitsToUint(x) & 0x7fffffffu;
  if (a > 0x7f800000u) return 0;
  if (a >= 0x4f000000u) return x < 0.0 ? -2147483647 - 1 : 2147483647;  // |x| >= 2^31
  return int(x);
}
int64_t kiln_to_i64(float x) {
  uint a = floatBitsToUint(x) & 0x7fffffffu;
  if (a > 0x7f800000u) return 0l;
  if (a >= 0x5f000000u) return x < 0.0 ? -9223372036854775807l - 1l : 9223372036854775807l;  // |x| >= 2^63
  return int64_t(x);
}
)";
    case GlslHelper::ToI64:
      return R"(// From its halves: Mesa 22.3's lavapipe miscompiles int64_t(x) < constant.
int64_t kiln_to_i64(int x) { return packInt2x32(ivec2(x, x >> 31)); }
)";
    case GlslHelper::DivMod:
      return R"(// Division truncates toward zero; a zero divisor gives 0 and INT_MIN / -1 wraps.
// Neither divides by 0 or -1, which SPIR-V leaves undefined.
int kiln_div(int a, int b) {
  int q = a / (b == 0 || b == -1 ? 1 : b);
  return b == 0 ? 0 : b == -1 ? -a : q;
}
int kiln_mod(int a, int b) {
  int d = b == 0 || b == -1 ? 1 : b;
  return a - a / d * d;
}
// Indices are never negative and nearly always fit 32 bits: they divide as
// 32-bit unsigned. The NVIDIA driver's 64-bit division gave wrong quotients for
// some divisors (found by kiln fuzz on the H100).
bool kiln_fits_u32(int64_t a, int64_t b) { return a >= 0l && b > 0l && a <= 0xffffffffl && b <= 0xffffffffl; }
int64_t kiln_div(int64_t a, int64_t b) {
  if (kiln_fits_u32(a, b)) return int64_t(uint(a) / uint(b));
  int64_t q = a / (b == 0l || b == -1l ? 1l : b);
  return b == 0l ? 0l : b == -1l ? -a : q;
}
int64_t kiln_mod(int64_t a, int64_t b) {
  if (kiln_fits_u32(a, b)) return int64_t(uint(a) % uint(b));
  int64_t d = b == 0l || b == -1l ? 1l : b;
  return a - a / d * d;
}
)";
  }
  return "";
}

std::vector<GlslHelper> glsl_helper_deps(GlslHelper h) {
  switch (h) {
    case GlslHelper::Max: case GlslHelper::Compare: case GlslHelper::Exp2: return {GlslHelper::IsNan};
    default: return {};
  }
}

namespace {

// GLSL 4.60 keywords and reserved words, the type names that the extensions a
// shader enables make keywords, and the names the generated code declares or
// calls (a buffer named `sin` would hide the built-in).
const char* const kReserved = R"(
  attribute const uniform varying buffer shared coherent volatile restrict readonly writeonly atomic_uint
  layout centroid flat smooth noperspective patch sample break continue do for while switch case default
  if else subroutine in out inout float double int void bool true false invariant precise discard return
  lowp mediump highp precision struct common partition active asm class union enum typedef template this
  resource goto inline noinline public static extern external interface long short half fixed unsigned
  superp input output filter sizeof cast namespace using demote terminateInvocation
  float16_t float32_t float64_t int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t uint
  main pc Params max min uintBitsToFloat floatBitsToUint packInt2x32 roundEven exp2 log2 sqrt sin
  atomicAnd atomicOr
)";

bool is_builtin_type(std::string_view w) {
  for (std::string_view prefix : {"vec", "ivec", "uvec", "bvec", "dvec", "mat", "dmat", "i8vec", "u8vec",
                                   "i16vec", "u16vec", "i64vec", "u64vec", "f16vec", "f32vec", "f64vec",
                                   "f16mat", "f32mat", "f64mat", "sampler", "isampler", "usampler", "image",
                                   "iimage", "uimage", "texture", "itexture", "utexture", "subpassInput",
                                   "isubpassInput", "usubpassInput", "atomic", "hitObject", "rayQuery",
                                   "accelerationStructure"})
    if (w.substr(0, prefix.size()) == prefix) return true;
  return false;
}

}  // namespace

bool glsl_reserved(std::string_view word) {
  static const std::set<std::string, std::less<>> words = [] {
    std::set<std::string, std::less<>> s;
    std::istringstream in(kReserved);
    for (std::string w; in >> w;) s.insert(w);
    return s;
  }();
  return words.count(word) || is_builtin_type(word) || word.substr(0, 3) == "gl_" ||
         word.substr(0, 5) == "kiln_" || word.find("__") != std::string_view::npos;
}

}  // namespace kiln
