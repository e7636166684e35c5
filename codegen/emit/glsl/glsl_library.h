// The GLSL functions that generated shaders call (kiln_*), each printed once and
// only when a shader uses it, and the words a generated identifier must avoid.
//
// Vulkan lets a driver assume that float operands are never NaN or infinite, so
// every test for NaN here looks at the bits; 16-bit float conversions are done
// on integers too, because packHalf2x16 may round toward zero on some GPUs and
// flush subnormals on others.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// In dependency order: a helper only calls helpers listed before it.
enum class GlslHelper {
  IsNan,     // bool kiln_isnan(float)
  F16Bits,   // uint kiln_f16_bits(float): f32_to_f16_bits of ir/dtype.cpp
  F16Value,  // float kiln_f16_value(uint): the f32 value of f16 bits
  Bf16Bits,  // uint kiln_bf16_bits(float): f32_to_bf16_bits of ir/dtype.cpp
  Max,       // float kiln_max/kiln_min(float, float): the non-NaN operand wins
  Compare,   // bool kiln_lt/kiln_eq(float, float): false for NaN
  Exp2,      // float kiln_exp2(float), and the three below: IEEE results at the edges
  Log2,      // float kiln_log2(float)
  Sqrt,      // float kiln_sqrt(float)
  Sin,       // float kiln_sin(float), its argument reduced to [-pi, pi] first
  ToBool,    // bool kiln_to_bool(float): x != 0, true for NaN
  ToInt,     // int kiln_to_i32(float), int64_t kiln_to_i64(float): saturating, NaN -> 0
  ToI64,     // int64_t kiln_to_i64(int): sign-extends
  DivMod,    // kiln_div/kiln_mod(int or int64_t): 0 for a zero divisor, INT_MIN / -1 wraps
};

std::string glsl_helper_source(GlslHelper h);
std::vector<GlslHelper> glsl_helper_deps(GlslHelper h);

// GLSL keywords, reserved words and built-in types, the `gl_` and `kiln_`
// prefixes, and the built-in functions that generated code calls.
bool glsl_reserved(std::string_view word);

}  // namespace kiln
