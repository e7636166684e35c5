// A read-only memory map of a whole file: what the model loaders read from, so
// that opening a multi-gigabyte checkpoint costs no copy and only the pages a
// tensor touches are read from disk.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace kiln {

class MappedFile {
 public:
  // Throws kiln::Error naming the path and the system's reason when the file
  // cannot be opened, is not a regular file, or cannot be mapped. An empty file
  // maps to an empty span.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Valid while this object lives. A file truncated by another process while
  // mapped faults on access (SIGBUS): the loaders cannot guard against that.
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  void unmap();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kiln
