#include "frontend/loaders/safetensors.h"

#include <gtest/gtest.h>

#include <limits>

#include "kiln/error.h"
#include "loader_test_util.h"

namespace kiln {
namespace {

using testing::loader_data_dir;
using testing::ScratchDir;

// The message of the kiln::Error `f` throws; fails the test if it throws none.
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

// A file of the given header text and `data_bytes` zero bytes of data.
std::vector<uint8_t> file_with_header(const std::string& header, size_t data_bytes = 0) {
  std::vector<uint8_t> out;
  testing::put<uint64_t>(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  return error_of([&] { SafetensorsFile::from_bytes(bytes, "t.safetensors"); });
}

TEST(Safetensors, ReadsTheReferenceFileOfEveryDtype) {
  auto expected = testing::expected_values()["safetensors"];
  SafetensorsFile f((loader_data_dir() / expected["file"].get<std::string>()).string());
  EXPECT_EQ(f.metadata(), (expected["metadata"].get<std::map<std::string, std::string>>()));
  ASSERT_EQ(f.tensors().size(), expected["tensors"].size());
  for (const auto& [name, want] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    const SafetensorsTensor* entry = f.find(name);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->dtype, want["dtype"].get<std::string>());
    EXPECT_EQ(entry->sizes, want["shape"].get<std::vector<int64_t>>());
    HostTensor t = f.load(name);
    EXPECT_EQ(dtype_name(t.dtype), want["kiln_dtype"].get<std::string>());
    EXPECT_EQ(t.sizes, want["shape"].get<std::vector<int64_t>>());
    auto values = want["values"].get<std::vector<double>>();
    ASSERT_EQ(t.numel(), int64_t(values.size()));
    for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.get(i), values[i]) << "element " << i;
  }
}

TEST(Safetensors, LoadConvertsToAnotherDtype) {
  SafetensorsFile f((loader_data_dir() / "all_dtypes.safetensors").string());
  HostTensor h = f.load("f16"), g = f.load("f16", f32);
  ASSERT_EQ(g.dtype, f32);
  for (int64_t i = 0; i < h.numel(); ++i) EXPECT_EQ(g.get(i), h.get(i));
  HostTensor b = f.load("f32", bf16);
  HostTensor w = f.load("f32");
  for (int64_t i = 0; i < w.numel(); ++i) EXPECT_EQ(b.get(i), round_to_dtype(w.get(i), bf16));
}

TEST(Safetensors, WriteThenReadGivesTheSameTensors) {
  ScratchDir dir;
  std::vector<std::pair<std::string, HostTensor>> tensors;
  int seed = 1;
  for (DType t : kAllDTypes) tensors.emplace_back(std::string(dtype_name(t)), HostTensor::random(t, {3, 5}, seed++));
  tensors.emplace_back("scalar", HostTensor::random(f32, {}, 9));
  tensors.emplace_back("empty", HostTensor(f16, {0, 4}));
  std::string path = (dir / "model.safetensors").string();
  write_safetensors(path, tensors, {{"format", "pt"}});
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1) << "a temporary file was left";

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, want] = tensors[i];
    EXPECT_EQ(f.tensors()[i].name, name);
    HostTensor got = f.load(name);
    EXPECT_EQ(got.dtype, want.dtype) << name;
    EXPECT_EQ(got.sizes, want.sizes) << name;
    EXPECT_EQ(got.data, want.data) << name;
  }
  // The header is padded to 8 bytes, so the data of every tensor is aligned.
  uint64_t header_len;
  auto bytes = testing::read_bytes(path);
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
}

TEST(Safetensors, WriterRefusesBadNames) {
  HostTensor t(f32, {1});
  EXPECT_THROW(encode_safetensors({{"a", t}, {"a", t}}), Error);
  EXPECT_THROW(encode_safetensors({{"", t}}), Error);
  EXPECT_THROW(encode_safetensors({{"__metadata__", t}}), Error);
  ScratchDir dir;
  std::string msg = error_of([&] { write_safetensors((dir / "no/such/dir/x.safetensors").string(), {{"a", t}}); });
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
}

