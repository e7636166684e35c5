#include "backends/systolic/cell_model.h"

#include <algorithm>
#include <array>

#include "backends/systolic/arith.h"
#include "kiln/error.h"

namespace kiln::systolic {

namespace {

// A value in a cell's register, tagged with the instruction it belongs to and
// its position (the row m of a WS input; the step k of an OS operand; the
// output row of a result being shifted out).
template <typename T>
struct Reg {
  bool valid = false;
  T v{};
  int instr = -1;
  int64_t idx = 0;
  int bank = 0;
};

constexpr int64_t kNever = -1;

template <typename T>
class CellSim {
 public:
  CellSim(const Program& p, const SystolicConfig& c, std::vector<Matrix>& dram)
      : p_(p), c_(c), dram_(dram), R_(c.rows), C_(c.cols), n_(p.instrs.size()) {
    int max_slot = 0;
    for (const Instr& i : p.instrs) max_slot = std::max({max_slot, i.slot, i.weight_slot, i.acc_slot});
    for (int b = 0; b < 3; ++b) slots_[b].resize(size_t(max_slot) + 1), shape_[b].resize(size_t(max_slot) + 1);
    for (auto& b : bank_) b.assign(size_t(R_ * C_), T{});
    a_.resize(size_t(R_ * C_));
    p_reg_.resize(size_t(R_ * C_));
    b_.resize(size_t(R_ * C_));
    chain_.resize(size_t(R_ * C_));
    cell_acc_.assign(size_t(R_ * C_), T{});
    port_last_.assign(size_t(R_), -1);
    timing_.resize(n_);
    started_.assign(n_, false);
    done_.assign(n_, kNever);
    written_.assign(n_, 0);
  }

  CellRun run() {
    int64_t bound = 1000;
    for (const Instr& i : p_.instrs)
      bound += c_.dram_latency + int64_t(double(std::max(i.dram_bytes(c_), int64_t(1))) / c_.dram_bytes_per_cycle) +
               i.m + i.k + i.n + R_ + C_ + i.vector_cycles + 2 * i.m;
    for (t_ = 0; remaining() > 0; ++t_) {
      if (t_ > bound) throw Error("systolic cell model: the program makes no progress");
      start_ready();
      step();
    }
    CellRun r;
    r.instrs = timing_;
    for (size_t j = 0; j < n_; ++j) r.total_cycles = std::max(r.total_cycles, done_[j]);
    return r;
  }

 private:
  size_t remaining() const {
    size_t left = 0;
    for (size_t j = 0; j < n_; ++j) left += done_[j] == kNever || done_[j] > t_;
    return left;
  }

  bool deps_done(size_t j) const {
    for (const Dep& d : p_.instrs[j].deps)
      if (done_[d.on] == kNever || done_[d.on] > t_) return false;
    if (p_.instrs[j].op == OpCode::Sync)
      for (size_t q = 0; q < j; ++q)
        if (done_[q] == kNever || done_[q] > t_) return false;
    return true;
  }

  // The next instruction of each unit starts when its unit can take it and
  // its dependencies are done (repeated: a zero-cycle instruction may free
  // the next one in the same cycle).
  void start_ready() {
    for (bool progress = true; progress;) {
      progress = false;
      for (int u = 0; u < kUnits; ++u) {
        while (head_[u] < n_ && (started_[head_[u]] || unit_of(p_.instrs[head_[u]].op) != Unit(u))) ++head_[u];
        size_t j = head_[u];
        if (j >= n_ || !unit_free(Unit(u), j) || !deps_done(j)) continue;
        start(j);
        progress = true;
      }
    }
  }

  bool unit_free(Unit u, size_t j) const {
    const Instr& i = p_.instrs[j];
    switch (u) {
      case Unit::DmaIn: return dma_[0] < 0;
      case Unit::DmaOut: return dma_[1] < 0;
      case Unit::WeightLoader: return load_ < 0 && bank_free_[i.bank & 1] <= t_;
      case Unit::VectorUnit: return vector_free_ <= t_;
      case Unit::None: return true;
      case Unit::Array:
        if (c_.dataflow == Dataflow::OutputStationary) return os_ < 0;
        // Each row's input port injects one value per cycle.
        for (int64_t r = 0; r < std::min<int64_t>(i.k, R_); ++r)
          if (port_last_[r] >= t_ + r) return false;
        return true;
    }
    return false;
  }

