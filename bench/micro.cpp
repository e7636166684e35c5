// Google Benchmark micro-benchmarks of kiln's own costs: lowering, compiling a
// kernel (no cache), launching a small kernel, and the reference interpreter.
//
//   build/bin/kiln_micro_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include "codegen/lower.h"
#include "frontend/workloads.h"
#include "kiln/kiln.h"

namespace kiln {
namespace {

void BM_LowerAndSchedule(benchmark::State& state) {
  Workload w = make_workload("mlp:64");
  DeviceInfo cpu = device("cpu")->info();
  for (auto _ : state) {
    Program p = lower(w.graph);
    for (const Kernel& k : p.kernels) benchmark::DoNotOptimize(apply(k, default_schedule(k, cpu)));
  }
}
BENCHMARK(BM_LowerAndSchedule);

// A cold compile of one matmul kernel: LLVM O3 and the JIT, no kernel cache.
void BM_CompileMatmulKernel(benchmark::State& state) {
  Workload w = make_workload("matmul:256x256x256");
  auto dev = device("cpu");
  Kernel k = lower(w.graph).kernels[0];
  Kernel scheduled = apply(k, default_schedule(k, dev->info()));
  for (auto _ : state) benchmark::DoNotOptimize(dev->compile(scheduled));
}
BENCHMARK(BM_CompileMatmulKernel)->Unit(benchmark::kMillisecond);

// Launch overhead: a 4096-element add, compiled once.
void BM_ExecuteSmallAdd(benchmark::State& state) {
  Workload w = make_workload("add:4096");
  CompiledGraph cg(w.graph, device("cpu"));
  cg.set_inputs(w.inputs);
  for (auto _ : state) cg.execute();
}
BENCHMARK(BM_ExecuteSmallAdd)->Unit(benchmark::kMicrosecond);

void BM_InterpretSoftmax(benchmark::State& state) {
  Workload w = make_workload("softmax:64x256");
  for (auto _ : state) benchmark::DoNotOptimize(interpret(w.graph, w.inputs));
}
BENCHMARK(BM_InterpretSoftmax)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kiln

BENCHMARK_MAIN();
