// Named workloads for `kiln dump`, `kiln bench` and the demo: a spec such as
// "matmul:1024x1024x1024" becomes a Graph with random inputs.
#pragma once

#include <map>
#include <string>

#include "kiln/graph.h"
#include "kiln/host_tensor.h"

namespace kiln {

struct Workload {
  std::string spec;
  Graph graph;
  std::map<std::string, HostTensor> inputs;  // random, never all zero
  double flops = 0;  // useful floating-point operations per run
  double bytes = 0;  // bytes a run must read and write at least
};

// add:N, chain:N, matmul:MxKxN, gemv:MxK, softmax:RxC, mlp:BATCH, a language
// model's graphs (llm-prefill:CONFIG:SEQ, llm-decode:CONFIG:PAST), and deps:N:
// N tiny steps x <- x + (x @ w[i]) / 16 on x [1, 16], each needing the one
// before, which lower to exactly N kernels (launch overhead dominates them;
// graph replay is measured on it). Throws kiln::Error listing the known
// workloads for a bad spec.
Workload make_workload(const std::string& spec, DType dtype = f32, uint64_t seed = 1);

// Random inputs for every input of `g` (symbolic dims take `symbols`' values).
std::map<std::string, HostTensor> random_inputs(const Graph& g, const Bindings& symbols = {}, uint64_t seed = 1);

}  // namespace kiln