  void start(size_t j) {
    const Instr& i = p_.instrs[j];
    started_[j] = true;
    timing_[j].start = t_;
    switch (i.op) {
      case OpCode::DmaIn: case OpCode::DmaOut: {
        int ch = i.op == OpCode::DmaOut;
        dma_[ch] = int(j);
        dma_left_[ch] = double(i.dram_bytes(c_));
        if (ch && i.region >= 0) dma_out_data_ = read_slot(i);
        break;
      }
      case OpCode::LoadWeights:
        if (i.k > R_ || i.n > C_) throw Error("systolic cell model: '" + print(i) + "' exceeds the array");
        load_ = int(j);
        break;
      case OpCode::Matmul: start_matmul(j); break;
      case OpCode::Vector:
        vector_free_ = t_ + i.vector_cycles;
        finish(j, vector_free_);
        break;
      case OpCode::Sync: finish(j, t_); break;
    }
  }

  void finish(size_t j, int64_t when) {
    done_[j] = when;
    timing_[j].done = when;
  }

  std::vector<T> read_slot(const Instr& i) {
    const auto& s = shape_[int(i.buffer)][i.slot];
    if (i.rows > s[0] || i.cols > s[1]) throw Error("systolic cell model: '" + print(i) + "' reads past its slot");
    return slots_[int(i.buffer)][i.slot];
  }

  void start_matmul(size_t j) {
    const Instr& i = p_.instrs[j];
    bool ws = c_.dataflow == Dataflow::WeightStationary;
    if ((ws ? i.k : i.m) > R_ || i.n > C_) throw Error("systolic cell model: '" + print(i) + "' exceeds the array");
    const auto& in = shape_[int(BufferId::Input)][i.slot];
    if (in[0] != i.m || in[1] != i.k) throw Error("systolic cell model: '" + print(i) + "' does not fit its input");
    auto& acc = shape_[int(BufferId::Acc)][i.acc_slot];
    if (!i.accumulate) {
      slots_[int(BufferId::Acc)][i.acc_slot].assign(size_t(i.m * i.n), T{});
      acc = {i.m, i.n};
    } else if (acc[0] != i.m || acc[1] != i.n) {
      throw Error("systolic cell model: '" + print(i) + "' adds to another shape");
    }
    if (ws) {
      for (int64_t r = 0; r < i.k; ++r) port_last_[r] = t_ + i.m - 1 + r;
      bank_free_[i.bank & 1] = t_ + ws_bank_busy(i, c_);
      feeding_.push_back(j);
    } else {
      const auto& w = shape_[int(BufferId::Weight)][i.weight_slot];
      if (w[0] != i.k || w[1] != i.n) throw Error("systolic cell model: '" + print(i) + "' does not fit its weights");
      os_ = int(j);
      os_macs_ = 0;
    }
  }

  void step() {
    step_dma(0);
    step_dma(1);
    step_load();
    if (c_.dataflow == Dataflow::WeightStationary) step_ws();
    else step_os();
  }

  void step_dma(int ch) {
    if (dma_[ch] < 0) return;
    const Instr& i = p_.instrs[size_t(dma_[ch])];
    dma_left_[ch] -= c_.dram_bytes_per_cycle;
    if (dma_left_[ch] > 1e-9) return;
    // The last byte leaves in this cycle; it lands dram_latency cycles later.
    finish(size_t(dma_[ch]), t_ + 1 + c_.dram_latency);
    dma_[ch] = -1;
    if (i.region < 0) return;  // timing only
    if ( size_t(i.region) >= dram_.size()) throw Error("systolic cell model: no region in '" + print(i) + "'");
    Matrix& m = dram_[i.region];
    if (i.row0 < 0 || i.col0 < 0 || i.row0 + i.rows > m.rows || i.col0 + i.cols > m.cols)
      throw Error("systolic cell model: '" + print(i) + "' is outside its region");
    std::vector<T>& d = data<T>(m);
    if (i.op == OpCode::DmaIn) {
      std::vector<T>& s = slots_[int(i.buffer)][i.slot];
      s.resize(size_t(i.rows * i.cols));
      for (int64_t r = 0; r < i.rows; ++r)
        for (int64_t q = 0; q < i.cols; ++q) s[size_t(r * i.cols + q)] = d[size_t((i.row0 + r) * m.cols + i.col0 + q)];
      shape_[int(i.buffer)][i.slot] = {i.rows, i.cols};
    } else {
      int64_t width = shape_[int(i.buffer)][i.slot][1];
      for (int64_t r = 0; r < i.rows; ++r)
        for (int64_t q = 0; q < i.cols; ++q)
          d[size_t((i.row0 + r) * m.cols + i.col0 + q)] = dma_out_data_[size_t(r * width + q)];
    }
  }

