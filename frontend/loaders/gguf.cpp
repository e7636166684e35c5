#include "frontend/loaders/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <optional>

#include "kiln/error.h"

namespace kiln {

static_assert(std::endian::native == std::endian::little, "the loaders read little-endian data in place");

namespace {

constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 16;       // arrays of arrays, so hostile input cannot exhaust the stack
constexpr uint64_t kMaxAlignment = 1u << 30;
// Fewest bytes an entry can take in the file: what bounds a count before
// anything is allocated for it.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // empty key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset

bool is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16:
    case GgufType::u32: case GgufType::i32: case GgufType::u64: case GgufType::i64:
      return true;
    default:
      return false;
  }
}

bool is_float_type(GgufType t) { return t == GgufType::f32 || t == GgufType::f64; }

// Bytes of a scalar in the file; 0 for string and array.
uint64_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: return 8;
    default: return 0;
  }
}

uint64_t min_value_bytes(GgufType t) {
  if (t == GgufType::string) return 8;
  if (t == GgufType::array) return 4 + 8;
  return scalar_bytes(t);
}

std::string describe_type(const GgufValue& v) {
  std::string s(gguf_type_name(v.type));
  if (v.type == GgufType::array) s += " of " + std::string(gguf_type_name(v.element_type));
  return s;
}

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

// Reads the file front to back; every read is bounds-checked and a failure
// names what was being read (`where`) and the offset.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> data, const std::string& file) : data_(data), file_(file) {}

  std::string where = "header";
  uint64_t pos = 0;

  uint64_t remaining() const { return data_.size() - pos; }

  [[noreturn]] void fail(const std::string& message) const {
    throw Error("gguf " + in_quotes(file_) + ": " + where + ": " + message);
  }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining())
      fail(std::string(what) + " at offset " + std::to_string(pos) + " needs " + std::to_string(n) +
           " bytes, but the file ends at " + std::to_string(data_.size()));
  }

  template <class T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }

  std::string string(std::string_view what) {
    uint64_t len = read<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(data_.data() + pos), len);
    pos += len;
    return s;
  }

  GgufType type(std::string_view what) {
    uint64_t at = pos;
    uint32_t t = read<uint32_t>(what);
    if (t > uint32_t(GgufType::f64))
      fail("unknown value type " + std::to_string(t) + " at offset " + std::to_string(at));
    return GgufType(t);
  }

  GgufValue value(GgufType type, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufType::u8: v.value = uint64_t(read<uint8_t>("a u8")); break;
      case GgufType::u16: v.value = uint64_t(read<uint16_t>("a u16")); break;
      case GgufType::u32: v.value = uint64_t(read<uint32_t>("a u32")); break;
      case GgufType::u64: v.value = read<uint64_t>("a u64"); break;
      case GgufType::i8: v.value = int64_t(read<int8_t>("an i8")); break;
      case GgufType::i16: v.value = int64_t(read<int16_t>("an i16")); break;
      case GgufType::i32: v.value = int64_t(read<int32_t>("an i32")); break;
      case GgufType::i64: v.value = read<int64_t>("an i64"); break;
      case GgufType::f32: v.value = double(read<float>("an f32")); break;
      case GgufType::f64: v.value = read<double>("an f64"); break;
      case GgufType::boolean: v.value = read<uint8_t>("a bool") != 0; break;
      case GgufType::string: v.value = string("a string"); break;
      case GgufType::array: {
        if (depth >= kMaxArrayDepth) fail("arrays nested deeper than " + std::to_string(kMaxArrayDepth) + " levels");
        v.element_type = this->type("an array's element type");
        uint64_t at = pos;
        uint64_t count = read<uint64_t>("an array's length");
        uint64_t min_bytes = min_value_bytes(v.element_type);
        if (count > remaining() / min_bytes)
          fail("array of " + std::to_string(count) + " " + std::string(gguf_type_name(v.element_type)) +
               " at offset " + std::to_string(at) + " needs at least " + std::to_string(min_bytes) +
               " bytes each, but only " + std::to_string(remaining()) + " bytes remain");
        std::vector<GgufValue> items;
        items.reserve(count);
        for (uint64_t i = 0; i < count; ++i) items.push_back(value(v.element_type, depth + 1));
        v.value = std::move(items);
        break;
      }
    }
    return v;
  }

 private:
  std::span<const uint8_t> data_;
  const std::string& file_;
};

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_bits_to_f32(h);
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::string_view names[] = {"u8",  "i8",   "u16",   "i16",   "u32", "i32", "f32",
                                               "bool", "string", "array", "u64", "i64", "f64"};
  uint32_t i = uint32_t(t);
  return i < std::size(names) ? names[i] : "unknown";
}

