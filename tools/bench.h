// `kiln bench`: times a workload's kernels on a device against a peer measured
// in the same run (memcpy for bandwidth-bound work, OpenBLAS sgemm for matmul).
// On a device that can capture (CUDA), kiln_s is the replayed recording of the
// launches, launch_s the same launches queued one by one, replay_speedup their
// ratio.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

class CompiledGraph;

struct BenchOptions {
  std::string device = "cpu";
  DType dtype = f32;
  // `--dtype q8|q4|q4z|s24`: language models with quantized (or 2:4 sparse)
  // matrices (llm:CONFIG only); empty: dense.
  std::string format;
  int reps = 10;
  int warmup = 2;
  bool json = false;
  bool profile = false;  // then print_profile of the workload's graph (llm: the decode step) to stderr
  std::string kv_dtype;  // llm: the KV cache's dtype; empty: llm_cache_dtype's default
};

double median(std::vector<double> v);

// The slowest kernels of a warm run of `cg`, and their time by kind, to `f`.
void print_profile(CompiledGraph& cg, std::FILE* f);

// Prints one line (JSON object or text) for the workload; returns it too.
std::string bench_workload(const std::string& spec, const BenchOptions& opt);

}  // namespace kiln
