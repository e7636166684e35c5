// The on-disk kernel cache (issue 8): compiled kernels kept as files so that
// the next process loads them instead of compiling again. One file per
// kernel under $KILN_CACHE_DIR/kernels/ (default ~/.cache/kiln/kernels/),
// named by the hex SHA-256 of everything the compiled code depends on.
//
// An entry is written to a temporary file in the same folder and renamed into
// place, so readers see a whole entry or none, and processes writing the same
// entry at once do no harm. Readers check magic, format version, key, length
// and a SHA-256 of the payload; a bad entry is deleted and counts as a miss.
// The cache never fails a compile: when it cannot read or write, it says so
// once (or not at all) and the kernel is compiled as if it were not there.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/runtime.h"

namespace kiln {

// Bump when the file format or the meaning of an artifact changes: older
// entries then stop matching (their key changes) instead of loading wrongly.
constexpr uint32_t kDiskCacheFormat = 1;

// The SHA-256 of `data`, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view data);

class DiskCache {
 public:
  // Disabled: loads find nothing and stores keep nothing.
  DiskCache() = default;
  // Entries under `root`/kernels/. Disabled, with one warning on stderr, if
  // that folder cannot be created.
  explicit DiskCache(const std::filesystem::path& root);
  // From the environment: KILN_CACHE_DIR (a folder, or "off"), else
  // $HOME/.cache/kiln; KILN_NO_DISK_CACHE=1 turns it off. Without HOME, or
  // with a folder that cannot be created, disabled with one warning.
  static DiskCache from_environment();

  bool enabled() const { return !dir_.empty(); }
  // The entries' folder (root/kernels); empty when disabled.
  const std::filesystem::path& dir() const { return dir_; }

  // The entry name of a kernel: hashes the backend, the device fingerprint
  // (name, features), `compiler` (the device's artifact_identity(): compiler
  // and driver versions), kDiskCacheFormat and the kernel's structural text.
  static std::string key(const DeviceInfo& device, const std::string& compiler, const std::string& kernel_text);

  // The payload stored under `key`, if a whole, valid entry is there. A bad
  // entry (truncated, corrupt, another key or format) is deleted, and `*bad`
  // (if given) set.
  std::optional<std::string> load(const std::string& key, bool* bad = nullptr) const;
  // Best effort: a failure to write is reported once on stderr, never thrown.
  void store(const std::string& key, std::string_view payload) const;
  void remove(const std::string& key) const;
  std::filesystem::path path(const std::string& key) const { return dir_ / key; }

  struct Usage {
    int64_t entries = 0;
    int64_t bytes = 0;
  };
  Usage usage() const;
  // Deletes every entry (and leftover temporary files); returns how many entries.
  int64_t clear() const;

 private:
  std::filesystem::path dir_;
};

}  // namespace kiln
