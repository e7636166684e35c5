// The `kiln` command: devices, dump, run, bench, demo, fuzz, generate, quantize, prune and tune.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "codegen/device_presets.h"
#include "codegen/emit/cuda/emit_cuda.h"
#include "frontend/random_graph.h"
#include "frontend/workloads.h"
#include "kiln/kiln.h"
#include "runtime/tuning_db.h"
#include "tools/bench.h"
#include "tools/cache.h"
#include "tools/fuzz.h"
#include "tools/llm.h"
#include "tools/quantize.h"
#include "tools/read_text.h"
#include "tools/sim.h"
#include "tools/tune.h"

namespace kiln {
namespace {

// A graph from an IR text file if `what` names one, else a workload spec.
Graph load_graph(const std::string& what, DType dtype, std::map<std::string, HostTensor>* inputs,
                 const Bindings& symbols) {
  if (std::filesystem::is_regular_file(what)) {
    std::string text = read_text(what);
    // A fuzz case (`kiln fuzz` writes its reductions so: "# ..." notes, then the graph).
    Graph g = text.starts_with("#") ? parse_case(text).graph : parse_graph(text);
    if (inputs) *inputs = random_inputs(g, symbols);
    return g;
  }
  Workload w = make_workload(what, dtype);
  if (inputs) *inputs = w.inputs;
  return w.graph;
}

Bindings parse_bindings(const std::vector<std::string>& items) {
  Bindings b;
  for (const std::string& s : items) {
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0) throw Error("--sym wants NAME=VALUE, got '" + s + "'");
    try {
      size_t used = 0;
      b[s.substr(0, eq)] = std::stoll(s.substr(eq + 1), &used);
      if (used != s.size() - eq - 1) throw std::invalid_argument(s);
    } catch (const std::logic_error&) {
      throw Error("--sym wants NAME=VALUE with an integer value, got '" + s + "'");
    }
  }
  return b;
}

int cmd_devices() {
  for (const auto& d : devices()) {
    const DeviceInfo& i = d->info();
    std::printf("%-8s %s\n", i.backend.c_str(), i.name.c_str());
    std::printf("         cores %d, vector width %d bits, memory %.1f GiB\n", i.cores, i.vector_bits,
                double(i.memory_bytes) / (1 << 30));
    std::printf("         features %s\n", i.features.c_str());
  }
  return 0;
}

int cmd_dump(const std::string& what, const std::string& stage, DType dtype, const std::string& dev) {
  static const std::vector<std::string> stages = {"graph", "kernels", "schedule", "target", "all"};
  if (std::find(stages.begin(), stages.end(), stage) == stages.end())
    throw Error("unknown stage '" + stage + "' (graph, kernels, schedule, target or all)");
  Graph g = load_graph(what, dtype, nullptr, {});
  bool all = stage == "all";
  if (all || stage == "graph") std::cout << "// ---- graph\n" << print(g);
  if (stage == "graph") return 0;
  Program p = lower(g);
  if (all || stage == "kernels") {
    std::cout << "// ---- kernels (which ops each computes)\n" << describe_kernels(p);
    for (const Kernel& k : p.kernels) std::cout << print(k);
  }
  // `h100`: the CUDA code for a described H100, on a machine without a GPU.
  bool offline = dev == "h100";
  std::shared_ptr<Device> d = offline ? nullptr : device(dev);
  DeviceInfo info = offline ? h100_description() : d->info();
  std::vector<Kernel> scheduled;
  for (const Kernel& k : p.kernels) {
    // What the executor would run: the tuning database's schedule, else the default.
    std::optional<Schedule> tuned = tuned_schedule(k, info);
    Schedule s = tuned ? *tuned : default_schedule(k, info);
    scheduled.push_back(apply(k, s));
    if (all || stage == "schedule")
      std::cout << "// ---- schedule of " << k.name << " for " << info.backend << (tuned ? " (tuned)" : "") << "\n"
                << print(s) << print(scheduled.back());
  }
  if (all || stage == "target")
    for (const Kernel& k : scheduled)
      std::cout << "// ---- " << info.backend << " code of " << k.name << "\n"
                << (offline ? emit_cuda(k, cuda_entry_name(k)) : d->target_source(k));
  return 0;
}

// Compares every output with the reference interpreter; returns the worst error
// relative to the output's largest magnitude.
double check_against_interpreter(const Graph& g, const std::map<std::string, HostTensor>& inputs,
                                 const Bindings& symbols, const std::vector<HostTensor>& got) {
  std::vector<HostTensor> want = interpret(g, inputs, symbols);
  double worst = 0;
  for (size_t o = 0; o < want.size(); ++o) {
    double err = 0, scale = 1e-30;
    for (int64_t i = 0; i < want[o].numel(); ++i) {
      err = std::max(err, std::fabs(want[o].get(i) - got[o].get(i)));
      scale = std::max(scale, std::fabs(want[o].get(i)));
    }
    worst = std::max(worst, err / scale);
  }
  return worst;
}

int cmd_run(const std::string& what, DType dtype, const std::string& dev, Bindings symbols, bool profile,
            bool check) {
  std::map<std::string, HostTensor> inputs;
  Graph g = load_graph(what, dtype, &inputs, symbols);
  symbols = bind_symbols(g, inputs, symbols);
  CompiledGraph cg(g, device(dev));
  std::vector<HostTensor> out = cg.run(inputs, symbols);
  if (profile) print_profile(cg, stdout);
  for (size_t o = 0; o < out.size(); ++o) {
    std::printf("output %zu: %s [", o, describe(out[o]).c_str());
    for (int64_t i = 0; i < std::min<int64_t>(out[o].numel(), 8); ++i) std::printf("%s%.6g", i ? ", " : "", out[o].get(i));
    std::printf("%s]\n", out[o].numel() > 8 ? ", ..." : "");
  }
  if (!check) return 0;
  double err = check_against_interpreter(g, inputs, symbols, out);
  std::printf("max error against the reference interpreter: %.3g (relative to the largest value)\n", err);
  return 0;
}

int cmd_demo(const std::string& dev) {
  std::printf("kiln demo: a 3-layer MLP (256 -> 512 -> 512 -> 10, ReLU), batch 64, f32, on %s\n\n", dev.c_str());
  Workload w = make_workload("mlp:64");
  std::cout << print(w.graph) << "\n";
  CompiledGraph cg(w.graph, device(dev));
  std::printf("compiled %zu kernels in %.3f s on %s\n", cg.program().kernels.size(), cg.compile_seconds(),
              cg.device().info().name.c_str());
  std::vector<HostTensor> out = cg.run(w.inputs);
  cg.execute();  // a second, warm run for the timings below
  std::printf("\n%-16s %12s  %s\n", "kernel", "time (us)", "computes");
  std::istringstream lines(describe_kernels(cg.program()));
  std::string line;
  double total = 0;
  for (size_t k = 0; std::getline(lines, line); ++k) {
    double us = cg.kernel_seconds()[k] * 1e6;
    total += us;
    std::printf("%-16s %12.1f  %s\n", cg.program().kernels[k].name.c_str(), us, line.substr(line.find(':') + 2).c_str());
  }
  std::printf("%-16s %12.1f\n\n", "total", total);
  const HostTensor& y = out[0];
  std::printf("output %s, first row:", describe(y).c_str());
  for (int64_t i = 0; i < y.sizes[1]; ++i) std::printf(" %.4f", y.get(i));
  double err = check_against_interpreter(w.graph, w.inputs, {}, out);
  std::printf("\nmax error against the reference interpreter: %.3g\n", err);
  return err < 1e-4 ? 0 : 1;
}

int main_impl(int argc, char** argv) {
  CLI::App app{"kiln: a tensor compiler and runtime"};
  app.require_subcommand(1);
  std::string dev = "cpu", dtype_s = "f32", stage = "all";
  std::vector<std::string> syms;

  app.add_subcommand("devices", "list the devices found and their capabilities");

  auto* dump = app.add_subcommand("dump", "print the IR of a workload or IR text file at every stage");
  std::string what;
  dump->add_option("what", what, "a workload (add:N, matmul:MxKxN, ...) or a graph IR text file")->required();
  dump->add_option("--stage", stage, "graph, kernels, schedule, target (LLVM IR, CUDA C, GLSL) or all");
  dump->add_option("--dtype", dtype_s, "element type of a workload");
  dump->add_option("--device", dev, "device whose target code to show (h100: a described H100, no GPU needed)");

  auto* run = app.add_subcommand("run", "compile and run a workload or IR file on random inputs, check it");
  run->add_option("what", what, "a workload or a graph IR text file")->required();
  run->add_option("--device", dev, "device");
  run->add_option("--dtype", dtype_s, "element type of a workload");
  run->add_option("--sym", syms, "symbolic dim values, NAME=VALUE");
  bool profile = false;
  run->add_flag("--profile", profile, "time each kernel of a warm run and list the slowest");
  bool no_check = false;
  run->add_flag("--no-check", no_check, "skip the reference interpreter (slow on large graphs)");

  auto* bench = app.add_subcommand("bench", "time workloads against a peer");
  std::vector<std::string> workloads;
  BenchOptions bo;
  bench->add_option("workloads", workloads, "workloads (add:67108864, matmul:1024x1024x1024, llm:stories110m, ...)")->required();
  bench->add_option("--device", dev, "device");
  bench->add_option("--dtype", dtype_s, "element type");
  bench->add_option("--reps", bo.reps, "timed runs (median reported)")->check(CLI::Range(1, 100000));
  bench->add_option("--warmup", bo.warmup, "untimed runs first")->check(CLI::Range(0, 100000));
  bench->add_flag("--json", bo.json, "one JSON object per workload");
  bench->add_flag("--profile", bo.profile, "then each kernel's time in a warm run, the slowest first (stderr; llm: the decode step)");
  bench->add_option("--kv-dtype", bo.kv_dtype, "llm: the KV cache's dtype, f32, f16 or bf16 (default: f16 for q8/q4/q4z models with f32 activations, else the activations')");

  auto* demo = app.add_subcommand("demo", "compile and run a small MLP, print its kernels and their times");
  demo->add_option("--device", dev, "device");

  auto* fuzz_cmd = app.add_subcommand("fuzz", "run random graphs on every device, compare with the interpreter");
  FuzzOptions fo;
  fuzz_cmd->add_option("--graphs", fo.graphs, "how many graphs")->check(CLI::Range(0, 100000000));
  fuzz_cmd->add_option("--seed", fo.seed, "seed of the first graph (graph i has seed + i)");
  fuzz_cmd->add_option("--device", fo.devices, "a device to test (repeatable; default: all found)");
  fuzz_cmd->add_option("--replay", fo.replay, "rerun one case file written by an earlier run");
  fuzz_cmd->add_option("--out", fo.out_dir, "folder for reduced failing cases");
  fuzz_cmd->add_option("--skip", fo.skip, "seeds of known failures not to run (repeatable)");

  auto* gen = app.add_subcommand("generate", "generate text with a language model, then print its speed");
  GenerateArgs ga;
  auto* gen_src = gen->add_option_group("model");
  gen_src->add_option("--config", ga.config, "a built-in model shape with random weights: " + [] {
    std::string s;
    for (const std::string& n : llm_config_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }());
  gen_src->add_option("--model", ga.model, "a checkpoint (safetensors folder or GGUF file)");
  gen_src->require_option(1);
  gen->add_option("--prompt", ga.prompt, "the prompt");
  gen->add_option("--max-tokens", ga.max_tokens, "tokens to generate")->check(CLI::Range(1, 1000000));
  gen->add_option("--device", ga.device, "device, or best: cuda if found, else vulkan on a real GPU, else cpu");
  gen->add_option("--dtype", ga.dtype, "f32, f16, bf16, or q8, q4, q4z (quantized matrices), s24 (2:4 sparse, compressed; pruned if dense); f32 activations on the CPU, f16 elsewhere");
  gen->add_option("--temperature", ga.sampling.temperature, "0: greedy")->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", ga.sampling.top_k, "keep the k likeliest tokens (0: all)")->check(CLI::Range(0, 1 << 30));
  gen->add_option("--top-p", ga.sampling.top_p, "nucleus sampling mass")->check(CLI::Range(1e-9, 1.0));
  gen->add_option("--seed", ga.sampling.seed, "sampling seed");
  gen->add_flag("--print-ids", ga.print_ids, "also print the prompt's and the generated token ids on stderr");
  gen->add_option("--kv-dtype", ga.kv_dtype, "the KV cache's dtype, f32, f16 or bf16 (default: f16 for q8/q4/q4z models with f32 activations, else the activations')");
  PerplexityArgs pa;
  auto* ppl = app.add_subcommand("perplexity", "score a text with a language model: perplexity per token and bits per byte");
  ppl->add_option("--model", pa.model, "a checkpoint with its tokenizer (safetensors folder)")->required();
  ppl->add_option("--text", pa.text, "a UTF-8 text; pieces between blank lines are scored as <s> piece </s>")->required();
  ppl->add_option("--device", pa.device, "device, or best: cuda if found, else vulkan on a real GPU, else cpu");
  ppl->add_option("--dtype", pa.dtype, "f32, f16, bf16, or q8, q4, q4z, s24 (as generate's)");
  ppl->add_option("--kv-dtype", pa.kv_dtype, "the KV cache's dtype (as generate's)");
  ppl->add_option("--window", pa.window, "tokens a window (default: the model's context)")->check(CLI::Range(2, 1 << 20));
  ppl->add_option("--windows", pa.windows, "score the first N windows only (default: all)")->check(CLI::Range(1, 1 << 30));

  auto* quant = app.add_subcommand("quantize", "write a language model with quantized (q8, q4, q4z) or 2:4-compressed (s24) matrices");
  std::string model_in, model_out, scheme;
  quant->add_option("in", model_in, "a checkpoint folder or GGUF file")->required();
  quant->add_option("out", model_out, "the folder to write")->required();
  quant->add_option("--scheme", scheme, "q8, q4, q4z, or s24 (2:4 sparse, compressed: the 2 largest of each 4 inputs kept)")->required();

  auto* prune = app.add_subcommand("prune", "write a language model with its smallest weights zeroed");
  double sparsity = -1;
  std::string pattern;
  prune->add_option("in", model_in, "a checkpoint folder or GGUF file")->required();
  prune->add_option("out", model_out, "the folder to write")->required();
  prune->add_option("--sparsity", sparsity, "share of each output row's weights to zero")->check(CLI::Range(0.0, 0.999));
  prune->add_option("--pattern", pattern, "2:4: in each group of 4 inputs keep the 2 largest");

  CLI::App* sim = add_sim_command(app);
  CLI::App* cache_cmd = add_cache_command(app);
  CLI::App* tune = add_tune_command(app);
  CLI11_PARSE(app, argc, argv);
  if (dtype_s == "q8" || dtype_s == "q4" || dtype_s == "q4z" || dtype_s == "s24") bo.format = dtype_s;
  DType dtype = bo.format.empty() ? parse_dtype(dtype_s) : f32;
  if (app.got_subcommand("devices")) return cmd_devices();
  if (app.got_subcommand(dump)) return cmd_dump(what, stage, dtype, dev);
  if (app.got_subcommand(run)) return cmd_run(what, dtype, dev, parse_bindings(syms), profile, !no_check);
  if (app.got_subcommand(demo)) return cmd_demo(dev);
  if (app.got_subcommand(fuzz_cmd)) return fuzz(fo);
  if (app.got_subcommand(gen)) return cmd_generate(ga);
  if (app.got_subcommand(ppl)) return cmd_perplexity(pa);
  if (app.got_subcommand(sim)) return run_sim();
  if (app.got_subcommand(cache_cmd)) return run_cache();
  if (app.got_subcommand(tune)) return run_tune();
  if (app.got_subcommand(quant)) return cmd_quantize(model_in, model_out, scheme);
  if (app.got_subcommand(prune)) return cmd_prune(model_in, model_out, sparsity, pattern);
  bo.device = dev;
  bo.dtype = dtype;
  for (const std::string& w : workloads) bench_workload(w, bo);
  return 0;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  try {
    return kiln::main_impl(argc, argv);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: internal error: %s\n", e.what());
    return 2;
  }
}
