#include "frontend/loaders/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "kiln/error.h"

namespace kiln {

static_assert(std::endian::native == std::endian::little, "the loaders read little-endian data in place");

namespace {

// Largest header accepted; the Python library's own limit is 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// Deepest JSON nesting in a header: tensors sit at depth 2, their shapes at 3.
constexpr int kMaxJsonDepth = 8;

// How a safetensors dtype becomes a kiln one.
enum class Convert { native, f64, signed_int, unsigned_int, unsupported };

struct FileDType {
  std::string_view name;
  int64_t size;
  Convert convert;
  DType dtype;  // the kiln dtype load() gives
};

constexpr FileDType kFileDTypes[] = {
    {"F32", 4, Convert::native, f32},          {"F16", 2, Convert::native, f16},
    {"BF16", 2, Convert::native, bf16},        {"I32", 4, Convert::native, i32},
    {"I8", 1, Convert::native, i8},            {"U8", 1, Convert::native, u8},
    {"BOOL", 1, Convert::native, boolean},     {"F64", 8, Convert::f64, f32},
    {"I64", 8, Convert::signed_int, i32},      {"I16", 2, Convert::signed_int, i32},
    {"U16", 2, Convert::unsigned_int, i32},    {"U32", 4, Convert::unsigned_int, i32},
    {"U64", 8, Convert::unsigned_int, i32},    {"F8_E4M3", 1, Convert::unsupported, f32},
    {"F8_E5M2", 1, Convert::unsupported, f32},
};

const FileDType* find_file_dtype(std::string_view name) {
  for (const FileDType& d : kFileDTypes)
    if (d.name == name) return &d;
  return nullptr;
}

std::string_view file_dtype_name(DType t) {
  for (const FileDType& d : kFileDTypes)
    if (d.convert == Convert::native && d.dtype == t) return d.name;
  throw Error("safetensors: no file dtype for " + std::string(dtype_name(t)));
}

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

// A JSON value as an unsigned integer that fits int64_t, or nothing.
std::optional<int64_t> json_size(const nlohmann::ordered_json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  uint64_t u = v.get<uint64_t>();
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return int64_t(u);
}

template <class Json>
Json parse_json(std::span<const uint8_t> text, const std::string& where) {
  auto depth_limit = [&](int depth, typename Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth)
      throw Error(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), depth_limit);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": not valid JSON: " + e.what());
  }
}

}  // namespace

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : sizes) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_shared<MappedFile>(path)), data_(file_->bytes()), name_(path) {
  parse();
}

SafetensorsFile::SafetensorsFile(std::span<const uint8_t> data, std::string name)
    : data_(data), name_(std::move(name)) {
  parse();
}

SafetensorsFile SafetensorsFile::from_bytes(std::span<const uint8_t> data, std::string name) {
  return SafetensorsFile(data, std::move(name));
}

void SafetensorsFile::fail(const std::string& message) const {
  throw Error("safetensors " + in_quotes(name_) + ": " + message);
}

