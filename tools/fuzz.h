// `kiln fuzz`: differential testing. Random graphs (frontend/random_graph.h)
// run on every device with the default schedule and are compared with the
// reference interpreter; each failure is reduced and written as a case file
// that `kiln fuzz --replay FILE` reruns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

struct FuzzOptions {
  int graphs = 100;
  uint64_t seed = 1;                 // graph i comes from seed + i
  std::vector<std::string> devices;  // names for device(); empty: every device found
  std::vector<uint64_t> skip;        // seeds of known failures (tests/fuzz/regressions), not run
  std::string replay;                // a case file to rerun instead of new graphs
  std::string out_dir = "fuzz-failures";
};

// Prints one line per failure and a summary line last; returns the exit
// status (0 when every graph matched everywhere).
int fuzz(const FuzzOptions& opt);

}  // namespace kiln
