// Reader of GGUF files (llama.cpp's model format), versions 2 and 3.
//
// A file is: magic "GGUF", version, tensor count, metadata count, the metadata
// (typed key/value pairs, arrays nested to any depth), the tensor infos (name,
// dims, ggml type, offset), then, aligned to `general.alignment` (default 32),
// the data section the offsets index. Every count, length, offset and dim is
// checked against the file before it is used or sizes an allocation: a
// malformed file gives a kiln::Error naming the file, the entry and the offset.
//
// Dims: GGUF lists them innermost first (ne[0] is contiguous). GgufTensor::sizes
// is in kiln's order, outermost first: a file's ne = [4096, 11008] is
// sizes = {11008, 4096}.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "frontend/loaders/mapped_file.h"
#include "kiln/host_tensor.h"

namespace kiln {

// Metadata value types, numbered as in the file.
enum class GgufType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
std::string_view gguf_type_name(GgufType t);  // "u32", "string", ...

struct GgufValue {
  GgufType type = GgufType::u8;
  GgufType element_type = GgufType::u8;  // arrays only
  // Unsigned integers as uint64_t, signed as int64_t, floats as double, then
  // bool, string, and the elements of an array.
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> value;
};

// Tensor element types, numbered as ggml numbers them. The loader knows the
// block layout (for size checks) of the ones listed; load() dequantizes f32,
// f16, bf16, f64, i8, i16, i32, i64, q8_0 and q4_0.
enum class GgmlType : uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
  i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35,
};
std::string_view ggml_type_name(GgmlType t);  // "Q8_0", "F16", ...
// Elements per block and bytes per block (1 and the element size for plain
// types); {0, 0} for a type the loader does not know.
struct GgmlBlock {
  int64_t elements = 0, bytes = 0;
};
GgmlBlock ggml_block(GgmlType t);

// Block layouts of the quantized types kiln dequantizes (ggml's block_q8_0 and
// block_q4_0): 32 elements, scale d as f16 first.
//   q8_0: d, int8 q[32];           x[j] = q[j] * d
//   q4_0: d, uint8 q[16] (nibbles) x[j] = ((q[j] & 15) - 8) * d,
//                                  x[j + 16] = ((q[j] >> 4) - 8) * d   (j < 16)
inline constexpr int64_t kQ8_0BlockBytes = 34;
inline constexpr int64_t kQ4_0BlockBytes = 18;
void dequantize_q8_0(std::span<const uint8_t> blocks, float* out);  // 32 values per block
void dequantize_q4_0(std::span<const uint8_t> blocks, float* out);

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::f32;
  std::vector<int64_t> sizes;  // kiln order: outermost first (the file's ne reversed)
  uint64_t offset = 0;         // of the first byte, from the start of the file
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps the file; throws kiln::Error if it cannot be read or is malformed.
  explicit GgufFile(const std::string& path);
  // Parses a file image the caller owns and keeps alive as long as this object
  // (and any span it returns) is used. `name` stands for the file in errors.
  static GgufFile from_bytes(std::span<const uint8_t> data, std::string name = "<memory>");

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section

  // Metadata, in file order. The typed getters throw kiln::Error naming the key
  // when it is missing or holds another type. get_int takes any integer type
  // (a u64 over the int64_t range is an error); get_float takes floats and
  // integers.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find_value(std::string_view key) const;  // null if absent
  bool has(std::string_view key) const { return find_value(key) != nullptr; }
  std::string get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key) const;
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_array_strings(std::string_view key) const;
  std::vector<int64_t> get_array_ints(std::string_view key) const;
  std::vector<double> get_array_floats(std::string_view key) const;

  // Tensors, in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find(std::string_view name) const;  // null if absent
  const GgufTensor& at(std::string_view name) const;    // throws if absent
  // The tensor's bytes as stored: for quantized types, its blocks in order
  // (rows of ne[0] elements, each a whole number of blocks).
  std::span<const uint8_t> bytes(const GgufTensor& t) const;
  // A dense copy of the tensor in `to`, dequantized (q8_0, q4_0) or converted
  // (rounded as round_to_dtype() does). Other quantized types are refused.
  HostTensor load(std::string_view name, DType to = f32) const;

 private:
  GgufFile(std::span<const uint8_t> data, std::string name);
  void parse();
  [[noreturn]] void fail(const std::string& message) const;
  const GgufValue& value(std::string_view key) const;  // throws if absent
  [[noreturn]] void wrong_type(std::string_view key, const GgufValue& v, std::string_view expected) const;

  std::shared_ptr<const MappedFile> file_;  // null for from_bytes()
  std::span<const uint8_t> data_;           // the whole file
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace kiln