void SafetensorsFile::parse() {
  const uint64_t size = data_.size();
  if (size < 8) fail("the file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t header_len;
  std::memcpy(&header_len, data_.data(), 8);
  if (header_len > size - 8)
    fail("header length " + std::to_string(header_len) + " at offset 0 runs past the end of the file (size " +
         std::to_string(size) + ")");
  if (header_len > kMaxHeaderBytes)
    fail("header length " + std::to_string(header_len) + " is over the limit of " + std::to_string(kMaxHeaderBytes));
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  auto header = parse_json<nlohmann::ordered_json>(data_.subspan(8, header_len), "safetensors " + in_quotes(name_) + " header");
  if (!header.is_object()) fail("the header is not a JSON object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail("__metadata__ is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) fail("__metadata__ entry " + in_quotes(k) + " is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { fail("tensor " + in_quotes(key) + ": " + what); };
    if (!value.is_object()) bad("the entry is not a JSON object");
    SafetensorsTensor t;
    t.name = key;

    auto dtype = value.find("dtype");
    if (dtype == value.end() || !dtype->is_string()) bad("no \"dtype\" string");
    t.dtype = dtype->get<std::string>();
    const FileDType* info = find_file_dtype(t.dtype);
    if (!info) bad("unknown dtype " + in_quotes(t.dtype));

    auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array()) bad("no \"shape\" array");
    int64_t numel = 1;
    for (const auto& d : *shape) {
      std::optional<int64_t> dim = json_size(d);
      if (!dim) bad("shape entry " + d.dump() + " is not a non-negative 64-bit integer");
      if (__builtin_mul_overflow(numel, *dim, &numel)) bad("shape " + shape->dump() + " has too many elements");
      t.sizes.push_back(*dim);
    }
    int64_t nbytes;
    if (__builtin_mul_overflow(numel, info->size, &nbytes)) bad("shape " + shape->dump() + " has too many bytes");

    auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2)
      bad("no \"data_offsets\" array of two numbers");
    std::optional<int64_t> begin = json_size((*offsets)[0]), end = json_size((*offsets)[1]);
    if (!begin || !end) bad("data_offsets " + offsets->dump() + " are not non-negative 64-bit integers");
    t.begin = *begin;
    t.end = *end;
    if (t.begin > t.end) bad("data_offsets " + offsets->dump() + " end before they begin");
    if (t.end - t.begin != uint64_t(nbytes))
      bad("data_offsets " + offsets->dump() + " hold " + std::to_string(t.end - t.begin) + " bytes, but " +
          t.dtype + " " + shape->dump() + " needs " + std::to_string(nbytes));
    if (t.end > data_size)
      bad("data [offset " + std::to_string(data_start_ + t.begin) + ", " + std::to_string(nbytes) +
          " bytes] runs past the end of the file (size " + std::to_string(size) + ")");
    if (!index_.emplace(t.name, tensors_.size()).second) bad("listed twice");
    tensors_.push_back(std::move(t));
  }

  // No two tensors may share bytes: that is a corrupt or hostile header.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& t : tensors_)
    if (t.end > t.begin) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail("tensors " + in_quotes(by_offset[i - 1]->name) + " and " + in_quotes(by_offset[i]->name) + " overlap");
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensor& SafetensorsFile::at(std::string_view name) const {
  const SafetensorsTensor* t = find(name);
  if (!t) fail("no tensor " + in_quotes(name));
  return *t;
}

std::span<const uint8_t> SafetensorsFile::bytes(const SafetensorsTensor& t) const {
  return data_.subspan(data_start_ + t.begin, t.end - t.begin);
}

HostTensor SafetensorsFile::load(std::string_view name) const {
  const SafetensorsTensor& t = at(name);
  const FileDType& info = *find_file_dtype(t.dtype);
  std::span<const uint8_t> src = bytes(t);
  HostTensor out(info.dtype, t.sizes);
  const int64_t n = t.numel();
  switch (info.convert) {
    case Convert::native:
      if (!src.empty()) std::memcpy(out.data.data(), src.data(), src.size());  // data() may be null when empty
      if (info.dtype == boolean)
        for (uint8_t& b : out.data) b = b != 0;
      break;
    case Convert::f64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src.data() + i * 8, 8);
        out.ptr<float>()[i] = static_cast<float>(v);
      }
      break;
    case Convert::signed_int:
    case Convert::unsigned_int:
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t* p = src.data() + i * info.size;
        int64_t v = 0;
        bool in_range = true;
        if (info.convert == Convert::unsigned_int) {
          uint64_t u = 0;
          std::memcpy(&u, p, info.size);
          in_range = u <= uint64_t(std::numeric_limits<int32_t>::max());
          v = int64_t(u & 0x7fffffff);
        } else if (info.size == 2) {
          int16_t s;
          std::memcpy(&s, p, 2);
          v = s;
        } else {
          std::memcpy(&v, p, 8);
          in_range = v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max();
        }
        if (!in_range)
          fail("tensor " + in_quotes(t.name) + ": element " + std::to_string(i) + " of " + t.dtype +
               " data does not fit in i32");
        out.ptr<int32_t>()[i] = static_cast<int32_t>(v);
      }
      break;
    case Convert::unsupported:
      fail("tensor " + in_quotes(t.name) + ": kiln cannot load dtype " + t.dtype);
  }
  return out;
}

HostTensor SafetensorsFile::load(std::string_view name, DType to) const {
  HostTensor t = load(name);
  if (t.dtype == to) return t;
  HostTensor out(to, t.sizes);
  for (int64_t i = 0, n = t.numel(); i < n; ++i) out.set(i, t.get(i));
  return out;
}

