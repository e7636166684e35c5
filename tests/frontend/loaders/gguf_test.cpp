#include "frontend/loaders/gguf.h"

#include <gtest/gtest.h>

#include <limits>

#include "kiln/error.h"
#include "loader_test_util.h"

namespace kiln {
namespace {

using testing::loader_data_dir;
using testing::put;

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no kiln::Error thrown";
  return "";
}

// Writes GGUF files field by field, so that tests can write wrong ones.
struct GgufBuilder {
  std::vector<uint8_t> bytes;

  GgufBuilder& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    bytes.insert(bytes.end(), {'G', 'G', 'U', 'F'});
    put<uint32_t>(bytes, version);
    put<uint64_t>(bytes, tensors);
    put<uint64_t>(bytes, kvs);
    return *this;
  }
  GgufBuilder& string(const std::string& s) {
    put<uint64_t>(bytes, s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  template <class T>
  GgufBuilder& kv(const std::string& key, GgufType type, T value) {
    string(key);
    put<uint32_t>(bytes, uint32_t(type));
    put<T>(bytes, value);
    return *this;
  }
  // n_dims, ne (innermost first), type, offset.
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, uint64_t offset) {
    string(name);
    put<uint32_t>(bytes, uint32_t(ne.size()));
    for (uint64_t d : ne) put<uint64_t>(bytes, d);
    put<uint32_t>(bytes, uint32_t(type));
    put<uint64_t>(bytes, offset);
    return *this;
  }
  GgufBuilder& align(size_t a = 32) {
    bytes.resize((bytes.size() + a - 1) / a * a, 0);
    return *this;
  }
  GgufBuilder& data(size_t n, uint8_t fill = 0) {
    bytes.resize(bytes.size() + n, fill);
    return *this;
  }
};

std::string parse_error(const std::vector<uint8_t>& bytes) {
  return error_of([&] { GgufFile::from_bytes(bytes, "x.gguf"); });
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& part) {
  std::string msg = parse_error(bytes);
  EXPECT_NE(msg.find(part), std::string::npos) << "expected \"" << part << "\" in: " << msg;
}

void expect_matches_reference(const nlohmann::json& want) {
  GgufFile f((loader_data_dir() / want["file"].get<std::string>()).string());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), want["alignment"].get<uint64_t>());
  EXPECT_EQ(f.data_offset() % f.alignment(), 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "kilntest");

  const auto& meta = want["metadata"];
  for (const char* key : {"test.u8", "test.i8", "test.u16", "test.i16", "test.u32", "test.i32", "test.i64"})
    EXPECT_EQ(f.get_int(key), meta[key]["value"].get<int64_t>()) << key;
  for (const char* key : {"test.u8", "test.i8", "test.u16", "test.i16", "test.u32", "test.i32", "test.u64",
                          "test.i64", "test.f32", "test.f64", "test.bool", "test.string", "test.strings"})
    EXPECT_EQ(gguf_type_name(f.find_value(key)->type), meta[key]["type"].get<std::string>()) << key;
  EXPECT_EQ(std::get<uint64_t>(f.find_value("test.u64")->value), meta["test.u64"]["value"].get<uint64_t>());
  EXPECT_EQ(f.get_float("test.f32"), 1.5);
  EXPECT_EQ(f.get_float("test.f64"), meta["test.f64"]["value"].get<double>());
  EXPECT_EQ(f.get_float("test.u8"), 200.0);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.get_string("test.string"), meta["test.string"]["value"].get<std::string>());
  EXPECT_EQ(f.get_array_strings("test.strings"), meta["test.strings"]["value"].get<std::vector<std::string>>());
  EXPECT_EQ(f.get_array_ints("test.ints"), meta["test.ints"]["value"].get<std::vector<int64_t>>());
  EXPECT_EQ(f.get_array_floats("test.floats"), meta["test.floats"]["value"].get<std::vector<double>>());
  const GgufValue* nested = f.find_value("test.nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->element_type, GgufType::array);
  const auto& outer = std::get<std::vector<GgufValue>>(nested->value);
  ASSERT_EQ(outer.size(), 2u);
  EXPECT_EQ(std::get<std::vector<GgufValue>>(outer[0].value).size(), 2u);
  EXPECT_EQ(std::get<int64_t>(std::get<std::vector<GgufValue>>(outer[1].value)[0].value), 3);

  ASSERT_EQ(f.tensors().size(), want["tensors"].size());
  for (const auto& [name, t] : want["tensors"].items()) {
    SCOPED_TRACE(name);
    const GgufTensor& info = f.at(name);
    EXPECT_EQ(info.sizes, t["sizes"].get<std::vector<int64_t>>());
    EXPECT_EQ(info.offset % f.alignment(), 0u);
    HostTensor got = f.load(name);
    EXPECT_EQ(got.dtype, f32);
    EXPECT_EQ(got.sizes, info.sizes);
    auto values = t["values"].get<std::vector<double>>();
    ASSERT_EQ(got.numel(), int64_t(values.size()));
    for (int64_t i = 0; i < got.numel(); ++i) EXPECT_EQ(got.get(i), float(values[i])) << "element " << i;
  }
  EXPECT_EQ(f.at("q8_0").type, GgmlType::q8_0);
  EXPECT_EQ(f.bytes(f.at("q8_0")).size(), 3u * 2 * kQ8_0BlockBytes);
  EXPECT_EQ(f.bytes(f.at("q4_0")).size(), 2u * 2 * kQ4_0BlockBytes);
}

