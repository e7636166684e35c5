// `kiln sim WORKLOAD`: runs a workload on the simulated systolic accelerator
// and reports cycles, stalls by cause, utilization and bytes moved, with an
// optional per-instruction trace (CSV). Workloads: those of `kiln bench`, and
// one decoder layer shaped like a model: llama-layer:tinyllama:SEQ (prefill)
// or llama-layer:tinyllama:decode:PAST (one token over a cache of PAST).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "kiln/graph.h"

namespace kiln {

// Adds the `sim` subcommand to the kiln CLI; run_sim() runs it once parsed.
CLI::App* add_sim_command(CLI::App& app);
int run_sim();

// A decoder layer (RMSNorm, GQA attention with a causal mask, SwiGLU FFN) of
// the named shape: "tinyllama" (dim 2048, 32 heads, 4 KV heads, head dim 64,
// hidden 5632). RoPE is an elementwise product by a table (its cost on the
// vector unit, not its exact rotation).
Graph llama_layer_graph(const std::string& spec);

}  // namespace kiln
