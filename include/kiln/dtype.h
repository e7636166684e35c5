// Element types. Storage types (f16, bf16, i8, u8, bool) are computed in a wider
// type inside kernels: floats in f32, integers in i32 (see compute_type()).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

enum class DType : uint8_t { f32, f16, bf16, i32, i8, u8, boolean };

inline constexpr DType f32 = DType::f32;
inline constexpr DType f16 = DType::f16;
inline constexpr DType bf16 = DType::bf16;
inline constexpr DType i32 = DType::i32;
inline constexpr DType i8 = DType::i8;
inline constexpr DType u8 = DType::u8;
inline constexpr DType boolean = DType::boolean;

inline constexpr DType kAllDTypes[] = {f32, f16, bf16, i32, i8, u8, boolean};

int64_t dtype_size(DType t);
bool is_float(DType t);
bool is_integer(DType t);  // i32, i8, u8 (not bool)
// The type kernels compute in for values of `t`: f32 for floats, i32 for
// integers, bool for bool.
DType compute_type(DType t);
std::string_view dtype_name(DType t);  // "f32", "bool", ...
// Throws kiln::Error for an unknown name.
DType parse_dtype(std::string_view name);

// Round a double to the nearest value representable in `t` (round to nearest
// even for floats, wrap-around for integers, !=0 for bool). The reference
// interpreter stores every node's result this way.
double round_to_dtype(double v, DType t);

// Bit conversions for 16-bit floats (round to nearest even).
uint16_t f32_to_f16_bits(float f);
float f16_bits_to_f32(uint16_t h);
uint16_t f32_to_bf16_bits(float f);
float bf16_bits_to_f32(uint16_t h);

// Read / write one element of type `t` at `p` as a double.
double load_as_double(const void* p, DType t);
void store_from_double(void* p, DType t, double v);

}  // namespace kiln