  // One row of the weight slot per cycle into the bank's shadow registers.
  void step_load() {
    if (load_ < 0) return;
    const Instr& i = p_.instrs[size_t(load_)];
    int64_t r = t_ - timing_[size_t(load_)].start;
    const auto& s = shape_[int(BufferId::Weight)][i.slot];
    if (s[0] != i.k || s[1] != i.n) throw Error("systolic cell model: '" + print(i) + "' does not fit its slot");
    const std::vector<T>& w = slots_[int(BufferId::Weight)][i.slot];
    for (int64_t q = 0; q < C_; ++q)
      if (a_[size_t(r * C_ + q)].valid && a_[size_t(r * C_ + q)].bank == i.bank)
        throw Error("systolic cell model: bank " + std::to_string(i.bank) + " reloaded under an input in row " +
                    std::to_string(r));
    for (int64_t q = 0; q < i.n; ++q) bank_[i.bank][size_t(r * C_ + q)] = w[size_t(r * i.n + q)];
    if (r + 1 == i.k) {
      finish(size_t(load_), t_ + 1);
      load_ = -1;
    }
  }

  // What the feeder puts into row r's left edge this cycle (WS).
  Reg<T> inject_ws(int64_t r) {
    Reg<T> out;
    for (size_t j : feeding_) {
      const Instr& i = p_.instrs[j];
      int64_t m = t_ - timing_[j].start - r;
      if (r >= i.k || m < 0 || m >= i.m) continue;
      if (out.valid) throw Error("systolic cell model: two inputs at row " + std::to_string(r) + "'s port");
      out = {true, slots_[int(BufferId::Input)][i.slot][size_t(m * i.k + r)], int(j), m, i.bank};
    }
    return out;
  }

  void step_ws() {
    for (int64_t r = 0; r < R_; ++r) {
      Reg<T>* row = &a_[size_t(r * C_)];
      for (int64_t q = C_ - 1; q > 0; --q) row[q] = row[q - 1];
      row[0] = inject_ws(r);
    }
    for (int64_t r = R_ - 1; r >= 0; --r)
      for (int64_t q = 0; q < C_; ++q) {
        const Reg<T>& a = a_[size_t(r * C_ + q)];
        Reg<T>& p = p_reg_[size_t(r * C_ + q)];
        Reg<T> in = r == 0 ? Reg<T>{a.valid, T{}, a.instr, a.idx, 0} : p_reg_[size_t((r - 1) * C_ + q)];
        if (a.valid) {
          if (!in.valid || in.instr != a.instr || in.idx != a.idx)
            throw Error("systolic cell model: a partial sum and an input meet out of step at cell (" +
                        std::to_string(r) + ", " + std::to_string(q) + ")");
          in.v = mac(in.v, a.v, bank_[a.bank][size_t(r * C_ + q)]);
        }
        p = in;
      }
    for (int64_t q = 0; q < C_; ++q) {
      const Reg<T>& out = p_reg_[size_t((R_ - 1) * C_ + q)];
      if (!out.valid) continue;
      const Instr& i = p_.instrs[size_t(out.instr)];
      if (q >= i.n) continue;
      write_acc(size_t(out.instr), out.idx, q, out.v);
    }
    std::erase_if(feeding_, [&](size_t j) { return t_ >= timing_[j].start + p_.instrs[j].m + p_.instrs[j].k - 1; });
  }

  void write_acc(size_t j, int64_t row, int64_t col, T v) {
    const Instr& i = p_.instrs[j];
    T& dst = slots_[int(BufferId::Acc)][i.acc_slot][size_t(row * i.n + col)];
    dst = i.accumulate ? plus(dst, v) : v;
    if (++written_[j] == i.m * i.n) finish(j, t_ + 1);
  }

