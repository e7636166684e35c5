// libFuzzer target: GgufFile::from_bytes, every metadata getter on every key,
// and load() of every tensor must succeed or throw kiln::Error; anything else
// is a crash.
#include <cstddef>
#include <cstdint>

#include "frontend/loaders/gguf.h"
#include "kiln/error.h"

namespace {

template <class F>
void either(F&& f) {
  try {
    f();
  } catch (const kiln::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = kiln::GgufFile::from_bytes({data, size}, "fuzz.gguf");
    for (const auto& [key, value] : file.metadata()) {
      either([&] { file.get_string(key); });
      either([&] { file.get_int(key); });
      either([&] { file.get_float(key); });
      either([&] { file.get_bool(key); });
      either([&] { file.get_array_strings(key); });
      either([&] { file.get_array_ints(key); });
      either([&] { file.get_array_floats(key); });
    }
    for (const kiln::GgufTensor& t : file.tensors()) {
      file.bytes(t);
      either([&] { file.load(t.name); });
      either([&] { file.load(t.name, kiln::bf16); });
    }
  } catch (const kiln::Error&) {
  }
  return 0;
}
