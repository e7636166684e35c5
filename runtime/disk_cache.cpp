#include "runtime/disk_cache.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace kiln {

namespace {

// SHA-256 (FIPS 180-4), small and dependency-free: keys and checksums hash a
// few kilobytes, so speed does not matter.
class Sha256 {
 public:
  void update(std::string_view data) {
    for (unsigned char c : data) {
      block_[used_++] = c;
      if (used_ == 64) {
        compress();
        used_ = 0;
      }
    }
    length_ += data.size();
  }

  std::array<uint8_t, 32> finish() {
    uint64_t bits = length_ * 8;
    block_[used_++] = 0x80;
    if (used_ > 56) {
      while (used_ < 64) block_[used_++] = 0;
      compress();
      used_ = 0;
    }
    while (used_ < 56) block_[used_++] = 0;
    for (int i = 7; i >= 0; --i) block_[used_++] = uint8_t(bits >> (8 * i));
    compress();
    std::array<uint8_t, 32> out;
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) out[4 * i + j] = uint8_t(h_[i] >> (24 - 8 * j));
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress() {
    static constexpr uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(block_[4 * i]) << 24 | uint32_t(block_[4 * i + 1]) << 16 | uint32_t(block_[4 * i + 2]) << 8 |
             uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }

  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t block_[64] = {};
  size_t used_ = 0;
  uint64_t length_ = 0;
};

std::string hex(const uint8_t* bytes, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[bytes[i] >> 4];
    s += digits[bytes[i] & 15];
  }
  return s;
}

// An entry file: this magic, the format (u32), the key's length (u32) and the
// key, the payload's length (u64) and SHA-256 (32 bytes), then the payload.
// Integers little-endian.
constexpr std::string_view kMagic("KILNKRN\0", 8);

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += char(uint8_t(v >> (8 * i)));
}

uint64_t get_le(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(in[at + i])) << (8 * i);
  return v;
}

std::string checksum(std::string_view payload) {
  std::array<uint8_t, 32> sum = [&] {
    Sha256 h;
    h.update(payload);
    return h.finish();
  }();
  return std::string(reinterpret_cast<const char*>(sum.data()), sum.size());
}

bool is_entry_name(const std::string& name) {
  if (name.size() != 64) return false;
  for (char c : name)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_temp_name(const std::string& name) { return name.rfind(".tmp.", 0) == 0; }

bool debug_notes() {
  static const bool on = [] {
    const char* v = std::getenv("KILN_CACHE_DEBUG");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

void note(const std::string& message) {
  if (debug_notes()) std::fprintf(stderr, "kiln: disk cache: %s\n", message.c_str());
}

// Says `message` on stderr the first time only, for each `flag`.
void warn_once(std::atomic<bool>& flag, const std::string& message) {
  if (!flag.exchange(true)) std::fprintf(stderr, "kiln: warning: %s\n", message.c_str());
}

std::atomic<bool> warned_dir{false}, warned_write{false};

}  // namespace

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data);
  std::array<uint8_t, 32> sum = h.finish();
  return hex(sum.data(), sum.size());
}

DiskCache::DiskCache(const std::filesystem::path& root) {
  std::filesystem::path dir = root / "kernels";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir, ec)) {
    warn_once(warned_dir, "kernel disk cache off: cannot create '" + dir.string() + "'" +
                              (ec ? ": " + ec.message() : ""));
    return;
  }
  dir_ = dir;
}

DiskCache DiskCache::from_environment() {
  const char* no = std::getenv("KILN_NO_DISK_CACHE");
  if (no && *no && std::string(no) != "0") return DiskCache();
  const char* env = std::getenv("KILN_CACHE_DIR");
  if (env && *env) {
    if (std::string(env) == "off") return DiskCache();
    return DiskCache(env);
  }
  const char* home = std::getenv("HOME");
  if (!home || !*home) {
    warn_once(warned_dir, "kernel disk cache off: neither KILN_CACHE_DIR nor HOME is set");
    return DiskCache();
  }
  return DiskCache(std::filesystem::path(home) / ".cache" / "kiln");
}

