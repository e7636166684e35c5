// Fusion: decides which graph nodes become kernels and what each kernel
// computes. Elementwise ops, gathers, constants and views are inlined into the
// kernels that read them; reductions and contractions whose every use lies in
// one kernel are computed inside it as stages (softmax: row max, row sum and the
// division in one kernel; matmul + bias + activation in one kernel).
#pragma once

#include <map>
#include <set>
#include <vector>

#include "kiln/graph.h"

namespace kiln {

struct FusedKernel {
  int anchor = 0;           // the node the kernel stores
  std::vector<int> stages;  // reductions/contractions computed inside, producers first
  // The kernel loops over the anchor's shape; its first `outer` dims enclose the
  // stages, the rest are looped after them (for a reduction anchor: all dims).
  int outer = 0;
};

struct ViewAlias {
  int node = -1;       // the stored result
  int64_t offset = 0;  // in elements
  bool operator==(const ViewAlias&) const = default;
};

struct FusionPlan {
  std::vector<bool> materialized;    // per node: owns a buffer (inputs, anchors)
  std::vector<FusedKernel> kernels;  // in execution order
  // Graph outputs whose elements are a contiguous run of a stored kernel
  // result, in order (reshapes, and slices that keep the run whole: a decode
  // step's new key or value row): no kernel copies them; they are read from
  // that result's buffer (output -> node and element offset).
  std::map<int, ViewAlias> aliases;
};

struct FusionOptions {
  bool enabled = true;        // false: one kernel per compute op (views still inlined)
  int max_inline_size = 256;  // an inlined expression larger than this is stored instead
  std::set<int> never_stage;  // nodes to store rather than compute as stages
};

FusionPlan plan_fusion(const Graph& g, const FusionOptions& opt = {});

}  // namespace kiln