namespace {

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;
  GgmlBlock block;
};

// From ggml's type traits (GGML_QUANT_SIZES in the gguf Python package).
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::f32, "F32", {1, 4}},          {GgmlType::f16, "F16", {1, 2}},
    {GgmlType::q4_0, "Q4_0", {32, 18}},      {GgmlType::q4_1, "Q4_1", {32, 20}},
    {GgmlType::q5_0, "Q5_0", {32, 22}},      {GgmlType::q5_1, "Q5_1", {32, 24}},
    {GgmlType::q8_0, "Q8_0", {32, 34}},      {GgmlType::q8_1, "Q8_1", {32, 40}},
    {GgmlType::q2_k, "Q2_K", {256, 84}},     {GgmlType::q3_k, "Q3_K", {256, 110}},
    {GgmlType::q4_k, "Q4_K", {256, 144}},    {GgmlType::q5_k, "Q5_K", {256, 176}},
    {GgmlType::q6_k, "Q6_K", {256, 210}},    {GgmlType::q8_k, "Q8_K", {256, 292}},
    {GgmlType::iq2_xxs, "IQ2_XXS", {256, 66}}, {GgmlType::iq2_xs, "IQ2_XS", {256, 74}},
    {GgmlType::iq3_xxs, "IQ3_XXS", {256, 98}}, {GgmlType::iq1_s, "IQ1_S", {256, 50}},
    {GgmlType::iq4_nl, "IQ4_NL", {32, 18}},  {GgmlType::iq3_s, "IQ3_S", {256, 110}},
    {GgmlType::iq2_s, "IQ2_S", {256, 82}},   {GgmlType::iq4_xs, "IQ4_XS", {256, 136}},
    {GgmlType::i8, "I8", {1, 1}},            {GgmlType::i16, "I16", {1, 2}},
    {GgmlType::i32, "I32", {1, 4}},          {GgmlType::i64, "I64", {1, 8}},
    {GgmlType::f64, "F64", {1, 8}},          {GgmlType::iq1_m, "IQ1_M", {256, 56}},
    {GgmlType::bf16, "BF16", {1, 2}},        {GgmlType::tq1_0, "TQ1_0", {256, 54}},
    {GgmlType::tq2_0, "TQ2_0", {256, 66}},
};

const GgmlTypeInfo* find_ggml_type(GgmlType t) {
  for (const GgmlTypeInfo& info : kGgmlTypes)
    if (info.type == t) return &info;
  return nullptr;
}

}  // namespace

std::string_view ggml_type_name(GgmlType t) {
  const GgmlTypeInfo* info = find_ggml_type(t);
  return info ? info->name : "unknown";
}

GgmlBlock ggml_block(GgmlType t) {
  const GgmlTypeInfo* info = find_ggml_type(t);
  return info ? info->block : GgmlBlock{};
}

void dequantize_q8_0(std::span<const uint8_t> blocks, float* out) {
  for (size_t b = 0; b + kQ8_0BlockBytes <= blocks.size(); b += kQ8_0BlockBytes, out += 32) {
    const uint8_t* p = blocks.data() + b;
    float d = f16_at(p);
    for (int j = 0; j < 32; ++j) out[j] = float(int8_t(p[2 + j])) * d;
  }
}

