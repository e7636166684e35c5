// Lowering: Graph -> Kernels, one per kernel of the fusion plan (codegen/fuse.h).
// Constants, views and inlined ops become expressions inside the kernels that
// read them, never copies; stages become accumulators in registers.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "codegen/fuse.h"
#include "kiln/graph.h"
#include "kiln/kernel.h"

namespace kiln {

struct Launch {
  int kernel = 0;
  std::vector<int> args;  // graph node ids bound to the kernel's global buffers, in order
};

struct Program {
  Graph graph;
  std::vector<Kernel> kernels;
  std::vector<Launch> launches;             // in execution order
  std::vector<std::vector<int>> kernel_ops;  // graph nodes each kernel computes
  std::vector<int> buffers;                 // nodes that own a buffer: inputs and kernel results
  std::map<int, ViewAlias> aliases;         // outputs read from another node's buffer (FusionPlan::aliases)
};

// Lowers `g` after canonicalize_gemv: Program::graph is the rewritten graph,
// with the same inputs (names and order) and outputs.
Program lower(const Graph& g, const FusionOptions& opt = {});

// A matrix-vector product written as W[M, K] x v[K, 1] -> [M, 1] and read only
// through reshapes to [1, M] becomes v^T[1, K] x W^T[K, M] -> [1, M]: the same
// loads in the same loops, but in the shape its consumers index, so a residual
// add, an activation or a dequantizing scale after it fuses as its epilogue
// (fusion stages a contraction only into a kernel of a compatible shape).
Graph canonicalize_gemv(const Graph& g);

// "k0_add: %2 add %3 exp2 -> f32[seq, 1024] <- %0 %1" lines: which ops went
// into which kernel, what it stores and which buffers it reads.
std::string describe_kernels(const Program& p);

}  // namespace kiln