TEST(Gguf, ReadsTheReferenceFiles) {
  // A named copy: a range-for over a temporary's member frees it first (C++20).
  const nlohmann::json expected = testing::expected_values();
  for (const auto& want : expected["gguf"]) {
    SCOPED_TRACE(want["file"].get<std::string>());
    expect_matches_reference(want);
  }
}

TEST(Gguf, LoadRoundsToTheAskedDtype) {
  GgufFile f((loader_data_dir() / "small.gguf").string());
  for (DType to : {f16, bf16, i32}) {
    HostTensor want = f.load("q4_0"), got = f.load("q4_0", to);
    ASSERT_EQ(got.dtype, to);
    for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(got.get(i), round_to_dtype(want.get(i), to));
  }
  HostTensor h = f.load("f16", f16);
  EXPECT_EQ(h.data.size(), 8u);
  EXPECT_EQ(f.load("i16", i32).get(0), -300);
}

TEST(Gguf, Q4_0NibbleOrder) {
  // d = 1.0; byte j holds element j in its low nibble and element j + 16 in its high one.
  std::vector<uint8_t> block = {0x00, 0x3c};
  for (int j = 0; j < 16; ++j) block.push_back(uint8_t(j | (15 - j) << 4));
  float out[32];
  dequantize_q4_0(block, out);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], j - 8);
    EXPECT_EQ(out[j + 16], 7 - j);
  }
}

TEST(Gguf, Version2IsReadToo) {
  auto bytes = testing::read_bytes(loader_data_dir() / "small.gguf");
  testing::poke<uint32_t>(bytes, 4, 2);
  auto f = GgufFile::from_bytes(bytes);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.load("q8_0").numel(), 192);
}

TEST(Gguf, MetadataGettersNameTheKey) {
  GgufFile f((loader_data_dir() / "small.gguf").string());
  EXPECT_NE(error_of([&] { f.get_int("no.such.key"); }).find("no metadata key 'no.such.key'"), std::string::npos);
  EXPECT_NE(error_of([&] { f.get_string("test.u8"); }).find("metadata 'test.u8' is u8, not a string"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.get_int("test.u64"); }).find("'test.u64' is u64, not an integer in the int64 range"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.get_array_ints("test.strings"); }).find("is array of string, not an array of integers"),
            std::string::npos);
  EXPECT_THROW(f.get_bool("test.u8"), Error);
  EXPECT_THROW(f.get_float("test.string"), Error);
  EXPECT_THROW(f.get_array_strings("test.ints"), Error);
  EXPECT_EQ(f.get_int("absent", 7), 7);
  EXPECT_EQ(f.get_float("absent", 0.5), 0.5);
  EXPECT_THROW(f.load("absent"), Error);
}