std::vector<uint8_t> encode_safetensors(const std::vector<std::pair<std::string, HostTensor>>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") throw Error("safetensors: cannot write a tensor named '" + name + "'");
    if (!names.insert(name).second) throw Error("safetensors: tensor '" + name + "' given twice");
    if (int64_t(t.data.size()) != t.numel() * dtype_size(t.dtype))
      throw Error("safetensors: tensor '" + name + "' holds " + std::to_string(t.data.size()) + " bytes for " +
                  describe(t));
    header[name] = {{"dtype", file_dtype_name(t.dtype)},
                    {"shape", t.sizes},
                    {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::vector<uint8_t> out(8 + text.size());
  uint64_t len = text.size();
  std::memcpy(out.data(), &len, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : tensors) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, HostTensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<uint8_t> image = encode_safetensors(tensors, metadata);
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) throw Error("cannot create a temporary file for '" + path + "': " + std::strerror(errno));
  auto fail = [&](const char* what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(std::string("cannot ") + what + " '" + tmp + "': " + std::strerror(err));
  };
  for (size_t done = 0; done < image.size();) {
    ssize_t n = ::write(fd, image.data() + done, image.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    done += size_t(n);
  }
  if (::fchmod(fd, 0644) != 0) fail("chmod");
  if (::fsync(fd) != 0) fail("sync");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot close '" + tmp + "': " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(err));
  }
}

HfCheckpoint::HfCheckpoint(const std::string& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  auto read_json = [&](const std::string& file) {
    MappedFile f((fs::path(dir) / file).string());
    return parse_json<nlohmann::json>(f.bytes(), "'" + f.path() + "'");
  };
  auto exists = [&](const char* file) {
    std::error_code ec;
    return fs::exists(fs::path(dir) / file, ec);
  };
  if (!exists("config.json")) throw Error("Hugging Face checkpoint '" + dir + "': no config.json");
  config_ = read_json("config.json");
  if (!config_.is_object()) throw Error("'" + dir + "/config.json': not a JSON object");

  auto open_shard = [&](const std::string& file) -> const SafetensorsFile* {
    auto& s = shards_[file];
    if (!s) s = std::make_unique<SafetensorsFile>((fs::path(dir) / file).string());
    return s.get();
  };
  if (exists("model.safetensors.index.json")) {
    const std::string where = "'" + dir + "/model.safetensors.index.json'";
    nlohmann::json index = read_json("model.safetensors.index.json");
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(where + ": no \"weight_map\" object");
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) throw Error(where + ": the shard of '" + tensor + "' is not a string");
      std::string f = file.get<std::string>();
      if (f.empty() || f == "." || f == ".." || f.find('/') != std::string::npos)
        throw Error(where + ": the shard of '" + tensor + "' is '" + f + "', not a file name in the folder");
      const SafetensorsFile* shard = open_shard(f);
      if (!shard->find(tensor))
        throw Error(where + ": tensor '" + tensor + "' is listed in shard '" + f + "', which does not hold it");
      weight_map_[tensor] = shard;
    }
    return;
  }
  if (!exists("model.safetensors"))
    throw Error("Hugging Face checkpoint '" + dir + "': neither model.safetensors nor model.safetensors.index.json");
  const SafetensorsFile* model = open_shard("model.safetensors");
  for (const SafetensorsTensor& t : model->tensors()) weight_map_[t.name] = model;
}

std::vector<std::string> HfCheckpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, shard] : weight_map_) names.push_back(name);
  return names;
}

bool HfCheckpoint::has(std::string_view name) const { return weight_map_.find(name) != weight_map_.end(); }

std::pair<const SafetensorsFile*, const SafetensorsTensor*> HfCheckpoint::find(std::string_view name) const {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end())
    throw Error("Hugging Face checkpoint '" + dir_ + "': no tensor '" + std::string(name) + "'");
  return {it->second, &it->second->at(name)};
}

HostTensor HfCheckpoint::load(std::string_view name) const { return find(name).first->load(name); }

HostTensor HfCheckpoint::load(std::string_view name, DType to) const { return find(name).first->load(name, to); }

}  // namespace kiln
