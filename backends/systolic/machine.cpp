#include "backends/systolic/machine.h"

#include <cmath>
#include <sstream>

#include "kiln/error.h"

namespace kiln::systolic {

void SystolicConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("systolic config: " + what);
  };
  need(rows >= 1 && cols >= 1 && rows <= 4096 && cols <= 4096, "the array must be 1x1 to 4096x4096");
  need(bf16_passes == 1 || bf16_passes == 3 || bf16_passes == 6, "bf16 passes must be 1, 3 or 6");
  need(input_buffer >= 2 * int64_t(rows) * input_bytes(), "the input buffer is too small for two rows");
  need(weight_buffer >= 2 * int64_t(rows) * cols * input_bytes(), "the weight buffer must hold two array tiles");
  need(acc_buffer >= 2 * int64_t(cols) * acc_bytes(), "the accumulator buffer is too small for two rows");
  need(dram_bytes_per_cycle > 0 && std::isfinite(dram_bytes_per_cycle), "DRAM bandwidth must be > 0");
  need(dram_latency >= 0, "DRAM latency must be >= 0");
  need(vector_lanes >= 1, "the vector unit needs a lane");
  need(clock_ghz > 0, "the clock must be > 0");
}

std::string SystolicConfig::describe() const {
  auto mib = [](int64_t b) {
    std::ostringstream os;
    if (b % (1 << 20) == 0) os << (b >> 20) << " MiB";
    else os << (b >> 10) << " KiB";
    return os.str();
  };
  std::ostringstream os;
  os << rows << "x" << cols << (dataflow == Dataflow::WeightStationary ? " ws " : " os ")
     << (input == InputType::Int8 ? "int8" : "bf16");
  if (input == InputType::Bf16 && bf16_passes > 1) os << "x" << bf16_passes;
  os << ", in " << mib(input_buffer) << " / w " << mib(weight_buffer) << " / acc " << mib(acc_buffer) << ", DRAM "
     << dram_bytes_per_cycle << " B/cycle + " << dram_latency << " cycles, " << vector_lanes << " lanes, "
     << clock_ghz << " GHz";
  return os.str();
}

SystolicConfig default_config() { return {}; }

SystolicConfig tpu_v1_config() {
  SystolicConfig c;
  c.rows = c.cols = 256;
  c.dataflow = Dataflow::WeightStationary;
  c.input = InputType::Int8;
  c.input_buffer = 24 << 20;   // the unified buffer
  c.weight_buffer = 256 << 10;  // the weight FIFO: four 64 KiB tiles
  c.acc_buffer = 4 << 20;
  c.dram_bytes_per_cycle = 30e9 / 700e6;  // 30 GB/s at 700 MHz
  c.dram_latency = 100;
  c.vector_lanes = 256;
  c.clock_ghz = 0.7;
  return c;
}

SystolicConfig preset(const std::string& name) {
  if (name == "default") return default_config();
  if (name == "tpu-v1") return tpu_v1_config();
  throw Error("unknown systolic preset '" + name + "' (default, tpu-v1)");
}

const char* opcode_name(OpCode op) {
  switch (op) {
    case OpCode::DmaIn: return "dma_in";
    case OpCode::DmaOut: return "dma_out";
    case OpCode::LoadWeights: return "load_weights";
    case OpCode::Matmul: return "matmul";
    case OpCode::Vector: return "vector";
    case OpCode::Sync: return "sync";
  }
  return "?";
}

const char* buffer_name(BufferId b) {
  switch (b) {
    case BufferId::Input: return "in";
    case BufferId::Weight: return "w";
    case BufferId::Acc: return "acc";
  }
  return "?";
}

const char* cause_name(Cause c) {
  switch (c) {
    case Cause::Dram: return "dram";
    case Cause::Sram: return "sram";
    case Cause::Dependency: return "dep";
  }
  return "?";
}

Unit unit_of(OpCode op) {
  switch (op) {
    case OpCode::DmaIn: return Unit::DmaIn;
    case OpCode::DmaOut: return Unit::DmaOut;
    case OpCode::LoadWeights: return Unit::WeightLoader;
    case OpCode::Matmul: return Unit::Array;
    case OpCode::Vector: return Unit::VectorUnit;
    case OpCode::Sync: return Unit::None;
  }
  return Unit::None;
}

int64_t Instr::dram_bytes(const SystolicConfig& c) const {
  if (region < 0) return op == OpCode::DmaIn || op == OpCode::DmaOut ? bytes : 0;
  if (op == OpCode::DmaIn) return rows * cols * c.input_bytes();
  if (op == OpCode::DmaOut) return rows * cols * c.acc_bytes();
  return 0;
}

std::string print(const Instr& i) {
  std::ostringstream os;
  os << opcode_name(i.op);
  switch (i.op) {
    case OpCode::DmaIn:
      if (i.region < 0) {
        os << " " << i.bytes << " B -> " << buffer_name(i.buffer) << "." << i.slot;
        break;
      }
      os << " dram" << i.region << "[" << i.row0 << "+" << i.rows << ", " << i.col0 << "+" << i.cols << "] -> "
         << buffer_name(i.buffer) << "." << i.slot;
      break;
    case OpCode::DmaOut:
      if (i.region < 0) {
        os << " " << buffer_name(i.buffer) << "." << i.slot << " -> " << i.bytes << " B";
        break;
      }
      os << " " << buffer_name(i.buffer) << "." << i.slot << " -> dram" << i.region << "[" << i.row0 << "+" << i.rows
         << ", " << i.col0 << "+" << i.cols << "]";
      break;
    case OpCode::LoadWeights: os << " w." << i.slot << " k=" << i.k << " n=" << i.n << " -> bank" << i.bank; break;
    case OpCode::Matmul:
      os << " m=" << i.m << " k=" << i.k << " n=" << i.n << " in." << i.slot;
      if (i.bank >= 0) os << " bank" << i.bank;
      else os << " w." << i.weight_slot;
      os << " -> acc." << i.acc_slot << (i.accumulate ? " +=" : " =");
      break;
    case OpCode::Vector: os << " elements=" << i.vector_elements << " cycles=" << i.vector_cycles; break;
    case OpCode::Sync: break;
  }
  if (!i.deps.empty()) {
    os << " | deps";
    for (const Dep& d : i.deps) os << " " << d.on << ":" << cause_name(d.cause);
  }
  return os.str();
}

std::string print(const Program& p) {
  std::ostringstream os;
  for (size_t j = 0; j < p.instrs.size(); ++j) os << j << " " << print(p.instrs[j]) << "\n";
  return os.str();
}

}  // namespace kiln::systolic