void dequantize_q4_0(std::span<const uint8_t> blocks, float* out) {
  for (size_t b = 0; b + kQ4_0BlockBytes <= blocks.size(); b += kQ4_0BlockBytes, out += 32) {
    const uint8_t* p = blocks.data() + b;
    float d = f16_at(p);
    for (int j = 0; j < 16; ++j) {
      out[j] = float(int(p[2 + j] & 15) - 8) * d;
      out[j + 16] = float(int(p[2 + j] >> 4) - 8) * d;
    }
  }
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : sizes) n *= d;
  return n;
}

GgufFile::GgufFile(const std::string& path)
    : file_(std::make_shared<MappedFile>(path)), data_(file_->bytes()), name_(path) {
  parse();
}

GgufFile::GgufFile(std::span<const uint8_t> data, std::string name) : data_(data), name_(std::move(name)) { parse(); }

GgufFile GgufFile::from_bytes(std::span<const uint8_t> data, std::string name) {
  return GgufFile(data, std::move(name));
}

void GgufFile::fail(const std::string& message) const {
  throw Error("gguf " + in_quotes(name_) + ": " + message);
}

void GgufFile::parse() {
  Cursor in(data_, name_);
  uint32_t magic = in.read<uint32_t>("the magic");
  if (std::memcmp(&magic, "GGUF", 4) != 0) in.fail("not a GGUF file (it does not start with \"GGUF\")");
  version_ = in.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3)
      in.fail("a big-endian GGUF file, which kiln does not read");
    in.fail("version " + std::to_string(version_) + " is not supported (only 2 and 3)");
  }
  uint64_t tensor_count = in.read<uint64_t>("the tensor count");
  uint64_t kv_count = in.read<uint64_t>("the metadata count");
  if (kv_count > in.remaining() / kMinKvBytes)
    in.fail("metadata count " + std::to_string(kv_count) + " cannot fit in the " + std::to_string(in.remaining()) +
            " bytes left in the file");
  if (tensor_count > in.remaining() / kMinTensorInfoBytes)
    in.fail("tensor count " + std::to_string(tensor_count) + " cannot fit in the " + std::to_string(in.remaining()) +
            " bytes left in the file");

  metadata_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    in.where = "metadata entry " + std::to_string(i);
    std::string key = in.string("the key");
    in.where = "metadata " + in_quotes(key);
    GgufType type = in.type("the value type");
    GgufValue value = in.value(type, 0);
    if (!metadata_index_.emplace(key, metadata_.size()).second) in.fail("the key appears twice");
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (has("general.alignment")) {
    in.where = "metadata 'general.alignment'";
    int64_t align = get_int("general.alignment");
    if (align <= 0 || uint64_t(align) > kMaxAlignment || !std::has_single_bit(uint64_t(align)))
      in.fail(std::to_string(align) + " is not a power of two up to " + std::to_string(kMaxAlignment));
    alignment_ = uint64_t(align);
  }

  tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    in.where = "tensor info " + std::to_string(i);
    GgufTensor t;
    t.name = in.string("the name");
    in.where = "tensor " + in_quotes(t.name);
    uint64_t at = in.pos;
    uint32_t n_dims = in.read<uint32_t>("the number of dims");
    if (n_dims > kMaxDims)
      in.fail(std::to_string(n_dims) + " dims at offset " + std::to_string(at) + " (at most " +
              std::to_string(kMaxDims) + ")");
    std::vector<int64_t> ne;
    for (uint32_t d = 0; d < n_dims; ++d) {
      at = in.pos;
      uint64_t dim = in.read<uint64_t>("a dim");
      if (dim > uint64_t(std::numeric_limits<int64_t>::max()))
        in.fail("dim " + std::to_string(dim) + " at offset " + std::to_string(at) + " is out of range");
      ne.push_back(int64_t(dim));
    }
    t.sizes.assign(ne.rbegin(), ne.rend());
    at = in.pos;
    uint32_t type = in.read<uint32_t>("the type");
    t.type = GgmlType(type);
    GgmlBlock block = ggml_block(t.type);
    if (block.elements == 0) in.fail("unknown ggml type " + std::to_string(type) + " at offset " + std::to_string(at));
    at = in.pos;
    t.offset = in.read<uint64_t>("the data offset");

    std::string shape = "[";
    for (size_t d = 0; d < ne.size(); ++d) shape += (d ? ", " : "") + std::to_string(ne[d]);
    shape += "] (innermost first)";
    int64_t numel = 1;  // in kiln order, as HostTensor::numel() multiplies
    for (int64_t d : t.sizes)
      if (__builtin_mul_overflow(numel, d, &numel)) in.fail("dims " + shape + " have too many elements");
    int64_t row = ne.empty() ? 1 : ne[0];
    if (row % block.elements != 0)
      in.fail(std::string(ggml_type_name(t.type)) + " dims " + shape + ": ne[0] is not a multiple of the block size " +
              std::to_string(block.elements));
    int64_t nbytes;
    if (__builtin_mul_overflow(numel / block.elements, block.bytes, &nbytes))
      in.fail("dims " + shape + " have too many bytes");
    t.nbytes = uint64_t(nbytes);
    if (t.offset % alignment_ != 0)
      in.fail("data offset " + std::to_string(t.offset) + " at offset " + std::to_string(at) +
              " is not a multiple of the alignment " + std::to_string(alignment_));
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) in.fail("the name appears twice");
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  data_offset_ = (in.pos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t size = data_.size();
  for (GgufTensor& t : tensors_) {
    bool inside = data_offset_ <= size && t.offset <= size - data_offset_ && t.nbytes <= size - data_offset_ - t.offset;
    if (!inside) {
      std::string at = t.offset <= size ? std::to_string(data_offset_ + t.offset)
                                        : std::to_string(data_offset_) + " + " + std::to_string(t.offset);
      fail("tensor " + in_quotes(t.name) + " data [offset " + at + ", " + std::to_string(t.nbytes) +
           " bytes] runs past the end of the file (size " + std::to_string(size) + ")");
    }
    t.offset += data_offset_;
  }
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : tensors_)
    if (t.nbytes > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->nbytes)
      fail("tensors " + in_quotes(by_offset[i - 1]->name) + " and " + in_quotes(by_offset[i]->name) + " overlap");
}

