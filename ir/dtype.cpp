#include "kiln/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "kiln/error.h"

namespace kiln {

int64_t dtype_size(DType t) {
  switch (t) {
    case f32: case i32: return 4;
    case f16: case bf16: return 2;
    case i8: case u8: case boolean: return 1;
  }
  return 0;
}

bool is_float(DType t) { return t == f32 || t == f16 || t == bf16; }
bool is_integer(DType t) { return t == i32 || t == i8 || t == u8; }

DType compute_type(DType t) {
  if (is_float(t)) return f32;
  if (is_integer(t)) return i32;
  return boolean;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case f32: return "f32";
    case f16: return "f16";
    case bf16: return "bf16";
    case i32: return "i32";
    case i8: return "i8";
    case u8: return "u8";
    case boolean: return "bool";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  for (DType t : kAllDTypes)
    if (dtype_name(t) == name) return t;
  throw Error("unknown dtype '" + std::string(name) + "' (expected f32, f16, bf16, i32, i8, u8 or bool)");
}

uint16_t f32_to_f16_bits(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u)  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (absx < 0x38800000u) {  // subnormal or zero in f16
    // Add 0.5 (as a float) so the FPU rounds the mantissa to nearest even.
    float v = std::bit_cast<float>(absx) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(v) - 0x3f000000u));
  }
  uint32_t mant_odd = (absx >> 13) & 1u;
  absx += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
  return static_cast<uint16_t>(sign | (absx >> 13));
}

float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(mant), -24);
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_bf16_bits(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bf16_bits_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

namespace {

// Float to i32 as kernels do it: truncate toward zero, saturate, NaN -> 0.
int64_t saturate_to_i32(double v) {
  if (std::isnan(v)) return 0;
  v = std::trunc(v);
  if (v <= double(std::numeric_limits<int32_t>::min())) return std::numeric_limits<int32_t>::min();
  if (v >= double(std::numeric_limits<int32_t>::max())) return std::numeric_limits<int32_t>::max();
  return static_cast<int64_t>(v);
}

}  // namespace

double round_to_dtype(double v, DType t) {
  switch (t) {
    case f32: return static_cast<float>(v);
    case f16: return f16_bits_to_f32(f32_to_f16_bits(static_cast<float>(v)));
    case bf16: return bf16_bits_to_f32(f32_to_bf16_bits(static_cast<float>(v)));
    case i32: return static_cast<int32_t>(static_cast<uint32_t>(saturate_to_i32(v)));
    case i8: return static_cast<int8_t>(static_cast<uint8_t>(saturate_to_i32(v) & 0xff));
    case u8: return static_cast<uint8_t>(saturate_to_i32(v) & 0xff);
    case boolean: return v != 0 ? 1.0 : 0.0;
  }
  return v;
}

double load_as_double(const void* p, DType t) {
  switch (t) {
    case f32: { float v; std::memcpy(&v, p, 4); return v; }
    case f16: { uint16_t v; std::memcpy(&v, p, 2); return f16_bits_to_f32(v); }
    case bf16: { uint16_t v; std::memcpy(&v, p, 2); return bf16_bits_to_f32(v); }
    case i32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case i8: return *static_cast<const int8_t*>(p);
    case u8: return *static_cast<const uint8_t*>(p);
    case boolean: return *static_cast<const uint8_t*>(p) ? 1.0 : 0.0;
  }
  return 0;
}

void store_from_double(void* p, DType t, double v) {
  v = round_to_dtype(v, t);
  switch (t) {
    case f32: { float x = static_cast<float>(v); std::memcpy(p, &x, 4); return; }
    case f16: { uint16_t x = f32_to_f16_bits(static_cast<float>(v)); std::memcpy(p, &x, 2); return; }
    case bf16: { uint16_t x = f32_to_bf16_bits(static_cast<float>(v)); std::memcpy(p, &x, 2); return; }
    case i32: { int32_t x = static_cast<int32_t>(v); std::memcpy(p, &x, 4); return; }
    case i8: *static_cast<int8_t*>(p) = static_cast<int8_t>(v); return;
    case u8: *static_cast<uint8_t*>(p) = static_cast<uint8_t>(v); return;
    case boolean: *static_cast<uint8_t*>(p) = v != 0; return;
  }
}

}  // namespace kiln