TEST(Safetensors, MissingFileNamesThePathAndTheReason) {
  std::string msg = error_of([] { SafetensorsFile("/nonexistent/model.safetensors"); });
  EXPECT_NE(msg.find("'/nonexistent/model.safetensors'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  msg = error_of([] { SafetensorsFile(loader_data_dir().string()); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
}

TEST(Safetensors, EveryTruncationIsAnError) {
  auto bytes = testing::read_bytes(loader_data_dir() / "all_dtypes.safetensors");
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    EXPECT_THROW(SafetensorsFile::from_bytes(cut), Error) << "cut at " << n;
  }
}

TEST(Safetensors, BadHeaderLengths) {
  auto bytes = testing::read_bytes(loader_data_dir() / "all_dtypes.safetensors");
  for (uint64_t len : {uint64_t(0), uint64_t(bytes.size() - 7), uint64_t(1) << 40,
                       std::numeric_limits<uint64_t>::max(), std::numeric_limits<uint64_t>::max() - 7}) {
    auto bad = bytes;
    testing::poke<uint64_t>(bad, 0, len);
    EXPECT_THROW(SafetensorsFile::from_bytes(bad), Error) << len;
  }
  auto bad = bytes;
  testing::poke<uint64_t>(bad, 0, std::numeric_limits<uint64_t>::max());
  std::string msg = parse_error(bad);
  EXPECT_NE(msg.find("runs past the end of the file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'t.safetensors'"), std::string::npos) << msg;
}

TEST(Safetensors, MalformedHeadersSayWhatIsWrong) {
  struct Case {
    std::string header;
    size_t data_bytes;
    std::string message;
  };
  const Case cases[] = {
      {"[1, 2]", 0, "not a JSON object"},
      {"{\"w\": ", 0, "not valid JSON"},
      {"{\"w\": 3}", 0, "tensor 'w': the entry is not a JSON object"},
      {R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4, "no \"dtype\""},
      {R"({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}})", 4, "unknown dtype 'F99'"},
      {R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4, "no \"shape\""},
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, "shape entry -1"},
      {R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4, "shape entry 1.5"},
      {R"({"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}})", 4, "shape entry"},
      {R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4, "too many elements"},
      {R"({"w": {"dtype": "F32", "shape": [2305843009213693952], "data_offsets": [0, 4]}})", 4, "too many bytes"},
      {R"({"w": {"dtype": "F32", "shape": [1]}})", 4, "no \"data_offsets\""},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4, "no \"data_offsets\""},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4, "end before they begin"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})", 8, "hold 8 bytes, but F32 [1] needs 4"},
      {R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8, "runs past the end of the file"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 8, "not non-negative"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12, "tensors 'a' and 'b' overlap"},
      {R"({"__metadata__": {"n": 1}})", 0, "__metadata__ entry 'n' is not a string"},
      {R"({"__metadata__": []})", 0, "__metadata__ is not a JSON object"},
      {std::string(100, '[') + std::string(100, ']'), 0, "nested deeper"},
  };
  for (const Case& c : cases) {
    std::string msg = parse_error(file_with_header(c.header, c.data_bytes));
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.header << "\n  gave: " << msg;
  }
  std::string msg = parse_error(
      file_with_header(R"({"blk.0.w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8));
  EXPECT_NE(msg.find("safetensors 't.safetensors': tensor 'blk.0.w': data [offset 76, 16 bytes] runs past the end "
                     "of the file (size 84)"),
            std::string::npos)
      << msg;
}

TEST(Safetensors, ValuesOutsideI32AreRefusedOnLoad) {
  std::vector<uint8_t> bytes = file_with_header(R"({"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})");
  testing::put<int64_t>(bytes, 1);
  testing::put<int64_t>(bytes, int64_t(1) << 40);
  auto f = SafetensorsFile::from_bytes(bytes);
  std::string msg = error_of([&] { f.load("w"); });
  EXPECT_NE(msg.find("element 1 of I64 data does not fit in i32"), std::string::npos) << msg;
  EXPECT_THROW(f.load("absent"), Error);
  EXPECT_EQ(f.find("absent"), nullptr);
}

TEST(Safetensors, Fp8IsListedButNotLoaded) {
  auto f = SafetensorsFile::from_bytes(
      file_with_header(R"({"w": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [0, 3]}})", 3));
  EXPECT_EQ(f.bytes(f.at("w")).size(), 3u);
  EXPECT_NE(error_of([&] { f.load("w"); }).find("cannot load dtype F8_E4M3"), std::string::npos);
}

