// libFuzzer target: SafetensorsFile::from_bytes and load() of every tensor
// must accept the input or throw kiln::Error; anything else is a crash.
#include <cstddef>
#include <cstdint>

#include "frontend/loaders/safetensors.h"
#include "kiln/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = kiln::SafetensorsFile::from_bytes({data, size}, "fuzz.safetensors");
    for (const kiln::SafetensorsTensor& t : file.tensors()) {
      file.bytes(t);
      try {
        file.load(t.name);
        file.load(t.name, kiln::f16);
      } catch (const kiln::Error&) {
      }
    }
  } catch (const kiln::Error&) {
  }
  return 0;
}