  void step_os() {
    // The finished tile shifts out through the top row, one row per cycle.
    if (chain_rows_ > 0) {
      for (int64_t q = 0; q < C_; ++q) {
        const Reg<T>& out = chain_[size_t(q)];
        if (out.valid) write_acc(size_t(out.instr), out.idx, q, out.v);
      }
      for (int64_t r = 0; r + 1 < R_; ++r)
        for (int64_t q = 0; q < C_; ++q) chain_[size_t(r * C_ + q)] = chain_[size_t((r + 1) * C_ + q)];
      for (int64_t q = 0; q < C_; ++q) chain_[size_t((R_ - 1) * C_ + q)] = {};
      if (--chain_rows_ == 0) os_ = -1;
    }
    if (os_ < 0 || chain_rows_ > 0) return;
    const Instr& i = p_.instrs[size_t(os_)];
    int64_t s = timing_[size_t(os_)].start;
    const std::vector<T>& A = slots_[int(BufferId::Input)][i.slot];
    const std::vector<T>& B = slots_[int(BufferId::Weight)][i.weight_slot];
    for (int64_t r = 0; r < R_; ++r) {
      Reg<T>* row = &a_[size_t(r * C_)];
      for (int64_t q = C_ - 1; q > 0; --q) row[q] = row[q - 1];
      int64_t kk = t_ - s - r;
      row[0] = r < i.m && kk >= 0 && kk < i.k ? Reg<T>{true, A[size_t(r * i.k + kk)], os_, kk, 0} : Reg<T>{};
    }
    for (int64_t r = R_ - 1; r >= 0; --r)
      for (int64_t q = 0; q < C_; ++q) {
        if (r > 0) {
          b_[size_t(r * C_ + q)] = b_[size_t((r - 1) * C_ + q)];
          continue;
        }
        int64_t kk = t_ - s - q;
        b_[size_t(q)] = q < i.n && kk >= 0 && kk < i.k ? Reg<T>{true, B[size_t(kk * i.n + q)], os_, kk, 0} : Reg<T>{};
      }
    for (int64_t r = 0; r < R_; ++r)
      for (int64_t q = 0; q < C_; ++q) {
        const Reg<T>& a = a_[size_t(r * C_ + q)];
        const Reg<T>& b = b_[size_t(r * C_ + q)];
        if (!a.valid || !b.valid) continue;
        if (a.instr != b.instr || a.idx != b.idx)
          throw Error("systolic cell model: operands meet out of step at cell (" + std::to_string(r) + ", " +
                      std::to_string(q) + ")");
        T& acc = cell_acc_[size_t(r * C_ + q)];
        acc = mac(a.idx == 0 ? T{} : acc, a.v, b.v);
        ++os_macs_;
      }
    if (os_macs_ < i.m * i.n * i.k) return;
    // Every cell has its sum: copy them all into the shift-out chain.
    std::fill(a_.begin(), a_.end(), Reg<T>{});
    std::fill(b_.begin(), b_.end(), Reg<T>{});
    for (int64_t r = 0; r < i.m; ++r)
      for (int64_t q = 0; q < i.n; ++q) chain_[size_t(r * C_ + q)] = {true, cell_acc_[size_t(r * C_ + q)], os_, r, 0};
    chain_rows_ = i.m;
  }

  const Program& p_;
  const SystolicConfig& c_;
  std::vector<Matrix>& dram_;
  int64_t R_, C_;
  size_t n_;
  int64_t t_ = 0;
  std::vector<std::vector<T>> slots_[3];
  std::vector<std::array<int64_t, 2>> shape_[3];
  std::vector<T> bank_[2];
  std::vector<Reg<T>> a_, p_reg_, b_, chain_;
  std::vector<T> cell_acc_;
  std::vector<int64_t> port_last_;
  std::vector<InstrTiming> timing_;
  std::vector<bool> started_;
  std::vector<int64_t> done_;
  std::vector<int64_t> written_;
  size_t head_[kUnits] = {};
  int64_t bank_free_[2] = {};
  int dma_[2] = {-1, -1}, load_ = -1, os_ = -1;
  double dma_left_[2] = {};
  std::vector<T> dma_out_data_;
  int64_t vector_free_ = 0;
  std::vector<size_t> feeding_;
  int64_t os_macs_ = 0, chain_rows_ = 0;
};

}  // namespace

CellRun run_cell_model(const Program& p, const SystolicConfig& c, std::vector<Matrix>& dram) {
  c.validate();
  if (c.input == InputType::Int8) return CellSim<int32_t>(p, c, dram).run();
  return CellSim<float>(p, c, dram).run();
}

}  // namespace kiln::systolic