TEST(Safetensors, RandomEditsOnlyEverGiveKilnErrors) {
  auto seed = testing::read_bytes(loader_data_dir() / "all_dtypes.safetensors");
  std::mt19937 rng(5);
  for (int i = 0; i < 3000; ++i) {
    auto bytes = seed;
    for (int edits = 1 + rng() % 3; edits > 0; --edits) bytes = testing::mutate_bytes(bytes, rng);
    testing::parses_or_throws_kiln_error(bytes, [](const std::vector<uint8_t>& b) {
      auto f = SafetensorsFile::from_bytes(b);
      for (const SafetensorsTensor& t : f.tensors()) {
        try {
          f.load(t.name);
        } catch (const Error&) {
        }
      }
    });
  }
}

// A Hugging Face folder: config.json, two shards and the index naming them.
void write_sharded_checkpoint(const ScratchDir& dir, const std::string& weight_map) {
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                    {{"embed.weight", HostTensor::random(f32, {4, 2}, 1)}, {"norm.weight", HostTensor::random(bf16, {2}, 2)}});
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(),
                    {{"lm_head.weight", HostTensor::random(f16, {4, 2}, 3)}});
  testing::write_text(dir / "config.json", R"({"h": 2})");
  testing::write_text(dir / "model.safetensors.index.json",
                      R"({"metadata": {"total_size": 52}, "weight_map": )" + weight_map + "}");
}

TEST(HfCheckpoint, ReadsShardsThroughTheIndex) {
  ScratchDir dir;
  write_sharded_checkpoint(dir, R"({"embed.weight": "model-00001-of-00002.safetensors",
                                    "norm.weight": "model-00001-of-00002.safetensors",
                                    "lm_head.weight": "model-00002-of-00002.safetensors"})");
  HfCheckpoint ckpt(dir.path().string());
  EXPECT_EQ(ckpt.config()["h"], 2);
  EXPECT_EQ(ckpt.tensor_names(), (std::vector<std::string>{"embed.weight", "lm_head.weight", "norm.weight"}));
  EXPECT_TRUE(ckpt.has("norm.weight"));
  EXPECT_FALSE(ckpt.has("nope"));
  EXPECT_EQ(ckpt.load("lm_head.weight").data, HostTensor::random(f16, {4, 2}, 3).data);
  EXPECT_EQ(ckpt.load("norm.weight", f32).dtype, f32);
  EXPECT_THROW(ckpt.load("nope"), Error);
}

TEST(HfCheckpoint, RefusesBadIndexes) {
  {
    ScratchDir dir;
    write_sharded_checkpoint(dir, R"({"embed.weight": "../model-00001-of-00002.safetensors"})");
    EXPECT_NE(error_of([&] { HfCheckpoint{dir.path().string()}; }).find("not a file name in the folder"),
              std::string::npos);
  }
  {
    ScratchDir dir;
    write_sharded_checkpoint(dir, R"({"embed.weight": "model-00002-of-00002.safetensors"})");
    EXPECT_NE(error_of([&] { HfCheckpoint{dir.path().string()}; }).find("which does not hold it"), std::string::npos);
  }
  {
    ScratchDir dir;
    write_sharded_checkpoint(dir, R"({"embed.weight": "missing.safetensors"})");
    EXPECT_NE(error_of([&] { HfCheckpoint{dir.path().string()}; }).find("missing.safetensors"), std::string::npos);
  }
  {
    ScratchDir dir;
    write_sharded_checkpoint(dir, "[]");
    EXPECT_NE(error_of([&] { HfCheckpoint{dir.path().string()}; }).find("no \"weight_map\" object"), std::string::npos);
  }
  {
    ScratchDir dir;
    EXPECT_NE(error_of([&] { HfCheckpoint{dir.path().string()}; }).find("no config.json"), std::string::npos);
  }
}

TEST(HfCheckpoint, ReadsASingleFileModel) {
  ScratchDir dir;
  testing::write_text(dir / "config.json", "{}");
  EXPECT_NE(error_of([&] { HfCheckpoint{dir.path().string()}; }).find("neither model.safetensors"), std::string::npos);
  write_safetensors((dir / "model.safetensors").string(), {{"w", HostTensor::random(i8, {3}, 4)}});
  HfCheckpoint ckpt(dir.path().string());
  EXPECT_EQ(ckpt.tensor_names(), std::vector<std::string>{"w"});
  EXPECT_EQ(ckpt.load("w").data, HostTensor::random(i8, {3}, 4).data);
}

}  // namespace
}  // namespace kiln