const GgufValue* GgufFile::find_value(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufValue& GgufFile::value(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (!v) fail("no metadata key " + in_quotes(key));
  return *v;
}

void GgufFile::wrong_type(std::string_view key, const GgufValue& v, std::string_view expected) const {
  fail("metadata " + in_quotes(key) + " is " + describe_type(v) + ", not " + std::string(expected));
}

namespace {

std::optional<int64_t> as_int(const GgufValue& v) {
  if (auto* u = std::get_if<uint64_t>(&v.value))
    return *u <= uint64_t(std::numeric_limits<int64_t>::max()) ? std::optional<int64_t>(int64_t(*u)) : std::nullopt;
  if (auto* i = std::get_if<int64_t>(&v.value)) return *i;
  return std::nullopt;
}

std::optional<double> as_float(const GgufValue& v) {
  if (auto* d = std::get_if<double>(&v.value)) return *d;
  if (auto* u = std::get_if<uint64_t>(&v.value)) return double(*u);
  if (auto* i = std::get_if<int64_t>(&v.value)) return double(*i);
  return std::nullopt;
}

}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::string) wrong_type(key, v, "a string");
  return std::get<std::string>(v.value);
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& v = value(key);
  std::optional<int64_t> i = as_int(v);
  if (!i) wrong_type(key, v, "an integer in the int64 range");
  return *i;
}

int64_t GgufFile::get_int(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& v = value(key);
  std::optional<double> d = as_float(v);
  if (!d) wrong_type(key, v, "a number");
  return *d;
}

