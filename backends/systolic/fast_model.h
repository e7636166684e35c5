// The fast instruction-level model: each instruction's start and end from
// closed-form durations (machine.h) and its dependencies, in one pass over the
// program; and the program's results computed a tile at a time.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/systolic/machine.h"

namespace kiln::systolic {

struct InstrTiming {
  int64_t start = 0, done = 0;  // done: the first cycle a dependent instruction may start
  bool stalled = false;         // started later than its unit was free
  Cause cause = Cause::Dependency;  // of the dependency it waited for last, when stalled
};

struct Stats {
  int64_t total_cycles = 0;
  int64_t compute_cycles = 0;  // cycles in which the array or the vector unit works
  int64_t array_cycles = 0, vector_cycles = 0;
  std::array<int64_t, 3> stall{};  // by Cause: dram, sram, dependency; they add up with compute to total
  int64_t macs = 0;
  int64_t array_cells = 1;  // rows * cols
  int64_t dram_read = 0, dram_written = 0;
  std::array<int64_t, 3> buffer_bytes{};  // by BufferId: bytes written and read
  int64_t instructions = 0;

  // MACs done over MACs the array could have done in total_cycles.
  double utilization() const;
  // Programs that run one after the other (a graph's kernels).
  void append(const Stats& s);
  // "dram bandwidth", "sram capacity", "dependency" or "compute": the largest share.
  std::string bottleneck() const;
};

struct Timeline {
  std::vector<InstrTiming> instrs;
  Stats stats;
};

Timeline time_program(const Program& p, const SystolicConfig& c);

// A DRAM matrix as the array sees it: int8 mode holds int32 values (int8 range
// for operands, int32 sums), bf16 mode holds floats (bf16 values for operands,
// f32 sums).
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> f;
  std::vector<int32_t> i;
  static Matrix of(const SystolicConfig& c, int64_t rows, int64_t cols);
};

// Runs the program's data movement and matmuls in program order (a valid
// order: dependencies point backwards). Results are bit-exact with the
// cell-level model: each matmul sums its k products in order starting from 0,
// and adds that to the accumulator.
void execute(const Program& p, const SystolicConfig& c, std::vector<Matrix>& dram);

// CSV: index,op,unit,start,done,stall_cause,m,k,n,dram_bytes,text
std::string trace_csv(const Program& p, const Timeline& t, const SystolicConfig& c, int64_t cycle_offset = 0,
                      const std::string& kernel = "", bool header = true);

}  // namespace kiln::systolic
