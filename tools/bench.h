// `kiln bench`: times a workload's kernels on a device against a peer measured
// in the same run (memcpy for bandwidth-bound work, OpenBLAS sgemm for matmul).
// On a device that can capture (CUDA), kiln_s is the replayed recording of the
// launches, launch_s the same launches queued one by one, replay_speedup their
// ratio.
#pragma once

#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

struct BenchOptions {
  std::string device = "cpu";
  DType dtype = f32;
  // `--dtype q8|q4|q4z`: language models with quantized matrices (llm:CONFIG
  // only); empty: dense.
  std::string format;
  int reps = 10;
  int warmup = 2;
  bool json = false;
};

double median(std::vector<double> v);

// Prints one line (JSON object or text) for the workload; returns it too.
std::string bench_workload(const std::string& spec, const BenchOptions& opt);

}  // namespace kiln
