// Lowering: Graph -> Kernels. Every compute node (elementwise, reduction,
// gather, contraction) becomes one kernel; constants and movement ops become
// index arithmetic inside the kernels that read them, never copies. Fusion
// (issue 3) replaces this one-kernel-per-op cut.
#pragma once

#include <string>
#include <vector>

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
};

Program lower(const Graph& g);

// "k0_add: %3 add f32[seq, 1024] <- %0 %2" lines: which ops went into which kernel.
std::string describe_kernels(const Program& p);

}  // namespace kiln
