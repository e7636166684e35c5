// Reader and writer of safetensors files (Hugging Face's tensor format), and of
// Hugging Face checkpoint folders: config.json with one model.safetensors or
// with shards listed in model.safetensors.index.json.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
// "__metadata__": {"key": "value"}}), then the data section the offsets index.
// Everything in the header is checked against the file before use: a malformed
// file gives a kiln::Error that names the file, the tensor and the problem.
//
// dtypes: F32, F16, BF16, I32, I8, U8 and BOOL load as kiln's own dtypes. F64
// loads as f32 (rounded); I64, I16, U16, U32 and U64 load as i32 and a value
// outside the i32 range is an error naming the element. Other dtypes (F8_E4M3,
// F8_E5M2) are listed and their bytes readable, but load() refuses them. An
// unknown dtype makes the file unreadable, since its size cannot be checked.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/loaders/mapped_file.h"
#include "kiln/host_tensor.h"

namespace kiln {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // as written in the file: "F32", "BF16", "I64", ...
  std::vector<int64_t> sizes;   // outermost first, as in the file
  uint64_t begin = 0, end = 0;  // byte range within the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file; throws kiln::Error if it cannot be read or is malformed.
  explicit SafetensorsFile(const std::string& path);
  // Parses a file image the caller owns and keeps alive as long as this object
  // (and any span it returns) is used. `name` stands for the file in errors.
  static SafetensorsFile from_bytes(std::span<const uint8_t> data, std::string name = "<memory>");

  const std::string& name() const { return name_; }
  // In the order the header lists them.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(std::string_view name) const;  // null if absent
  const SafetensorsTensor& at(std::string_view name) const;    // throws if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's bytes in the file, as stored (little-endian, row-major).
  std::span<const uint8_t> bytes(const SafetensorsTensor& t) const;
  // A copy in its kiln dtype (see the top of this file), or converted to `to`
  // (rounded as round_to_dtype() does).
  HostTensor load(std::string_view name) const;
  HostTensor load(std::string_view name, DType to) const;

 private:
  SafetensorsFile(std::span<const uint8_t> data, std::string name);
  void parse();
  [[noreturn]] void fail(const std::string& message) const;

  std::shared_ptr<const MappedFile> file_;  // null for from_bytes()
  std::span<const uint8_t> data_;           // the whole file
  std::string name_;
  uint64_t data_start_ = 0;                 // 8 + header length
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// The file image write_safetensors() writes: tensors in the given order, each
// right after the previous one, the header padded with spaces to a multiple of
// 8 bytes (as the Python library does). Throws on duplicate or empty names and
// on the name "__metadata__".
std::vector<uint8_t> encode_safetensors(const std::vector<std::pair<std::string, HostTensor>>& tensors,
                                        const std::map<std::string, std::string>& metadata = {});
// Writes to a temporary file next to `path`, then renames it over `path`, so no
// reader ever sees a half-written file. Throws kiln::Error naming the path.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, HostTensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A Hugging Face checkpoint folder: config.json, and either model.safetensors
// or model.safetensors.index.json whose "weight_map" names the shard of each
// tensor. Every shard is mapped and checked up front; shard names must be plain
// file names inside the folder.
class HfCheckpoint {
 public:
  explicit HfCheckpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  std::vector<std::string> tensor_names() const;  // sorted
  bool has(std::string_view name) const;
  // The tensor's entry and the file holding it; throws if absent.
  std::pair<const SafetensorsFile*, const SafetensorsTensor*> find(std::string_view name) const;
  HostTensor load(std::string_view name) const;
  HostTensor load(std::string_view name, DType to) const;

 private:
  std::string dir_;
  nlohmann::json config_;
  std::map<std::string, const SafetensorsFile*, std::less<>> weight_map_;  // tensor -> its shard
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;         // file name -> shard
};

}  // namespace kiln
