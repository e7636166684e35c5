// Shared by the loader tests: the reference files' folder, byte helpers, a
// scratch folder, and a check that a parse only ever fails with kiln::Error.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/error.h"

namespace kiln::testing {

// Files written by scripts/make_loader_test_files.py.
inline std::filesystem::path loader_data_dir() { return std::filesystem::path(__FILE__).parent_path() / "data"; }

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot read " << p;
  return {std::istreambuf_iterator<char>(f), {}};
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  write_bytes(p, std::vector<uint8_t>(text.begin(), text.end()));
}

inline nlohmann::json expected_values() {
  std::ifstream f(loader_data_dir() / "expected.json");
  return nlohmann::json::parse(f);
}

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

template <class T>
void poke(std::vector<uint8_t>& out, size_t at, T v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
}

// A fresh folder under the system's temp dir, removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kiln-loaders-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Runs `parse` on `bytes`: success and kiln::Error are fine, anything else fails.
template <class F>
bool parses_or_throws_kiln_error(const std::vector<uint8_t>& bytes, F&& parse) {
  try {
    parse(bytes);
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "non-kiln exception: " << e.what();
    return false;
  }
}

// Random byte edits of `seed` (overwrite, insert, delete, truncate).
inline std::vector<uint8_t> mutate_bytes(std::vector<uint8_t> s, std::mt19937& rng) {
  size_t at = s.empty() ? 0 : rng() % s.size();
  switch (rng() % 4) {
    case 0: if (!s.empty()) s[at] = uint8_t(rng()); break;
    case 1: s.insert(s.begin() + at, uint8_t(rng())); break;
    case 2: if (!s.empty()) s.erase(s.begin() + at); break;
    default: s.resize(at); break;
  }
  return s;
}

}  // namespace kiln::testing