double GgufFile::get_float(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::boolean) wrong_type(key, v, "a bool");
  return std::get<bool>(v.value);
}

std::vector<std::string> GgufFile::get_array_strings(std::string_view key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::array || v.element_type != GgufType::string) wrong_type(key, v, "an array of string");
  std::vector<std::string> out;
  for (const GgufValue& e : std::get<std::vector<GgufValue>>(v.value)) out.push_back(std::get<std::string>(e.value));
  return out;
}

std::vector<int64_t> GgufFile::get_array_ints(std::string_view key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::array || !is_integer_type(v.element_type)) wrong_type(key, v, "an array of integers");
  std::vector<int64_t> out;
  for (const GgufValue& e : std::get<std::vector<GgufValue>>(v.value)) {
    std::optional<int64_t> i = as_int(e);
    if (!i) fail("metadata " + in_quotes(key) + ": element " + std::to_string(out.size()) + " is over the int64 range");
    out.push_back(*i);
  }
  return out;
}

std::vector<double> GgufFile::get_array_floats(std::string_view key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::array || !(is_float_type(v.element_type) || is_integer_type(v.element_type)))
    wrong_type(key, v, "an array of numbers");
  std::vector<double> out;
  for (const GgufValue& e : std::get<std::vector<GgufValue>>(v.value)) out.push_back(*as_float(e));
  return out;
}

const GgufTensor* GgufFile::find(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::at(std::string_view name) const {
  const GgufTensor* t = find(name);
  if (!t) fail("no tensor " + in_quotes(name));
  return *t;
}

std::span<const uint8_t> GgufFile::bytes(const GgufTensor& t) const { return data_.subspan(t.offset, t.nbytes); }

HostTensor GgufFile::load(std::string_view name, DType to) const {
  const GgufTensor& t = at(name);
  std::span<const uint8_t> src = bytes(t);
  const int64_t n = t.numel();
  HostTensor out(to, t.sizes);
  const int64_t out_size = dtype_size(to);
  auto store = [&](auto&& element) {
    for (int64_t i = 0; i < n; ++i) store_from_double(out.data.data() + i * out_size, to, element(i));
  };
  auto plain = [&](DType stored) {
    if (stored == to) {
      if (!src.empty()) std::memcpy(out.data.data(), src.data(), src.size());  // data() may be null when empty
      return;
    }
    const int64_t size = dtype_size(stored);
    store([&](int64_t i) { return load_as_double(src.data() + i * size, stored); });
  };
  auto integer = [&]<class T>(T) {
    store([&](int64_t i) {
      T v;
      std::memcpy(&v, src.data() + i * sizeof(T), sizeof(T));
      return double(v);
    });
  };
  auto quantized = [&](void (*dequantize)(std::span<const uint8_t>, float*)) {
    if (to == f32) return dequantize(src, out.ptr<float>());
    std::vector<float> values(n);
    dequantize(src, values.data());
    store([&](int64_t i) { return double(values[i]); });
  };
  switch (t.type) {
    case GgmlType::f32: plain(f32); break;
    case GgmlType::f16: plain(f16); break;
    case GgmlType::bf16: plain(bf16); break;
    case GgmlType::i32: plain(i32); break;
    case GgmlType::i8: plain(i8); break;
    case GgmlType::i16: integer(int16_t{}); break;
    case GgmlType::i64: integer(int64_t{}); break;
    case GgmlType::f64: integer(double{}); break;
    case GgmlType::q8_0: quantized(dequantize_q8_0); break;
    case GgmlType::q4_0: quantized(dequantize_q4_0); break;
    default:
      fail("tensor " + in_quotes(t.name) + ": kiln cannot dequantize " + std::string(ggml_type_name(t.type)) +
           " yet (it reads F32, F16, BF16, F64, I8, I16, I32, I64, Q8_0 and Q4_0)");
  }
  return out;
}

}  // namespace kiln
