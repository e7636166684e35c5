// libFuzzer target: the graph and kernel text parsers (ir/graph_text.cpp,
// ir/kernel_text.cpp). Every input is given to both; each must parse or throw
// kiln::Error, and what parses must print to text that parses back to the
// same text (the round trip the IR promises). Anything else is a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "kiln/error.h"
#include "kiln/graph.h"
#include "kiln/kernel.h"

namespace {

template <class Parse>
void check_round_trip(std::string_view text, Parse&& parse, const char* what) {
  std::string printed;
  try {
    printed = print(parse(text));
  } catch (const kiln::Error&) {
    return;
  }
  std::string again;
  try {
    again = print(parse(printed));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "%s: printed text does not parse back: %s\n%s", what, e.what(), printed.c_str());
    std::abort();
  }
  if (again != printed) {
    std::fprintf(stderr, "%s: print(parse(print(x))) != print(x):\n%s\n---\n%s", what, printed.c_str(), again.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check_round_trip(text, [](std::string_view t) { return kiln::parse_graph(t); }, "graph");
  check_round_trip(text, [](std::string_view t) { return kiln::parse_kernel(t); }, "kernel");
  return 0;
}
