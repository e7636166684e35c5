#include "backends/systolic/fast_model.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "backends/systolic/arith.h"
#include "kiln/error.h"

namespace kiln::systolic {

double Stats::utilization() const {
  if (total_cycles == 0) return 0;
  return double(macs) / (double(array_cells) * double(total_cycles));
}

void Stats::append(const Stats& s) {
  total_cycles += s.total_cycles;
  compute_cycles += s.compute_cycles;
  array_cycles += s.array_cycles;
  vector_cycles += s.vector_cycles;
  for (int j = 0; j < 3; ++j) stall[j] += s.stall[j], buffer_bytes[j] += s.buffer_bytes[j];
  macs += s.macs;
  array_cells = s.array_cells;
  dram_read += s.dram_read;
  dram_written += s.dram_written;
  instructions += s.instructions;
}

std::string Stats::bottleneck() const {
  const char* names[] = {"dram bandwidth", "sram capacity", "dependency (pipeline fill/drain, waits on results)"};
  int worst = int(std::max_element(stall.begin(), stall.end()) - stall.begin());
  if (compute_cycles >= stall[worst]) {
    return array_cycles >= vector_cycles ? "compute (the array)" : "compute (the vector unit)";
  }
  return names[worst];
}

namespace {

int64_t ceil_div(double a, double b) { return int64_t(std::ceil(a / b - 1e-12)); }

// Cycles the instruction keeps its unit busy.
int64_t busy_cycles(const Instr& i, const SystolicConfig& c) {
  switch (i.op) {
    case OpCode::DmaIn: case OpCode::DmaOut: return ceil_div(double(i.dram_bytes(c)), c.dram_bytes_per_cycle);
    case OpCode::LoadWeights: return i.k;
    case OpCode::Matmul:  // OS: the array takes a tile only once the last one has drained
      return c.dataflow == Dataflow::WeightStationary ? ws_issue_cycles(i) : os_latency(i);
    case OpCode::Vector: return i.vector_cycles;
    case OpCode::Sync: return 0;
  }
  return 0;
}

// Cycles from start until dependents may start.
int64_t latency(const Instr& i, const SystolicConfig& c) {
  switch (i.op) {
    case OpCode::DmaIn: case OpCode::DmaOut: return c.dram_latency + busy_cycles(i, c);
    case OpCode::Matmul:
      return c.dataflow == Dataflow::WeightStationary ? ws_latency(i, c) : os_latency(i);
    default: return busy_cycles(i, c);
  }
}

void count_bytes(const Instr& i, const SystolicConfig& c, Stats& s) {
  int64_t in = c.input_bytes(), acc = c.acc_bytes();
  auto buf = [&](BufferId b) -> int64_t& { return s.buffer_bytes[int(b)]; };
  switch (i.op) {
    case OpCode::DmaIn: s.dram_read += i.dram_bytes(c); buf(i.buffer) += i.dram_bytes(c); break;
    case OpCode::DmaOut: s.dram_written += i.dram_bytes(c); buf(i.buffer) += i.dram_bytes(c); break;
    case OpCode::LoadWeights: buf(BufferId::Weight) += i.k * i.n * in; break;
    case OpCode::Matmul:
      buf(BufferId::Input) += i.m * i.k * in;
      if (i.bank < 0) buf(BufferId::Weight) += i.k * i.n * in;
      buf(BufferId::Acc) += i.m * i.n * acc * (i.accumulate ? 2 : 1);
      break;
    default: break;
  }
}

// Splits the cycles in which neither the array nor the vector unit works by
// the cause that held up the compute instruction after them; the tail after
// the last one is pipeline drain (dependency) and then write-back (DRAM).
void attribute_stalls(const Program& p, const Timeline& t, const SystolicConfig& c, Stats& s) {
  struct Busy {
    int64_t start, end;
    int instr;
  };
  std::vector<Busy> busy;
  int64_t compute_done = 0;
  for (size_t j = 0; j < p.instrs.size(); ++j) {
    const Instr& i = p.instrs[j];
    if (i.op != OpCode::Matmul && i.op != OpCode::Vector) continue;
    int64_t b = busy_cycles(i, c);
    (i.op == OpCode::Matmul ? s.array_cycles : s.vector_cycles) += b;
    compute_done = std::max(compute_done, t.instrs[j].done);
    if (b > 0) busy.push_back({t.instrs[j].start, t.instrs[j].start + b, int(j)});
  }
  std::sort(busy.begin(), busy.end(), [](const Busy& a, const Busy& b) { return a.start < b.start; });
  int64_t covered = 0;
  for (const Busy& b : busy) {
    if (b.start > covered) {
      const InstrTiming& it = t.instrs[b.instr];
      s.stall[int(it.stalled ? it.cause : Cause::Dependency)] += b.start - covered;
    }
    s.compute_cycles += std::max<int64_t>(0, b.end - std::max(covered, b.start));
    covered = std::max(covered, b.end);
  }
  int64_t drain_end = std::clamp(compute_done, covered, s.total_cycles);
  s.stall[int(Cause::Dependency)] += drain_end - covered;
  s.stall[int(Cause::Dram)] += s.total_cycles - drain_end;
}

}  // namespace

Timeline time_program(const Program& p, const SystolicConfig& c) {
  Timeline t;
  t.instrs.resize(p.instrs.size());
  Stats& s = t.stats;
  s.array_cells = int64_t(c.rows) * c.cols;
  s.instructions = int64_t(p.instrs.size());
  int64_t unit_free[kUnits] = {};
  int64_t bank_free[2] = {};
  int64_t all_done = 0;
  for (size_t j = 0; j < p.instrs.size(); ++j) {
    const Instr& i = p.instrs[j];
    InstrTiming& it = t.instrs[j];
    int64_t ready = 0;
    for (const Dep& d : i.deps) {
      if (d.on < 0 || size_t(d.on) >= j) throw Error("systolic program: instruction " + std::to_string(j) +
                                                     " depends on " + std::to_string(d.on));
      if (t.instrs[d.on].done <= ready) continue;
      ready = t.instrs[d.on].done;
      // A weight load only passes data on: its own wait is the cause.
      const InstrTiming& dt = t.instrs[d.on];
      it.cause = p.instrs[d.on].op == OpCode::LoadWeights && dt.stalled ? dt.cause : d.cause;
    }
    Unit u = unit_of(i.op);
    if (i.op == OpCode::Sync) ready = std::max(ready, all_done);
    int64_t free = u == Unit::None ? 0 : unit_free[int(u)];
    if (i.op == OpCode::LoadWeights) free = std::max(free, bank_free[i.bank & 1]);
    it.start = std::max(free, ready);
    it.stalled = ready > free;
    if (u != Unit::None) unit_free[int(u)] = it.start + busy_cycles(i, c);
    it.done = it.start + latency(i, c);
    if (i.op == OpCode::Matmul && i.bank >= 0) bank_free[i.bank & 1] = it.start + ws_bank_busy(i, c);
    all_done = std::max(all_done, it.done);
    s.macs += i.macs();
    count_bytes(i, c, s);
  }
  s.total_cycles = all_done;
  attribute_stalls(p, t, c, s);
  return t;
}

Matrix Matrix::of(const SystolicConfig& c, int64_t rows, int64_t cols) {
  Matrix m;
  m.rows = rows;
  m.cols = cols;
  if (c.input == InputType::Int8) m.i.assign(size_t(rows * cols), 0);
  else m.f.assign(size_t(rows * cols), 0.0f);
  return m;
}

namespace {

void check_block(const Instr& i, const std::vector<Matrix>& dram) {
  if (i.region < 0 || size_t(i.region) >= dram.size())
    throw Error("systolic program: no DRAM region " + std::to_string(i.region));
  const Matrix& m = dram[i.region];
  if (i.row0 < 0 || i.col0 < 0 || i.row0 + i.rows > m.rows || i.col0 + i.cols > m.cols)
    throw Error("systolic program: '" + print(i) + "' is outside its " + std::to_string(m.rows) + "x" +
                std::to_string(m.cols) + " region");
}

// The product of an m x k tile and a k x n tile, each output summed over k in
// order from 0 (what the array's columns (WS) or cells (OS) compute), written
// to `out` or, with `accumulate`, added to it. Register blocks of kRows rows
// by kCols columns keep their sums in vectors over the whole k loop: every
// output sees the same operations in the same order as a scalar loop (mul,
// then add; no fused multiply-add), so results are bit-exact with the
// cell-level model. E is float, or uint32_t for the int8 path's wrapping
// int32 arithmetic.
template <typename E>
struct Vec {
  typedef E type __attribute__((vector_size(32)));  // 8 lanes
};
constexpr int64_t kLanes = 8, kVecs = 2, kCols = kLanes * kVecs, kRows = 4;

template <typename E, int64_t R>
[[gnu::always_inline]] inline void block(const E* __restrict a, const E* __restrict w, E* __restrict out, int64_t k,
                                         int64_t n, int64_t j, bool accumulate) {
  using V = typename Vec<E>::type;
  V s[R][kVecs] = {};
  for (int64_t q = 0; q < k; ++q) {
    V wv[kVecs];
    for (int64_t v = 0; v < kVecs; ++v) __builtin_memcpy(&wv[v], w + q * n + j + v * kLanes, sizeof(V));
    for (int64_t r = 0; r < R; ++r) {
      E x = a[r * k + q];
      for (int64_t v = 0; v < kVecs; ++v) s[r][v] = s[r][v] + x * wv[v];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t v = 0; v < kVecs; ++v) {
      E* o = out + r * n + j + v * kLanes;
      V old;
      if (accumulate) __builtin_memcpy(&old, o, sizeof(V)), s[r][v] = old + s[r][v];
      __builtin_memcpy(o, &s[r][v], sizeof(V));
    }
}

// One output at a time (the columns right of the last full block).
template <typename E>
[[gnu::always_inline]] inline void column(const E* __restrict a, const E* __restrict w, E* __restrict out, int64_t k,
                                          int64_t n, int64_t j, bool accumulate) {
  E s = 0;
  for (int64_t q = 0; q < k; ++q) s = s + a[q] * w[q * n + j];
  out[j] = accumulate ? out[j] + s : s;
}

template <typename E>
[[gnu::always_inline]] inline void product_body(const E* __restrict a, const E* __restrict w, E* __restrict out,
                                                int64_t m, int64_t k, int64_t n, bool accumulate) {
  int64_t full = n / kCols * kCols;
  // Column strips outermost: a strip of w (k x kCols) stays in L1 over all rows.
  for (int64_t j = 0; j < full; j += kCols) {
    int64_t r = 0;
    for (; r + kRows <= m; r += kRows) block<E, kRows>(a + r * k, w, out + r * n, k, n, j, accumulate);
    for (; r < m; ++r) block<E, 1>(a + r * k, w, out + r * n, k, n, j, accumulate);
  }
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = full; j < n; ++j) column<E>(a + r * k, w, out + r * n, k, n, j, accumulate);
}

// Not under ThreadSanitizer: the clones' ifunc resolver runs while the dynamic
// loader relocates, before TSan's runtime is up, and crashed test_runtime at start.
#if defined(__SANITIZE_THREAD__)
#define KILN_NO_CLONES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KILN_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(KILN_NO_CLONES)
#define KILN_SYSTOLIC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KILN_SYSTOLIC_CLONES
#endif

KILN_SYSTOLIC_CLONES void tile_product(const float* a, const float* w, float* out, int64_t m, int64_t k, int64_t n,
                                      bool accumulate) {
  product_body<float>(a, w, out, m, k, n, accumulate);
}

// int32 sums wrap: the same bits as uint32_t arithmetic.
KILN_SYSTOLIC_CLONES void tile_product(const int32_t* a, const int32_t* w, int32_t* out, int64_t m, int64_t k,
                                      int64_t n, bool accumulate) {
  product_body<uint32_t>(reinterpret_cast<const uint32_t*>(a), reinterpret_cast<const uint32_t*>(w),
                         reinterpret_cast<uint32_t*>(out), m, k, n, accumulate);
}

template <typename T>
void run(const Program& p, const SystolicConfig& c, std::vector<Matrix>& dram) {
  int max_slot = 0;
  for (const Instr& i : p.instrs) max_slot = std::max({max_slot, i.slot, i.weight_slot, i.acc_slot});
  std::vector<std::vector<T>> slots[3];
  std::vector<std::array<int64_t, 2>> shape[3];
  for (int b = 0; b < 3; ++b) slots[b].resize(size_t(max_slot) + 1), shape[b].resize(size_t(max_slot) + 1);
  std::vector<T> bank[2];
  int64_t bank_shape[2][2] = {};
  for (const Instr& i : p.instrs) {
    switch (i.op) {
      case OpCode::DmaIn: {
        if (i.region < 0) break;  // timing only
        check_block(i, dram);
        std::vector<T>& src = data<T>(dram[i.region]);
        std::vector<T>& dst = slots[int(i.buffer)][i.slot];
        dst.resize(size_t(i.rows * i.cols));
        int64_t stride = dram[i.region].cols;
        for (int64_t r = 0; r < i.rows; ++r)
          std::copy_n(src.begin() + (i.row0 + r) * stride + i.col0, i.cols, dst.begin() + r * i.cols);
        shape[int(i.buffer)][i.slot][0] = i.rows;
        shape[int(i.buffer)][i.slot][1] = i.cols;
        break;
      }
      case OpCode::DmaOut: {
        if (i.region < 0) break;
        check_block(i, dram);
        std::vector<T>& dst = data<T>(dram[i.region]);
        const std::vector<T>& src = slots[int(i.buffer)][i.slot];
        int64_t width = shape[int(i.buffer)][i.slot][1];
        if (i.rows > shape[int(i.buffer)][i.slot][0] || i.cols > width)
          throw Error("systolic program: '" + print(i) + "' reads past its slot");
        int64_t stride = dram[i.region].cols;
        for (int64_t r = 0; r < i.rows; ++r)
          std::copy_n(src.begin() + r * width, i.cols, dst.begin() + (i.row0 + r) * stride + i.col0);
        break;
      }
      case OpCode::LoadWeights: {
        const int64_t* s = shape[int(BufferId::Weight)][i.slot].data();
        if (s[0] != i.k || s[1] != i.n) throw Error("systolic program: '" + print(i) + "' does not fit its slot");
        bank[i.bank] = slots[int(BufferId::Weight)][i.slot];
        bank_shape[i.bank][0] = i.k;
        bank_shape[i.bank][1] = i.n;
        break;
      }
      case OpCode::Matmul: {
        const int64_t* s = shape[int(BufferId::Input)][i.slot].data();
        bool ws = i.bank >= 0;
        const std::vector<T>& w = ws ? bank[i.bank] : slots[int(BufferId::Weight)][i.weight_slot];
        const int64_t* ws_shape = ws ? bank_shape[i.bank] : shape[int(BufferId::Weight)][i.weight_slot].data();
        if (s[0] != i.m || s[1] != i.k || ws_shape[0] != i.k || ws_shape[1] != i.n)
          throw Error("systolic program: '" + print(i) + "' does not match its operands");
        std::vector<T>& acc = slots[int(BufferId::Acc)][i.acc_slot];
        int64_t* as = shape[int(BufferId::Acc)][i.acc_slot].data();
        if (i.accumulate) {
          if (as[0] != i.m || as[1] != i.n) throw Error("systolic program: '" + print(i) + "' adds to another shape");
        } else {
          acc.resize(size_t(i.m * i.n));
          as[0] = i.m;
          as[1] = i.n;
        }
        tile_product(slots[int(BufferId::Input)][i.slot].data(), w.data(), acc.data(), i.m, i.k, i.n, i.accumulate);
        break;
      }
      case OpCode::Vector: case OpCode::Sync: break;
    }
  }
}

}  // namespace

void execute(const Program& p, const SystolicConfig& c, std::vector<Matrix>& dram) {
  if (c.input == InputType::Int8) run<int32_t>(p, c, dram);
  else run<float>(p, c, dram);
}

std::string trace_csv(const Program& p, const Timeline& t, const SystolicConfig& c, int64_t cycle_offset,
                      const std::string& kernel, bool header) {
  std::ostringstream os;
  if (header) os << "kernel,index,op,start,done,stall_cause,m,k,n,dram_bytes,instruction\n";
  for (size_t j = 0; j < p.instrs.size(); ++j) {
    const Instr& i = p.instrs[j];
    const InstrTiming& it = t.instrs[j];
    os << kernel << "," << j << "," << opcode_name(i.op) << "," << it.start + cycle_offset << ","
       << it.done + cycle_offset << "," << (it.stalled ? cause_name(it.cause) : "") << "," << i.m << "," << i.k
       << "," << i.n << "," << i.dram_bytes(c) << ",\"" << print(i) << "\"\n";
  }
  return os.str();
}

}  // namespace kiln::systolic