TEST(Gguf, EveryTruncationBeforeTheLastTensorIsAnError) {
  auto bytes = testing::read_bytes(loader_data_dir() / "small.gguf");
  auto full = GgufFile::from_bytes(bytes);
  uint64_t end = 0;
  for (const GgufTensor& t : full.tensors()) end = std::max(end, t.offset + t.nbytes);
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    if (n < end) EXPECT_THROW(GgufFile::from_bytes(cut), Error) << "cut at " << n;
    else EXPECT_NO_THROW(GgufFile::from_bytes(cut)) << "cut at " << n;  // only alignment padding is gone
  }
}

TEST(Gguf, BadHeaders) {
  expect_error({'G', 'G'}, "the magic at offset 0 needs 4 bytes, but the file ends at 2");
  expect_error(GgufBuilder().data(24).bytes, "not a GGUF file");
  expect_error(GgufBuilder().header(0, 0, 1).bytes, "version 1 is not supported");
  expect_error(GgufBuilder().header(0, 0, 4).bytes, "version 4 is not supported");
  expect_error(GgufBuilder().header(0, 0, 0x03000000).bytes, "big-endian");
  expect_error(GgufBuilder().header(uint64_t(1) << 62, 0).bytes, "tensor count 4611686018427387904 cannot fit");
  expect_error(GgufBuilder().header(0, std::numeric_limits<uint64_t>::max()).bytes, "metadata count");
  EXPECT_EQ(GgufFile::from_bytes(GgufBuilder().header(0, 0).bytes).tensors().size(), 0u);
}

TEST(Gguf, BadMetadata) {
  auto with_key = [](auto&& add) {
    GgufBuilder b;
    b.header(0, 1);
    add(b);
    return b.bytes;
  };
  expect_error(with_key([](GgufBuilder& b) { put<uint64_t>(b.bytes, uint64_t(1) << 60); b.data(16); }),
               "metadata entry 0: the key at offset 32 needs 1152921504606846976 bytes, but the file ends at 48");
  expect_error(with_key([](GgufBuilder& b) { b.string("k"); put<uint32_t>(b.bytes, 13); }),
               "metadata 'k': unknown value type 13");
  expect_error(with_key([](GgufBuilder& b) { b.kv<uint64_t>("k", GgufType::string, 1000); }),
               "metadata 'k': a string at offset");
  expect_error(with_key([](GgufBuilder& b) {
                 b.string("k");
                 put<uint32_t>(b.bytes, uint32_t(GgufType::array));
                 put<uint32_t>(b.bytes, uint32_t(GgufType::u32));
                 put<uint64_t>(b.bytes, uint64_t(1) << 61);
               }),
               "array of 2305843009213693952 u32");
  expect_error(with_key([](GgufBuilder& b) {
                 b.string("k");
                 for (int i = 0; i < 100; ++i) {
                   put<uint32_t>(b.bytes, uint32_t(GgufType::array));
                   if (i > 0) put<uint64_t>(b.bytes, 1);
                 }
               }),
               "nested deeper");
  GgufBuilder twice;
  twice.header(0, 2).kv<uint8_t>("k", GgufType::u8, 1).kv<uint8_t>("k", GgufType::u8, 2);
  expect_error(twice.bytes, "metadata 'k': the key appears twice");
  for (uint32_t align : {0u, 3u, 48u}) {
    GgufBuilder b;
    b.header(0, 1).kv<uint32_t>("general.alignment", GgufType::u32, align);
    expect_error(b.bytes, "is not a power of two");
  }
  GgufBuilder wrong_type;
  wrong_type.header(0, 1).kv<float>("general.alignment", GgufType::f32, 32.0f);
  expect_error(wrong_type.bytes, "'general.alignment' is f32, not an integer");
}

