// The simulated systolic accelerator: its parameters (SystolicConfig), its
// instruction set (Instr) and a program of instructions. Both simulators (the
// cell-level reference, cell_model.h, and the fast instruction-level model,
// fast_model.h) run the same programs; docs/systolic.md gives the timing rules.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::systolic {

enum class Dataflow : uint8_t { WeightStationary, OutputStationary };
// What the array multiplies: int8 with int32 accumulators, or bf16 with f32 ones.
enum class InputType : uint8_t { Int8, Bf16 };

struct SystolicConfig {
  int rows = 128, cols = 128;  // the MAC array
  Dataflow dataflow = Dataflow::WeightStationary;
  InputType input = InputType::Bf16;
  // f32 contractions in bf16 mode: 1 pass (operands rounded to bf16), 3
  // (bf16x3: hi/lo splits) or 6 (bf16x6: three-way splits, about f32 accuracy).
  int bf16_passes = 1;
  // On-chip SRAM, bytes. Each buffer holds two slots (double buffering).
  int64_t input_buffer = 8 << 20;
  int64_t weight_buffer = 4 << 20;
  int64_t acc_buffer = 4 << 20;
  double dram_bytes_per_cycle = 64;  // DRAM bandwidth
  int dram_latency = 100;            // cycles from a DMA's issue to its first byte
  int vector_lanes = 128;            // elementwise ops per cycle on the vector unit
  double clock_ghz = 1.0;            // only to print seconds

  int input_bytes() const { return input == InputType::Int8 ? 1 : 2; }
  int acc_bytes() const { return 4; }
  // Throws kiln::Error naming the bad parameter.
  void validate() const;
  // "128x128 ws bf16, in 8 MiB / w 4 MiB / acc 4 MiB, DRAM 64 B/cycle + 100 cycles, 128 lanes"
  std::string describe() const;
};

SystolicConfig default_config();
// TPU v1 (Jouppi et al., ISCA 2017): 256x256 int8 weight-stationary, 24 MiB
// unified buffer, 4 MiB accumulators, 30 GB/s DDR3 at 700 MHz (about 43 B/cycle).
SystolicConfig tpu_v1_config();
// "default" or "tpu-v1"; throws kiln::Error otherwise.
SystolicConfig preset(const std::string& name);

enum class OpCode : uint8_t { DmaIn, DmaOut, LoadWeights, Matmul, Vector, Sync };
// Reads and writes have separate DRAM channels (as AXI does), each at the
// configured bandwidth.
enum class Unit : uint8_t { DmaIn, DmaOut, WeightLoader, Array, VectorUnit, None };
inline constexpr int kUnits = 6;
enum class BufferId : uint8_t { Input, Weight, Acc };
// Why an instruction waits for another: the data comes from DRAM, a buffer
// slot is still in use (SRAM capacity), or a computed result (dependency).
enum class Cause : uint8_t { Dram, Sram, Dependency };

const char* opcode_name(OpCode op);
const char* buffer_name(BufferId b);
const char* cause_name(Cause c);
Unit unit_of(OpCode op);

struct Dep {
  int on = 0;  // an earlier instruction's index
  Cause cause = Cause::Dependency;
};

// One instruction. DMAs move a rows x cols block of DRAM matrix `region`
// (starting at row0, col0) into or out of a slot of a buffer; LoadWeights
// copies a weight slot (k x n) into the array's weight bank `bank` (WS);
// Matmul multiplies an input slot (m x k) by the bank (WS) or by a weight slot
// (OS: k x n streamed from the top), writing or adding into an acc slot (m x n).
struct Instr {
  OpCode op = OpCode::Sync;
  int region = -1;
  int64_t row0 = 0, col0 = 0, rows = 0, cols = 0;
  BufferId buffer = BufferId::Input;
  int slot = 0;
  int64_t m = 0, k = 0, n = 0;
  int bank = 0;         // WS weight bank (two, double-buffered)
  int weight_slot = 0;  // OS: the weight slot the matmul streams
  int acc_slot = 0;
  bool accumulate = false;
  int64_t bytes = 0;          // a DMA with no region (timing only): bytes moved
  int64_t vector_cycles = 0;  // Vector: cycles on the vector unit
  int64_t vector_elements = 0;
  std::vector<Dep> deps;

  int64_t dram_bytes(const SystolicConfig& c) const;  // DMAs: bytes moved
  int64_t macs() const { return op == OpCode::Matmul ? m * k * n : 0; }
};

struct Program {
  std::vector<Instr> instrs;
  int add(Instr i) {
    instrs.push_back(std::move(i));
    return int(instrs.size()) - 1;
  }
};

// One line per instruction: "12 matmul m=128 k=128 n=128 in.1 bank1 -> acc.0 += | deps 9:dram 11:dep".
std::string print(const Instr& i);
std::string print(const Program& p);

// The fixed timing rules both simulators follow (docs/systolic.md derives them).
// WS matmul: the input port is busy m cycles; its last result reaches the
// accumulators rows + n - 1 cycles after its last row enters.
inline int64_t ws_issue_cycles(const Instr& i) { return i.m; }
// A weight bank may be reloaded once the last input that uses it has passed
// every column: m + cols - 1 cycles after that matmul starts.
inline int64_t ws_bank_busy(const Instr& i, const SystolicConfig& c) { return i.m + c.cols - 1; }
inline int64_t ws_latency(const Instr& i, const SystolicConfig& c) { return i.m + c.rows + i.n - 2; }
// OS tile: k + m + n - 2 cycles of MACs (skewed wavefront), then m cycles to
// shift the results out; the array takes the next tile after that.
inline int64_t os_latency(const Instr& i) { return i.k + 2 * i.m + i.n - 2; }

}  // namespace kiln::systolic