std::string DiskCache::key(const DeviceInfo& device, const std::string& compiler, const std::string& kernel_text) {
  // Length-prefixed fields, so that no two field lists hash the same text.
  std::string all;
  for (const std::string& field : {std::string("kiln-kernel-cache"), std::to_string(kDiskCacheFormat), device.backend,
                                   device.name, device.features, compiler, kernel_text}) {
    all += std::to_string(field.size()) + ":" + field + ";";
  }
  return sha256_hex(all);
}

std::optional<std::string> DiskCache::load(const std::string& key, bool* bad_entry) const {
  if (bad_entry) *bad_entry = false;
  if (!enabled()) return std::nullopt;
  std::ifstream in(path(key), std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string file = std::move(ss).str();
  std::string_view f(file);

  auto bad = [&](const char* why) -> std::optional<std::string> {
    note("entry " + key + " " + why + ": deleted");
    if (bad_entry) *bad_entry = true;
    remove(key);
    return std::nullopt;
  };
  size_t at = kMagic.size();
  if (f.size() < at + 8 || f.substr(0, at) != kMagic) return bad("has no kiln header");
  if (get_le(f, at, 4) != kDiskCacheFormat) return bad("has another format version");
  uint64_t key_size = get_le(f, at + 4, 4);
  at += 8;
  if (key_size != key.size() || f.size() < at + key_size + 8 + 32) return bad("is truncated or not this key");
  if (f.substr(at, key_size) != key) return bad("holds another key");
  at += key_size;
  uint64_t size = get_le(f, at, 8);
  std::string_view sum = f.substr(at + 8, 32);
  at += 8 + 32;
  if (f.size() - at != size) return bad("has the wrong length");
  std::string_view payload = f.substr(at);
  if (checksum(payload) != sum) return bad("fails its checksum");
  return std::string(payload);
}

void DiskCache::store(const std::string& key, std::string_view payload) const {
  if (!enabled()) return;
  std::string file(kMagic);
  put_le(file, kDiskCacheFormat, 4);
  put_le(file, key.size(), 4);
  file += key;
  put_le(file, payload.size(), 8);
  file += checksum(payload);
  file += payload;

  // Unique per process and call: concurrent writers never share a temp file.
  static std::atomic<uint64_t> serial{0};
  std::filesystem::path temp =
      dir_ / (".tmp." + key + "." + std::to_string(getpid()) + "." + std::to_string(serial++));
  std::error_code ec;
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(file.data(), std::streamsize(file.size()));
    out.close();
    if (!out) {
      std::filesystem::remove(temp, ec);
      warn_once(warned_write, "kernel disk cache: cannot write in '" + dir_.string() + "'");
      return;
    }
  }
  std::filesystem::rename(temp, path(key), ec);
  if (ec) {
    std::filesystem::remove(temp, ec);
    warn_once(warned_write, "kernel disk cache: cannot write in '" + dir_.string() + "'");
  }
}

void DiskCache::remove(const std::string& key) const {
  if (!enabled()) return;
  std::error_code ec;
  std::filesystem::remove(path(key), ec);
}

DiskCache::Usage DiskCache::usage() const {
  Usage u;
  if (!enabled()) return u;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (!is_entry_name(e.path().filename().string())) continue;
    std::error_code size_ec;
    uintmax_t bytes = e.file_size(size_ec);
    if (size_ec) continue;  // deleted meanwhile
    ++u.entries;
    u.bytes += int64_t(bytes);
  }
  return u;
}

int64_t DiskCache::clear() const {
  if (!enabled()) return 0;
  int64_t removed = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (!is_entry_name(name) && !is_temp_name(name)) continue;
    std::error_code rm_ec;
    if (std::filesystem::remove(e.path(), rm_ec) && is_entry_name(name)) ++removed;
  }
  return removed;
}

}  // namespace kiln