TEST(Gguf, BadTensorInfos) {
  auto one = [](std::vector<uint64_t> ne, GgmlType type, uint64_t offset, size_t data) {
    GgufBuilder b;
    b.header(1, 0).tensor("blk.0.attn_q.weight", std::move(ne), type, offset).align().data(data);
    return b.bytes;
  };
  EXPECT_NO_THROW(GgufFile::from_bytes(one({32, 2}, GgmlType::q8_0, 0, 68)));
  expect_error(one({1, 1, 1, 1, 1}, GgmlType::f32, 0, 4), "tensor 'blk.0.attn_q.weight': 5 dims at offset");
  expect_error(one({uint64_t(1) << 63}, GgmlType::f32, 0, 4), "out of range");
  expect_error(one({uint64_t(1) << 40, uint64_t(1) << 40}, GgmlType::f32, 0, 4), "too many elements");
  expect_error(one({uint64_t(1) << 62}, GgmlType::f32, 0, 4), "too many bytes");
  expect_error(one({33, 2}, GgmlType::q8_0, 0, 200), "ne[0] is not a multiple of the block size 32");
  expect_error(one({4}, GgmlType(99), 0, 16), "unknown ggml type 99");
  expect_error(one({4}, GgmlType::f32, 3, 16), "data offset 3 at offset");
  expect_error(one({4}, GgmlType::f32, std::numeric_limits<uint64_t>::max() - 31, 16), "runs past the end");
  auto past = one({1024}, GgmlType::f32, 32, 2000 - 96);
  EXPECT_EQ(past.size(), 2000u);
  expect_error(past,
               "gguf 'x.gguf': tensor 'blk.0.attn_q.weight' data [offset 128, 4096 bytes] runs past the end of "
               "the file (size 2000)");

  GgufBuilder dup;
  dup.header(2, 0).tensor("a", {4}, GgmlType::f32, 0).tensor("a", {4}, GgmlType::f32, 32).align().data(64);
  expect_error(dup.bytes, "tensor 'a': the name appears twice");
  GgufBuilder overlap;
  overlap.header(2, 0).tensor("a", {16}, GgmlType::f32, 0).tensor("b", {4}, GgmlType::f32, 32).align().data(64);
  expect_error(overlap.bytes, "tensors 'a' and 'b' overlap");
}

TEST(Gguf, UnsupportedTypesAreListedButNotLoaded) {
  GgufBuilder b;
  b.header(1, 0).tensor("k", {256}, GgmlType::q4_k, 0).align().data(144);
  auto f = GgufFile::from_bytes(b.bytes);
  EXPECT_EQ(f.bytes(f.at("k")).size(), 144u);
  EXPECT_NE(error_of([&] { f.load("k"); }).find("kiln cannot dequantize Q4_K yet"), std::string::npos);
}

TEST(Gguf, RandomEditsOnlyEverGiveKilnErrors) {
  auto seed = testing::read_bytes(loader_data_dir() / "small.gguf");
  std::mt19937 rng(11);
  for (int i = 0; i < 3000; ++i) {
    auto bytes = seed;
    for (int edits = 1 + rng() % 3; edits > 0; --edits) bytes = testing::mutate_bytes(bytes, rng);
    testing::parses_or_throws_kiln_error(bytes, [](const std::vector<uint8_t>& b) {
      auto f = GgufFile::from_bytes(b);
      for (const GgufTensor& t : f.tensors()) {
        try {
          f.load(t.name);
        } catch (const Error&) {
        }
      }
    });
  }
}

}  // namespace
}  // namespace kiln
