#include "codegen/emit/systolic/emit_gemm.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "kiln/error.h"

namespace kiln::systolic {

namespace {

int64_t clamp_to(int64_t want, int64_t lo, int64_t hi) { return std::max(lo, std::min(want, hi)); }

// The slots of one SRAM buffer: tiles stay while they fit; a new tile takes
// the least recently used slot, after that slot's last reader (SRAM capacity).
class SlotCache {
 public:
  using Key = std::tuple<int, int64_t, int64_t>;  // region, tile row, tile col

  explicit SlotCache(int64_t slots) : slots_(size_t(std::max<int64_t>(2, slots))) {}

  // The slot holding `key`, loading it with `dma` (appended to p) if absent;
  // `deps` gets what a reader must wait for.
  int fetch(const Key& key, Program& p, Instr dma, std::vector<Dep>* deps) {
    ++clock_;
    for (size_t s = 0; s < slots_.size(); ++s)
      if (slots_[s].valid && slots_[s].key == key) {
        slots_[s].last_use = clock_;
        deps->push_back({slots_[s].writer, Cause::Dram});
        return int(s);
      }
    size_t victim = 0;
    for (size_t s = 1; s < slots_.size(); ++s)
      if (slots_[s].last_use < slots_[victim].last_use) victim = s;
    Slot& v = slots_[victim];
    dma.slot = int(victim);
    if (v.last_reader >= 0) dma.deps.push_back({v.last_reader, Cause::Sram});
    v = {key, true, p.add(std::move(dma)), -1, clock_};
    deps->push_back({v.writer, Cause::Dram});
    return int(victim);
  }

  void read_by(int slot, int instr) { slots_[size_t(slot)].last_reader = instr; }

 private:
  struct Slot {
    Key key{};
    bool valid = false;
    int writer = -1, last_reader = -1;
    int64_t last_use = -1;
  };
  std::vector<Slot> slots_;
  int64_t clock_ = 0;
};

// One tile of work: C[mt, nt] (+)= A[mt, kt] x B[kt, nt].
struct Step {
  const GemmJob* job;
  int64_t m0, k0, n0, m, k, n;
  bool first, last;  // first / last k tile of its output tile
};

class GemmEmitter {
 public:
  GemmEmitter(const SystolicConfig& c, int64_t in_slots, int64_t w_slots, int64_t acc_slots, int64_t epilogue_ops)
      : c_(c), inputs_(in_slots), weights_(w_slots), acc_slots_(std::max<int64_t>(2, acc_slots)),
        acc_(size_t(acc_slots_), {-1, -1}), epilogue_ops_(epilogue_ops) {}

  // Loads step s's tiles (one step ahead of its compute).
  void load(const Step& s, std::vector<Dep>* a_deps, std::vector<Dep>* w_deps, int* a_slot, int* w_slot) {
    Instr a{.op = OpCode::DmaIn, .region = s.job->a, .row0 = s.m0, .col0 = s.k0, .rows = s.m, .cols = s.k,
            .buffer = BufferId::Input, .deps = {}};
    *a_slot = inputs_.fetch({s.job->a, s.m0, s.k0}, p_, a, a_deps);
    Instr w{.op = OpCode::DmaIn, .region = s.job->b, .row0 = s.k0, .col0 = s.n0, .rows = s.k, .cols = s.n,
            .buffer = BufferId::Weight, .deps = {}};
    *w_slot = weights_.fetch({s.job->b, s.k0, s.n0}, p_, w, w_deps);
  }

  void compute(const Step& s, std::vector<Dep> a_deps, std::vector<Dep> w_deps, int a_slot, int w_slot) {
    bool ws = c_.dataflow == Dataflow::WeightStationary;
    Instr mm{.op = OpCode::Matmul, .m = s.m, .k = s.k, .n = s.n, .bank = -1, .acc_slot = acc_slot_,
             .accumulate = !s.first, .deps = {}};
    mm.slot = a_slot;
    mm.deps = std::move(a_deps);
    if (ws) {
      Instr lw{.op = OpCode::LoadWeights, .slot = w_slot, .k = s.k, .n = s.n, .bank = bank_, .deps = {}};
      lw.deps = std::move(w_deps);
      int l = p_.add(std::move(lw));
      weights_.read_by(w_slot, l);
      mm.bank = bank_;
      mm.deps.push_back({l, Cause::Dependency});
    } else {
      mm.weight_slot = w_slot;
      for (Dep d : w_deps) mm.deps.push_back(d);
    }
    if (s.first) flush_slot(acc_slot_);
    if (s.first && acc_[size_t(acc_slot_)].second >= 0) mm.deps.push_back({acc_[size_t(acc_slot_)].second, Cause::Sram});
    int j = p_.add(std::move(mm));
    inputs_.read_by(a_slot, j);
    if (!ws) weights_.read_by(w_slot, j);
    if (ws) bank_ ^= 1;
    acc_[size_t(acc_slot_)].first = j;
    if (!s.last) return;
    int producer = j;
    if (epilogue_ops_ > 0) {
      int64_t elems = s.m * s.n;
      Instr v{.op = OpCode::Vector, .vector_cycles = (elems * epilogue_ops_ + c_.vector_lanes - 1) / c_.vector_lanes,
              .vector_elements = elems, .deps = {}};
      v.deps.push_back({j, Cause::Dependency});
      producer = p_.add(std::move(v));
    }
    Instr store{.op = OpCode::DmaOut, .region = s.job->c, .row0 = s.m0, .col0 = s.n0, .rows = s.m, .cols = s.n,
                 .buffer = BufferId::Acc, .slot = acc_slot_, .deps = {}};
    store.deps.push_back({producer, Cause::Dependency});
    deferred_.push_back(std::move(store));
    acc_slot_ = (acc_slot_ + 1) % int(acc_slots_);
  }

  // Write-backs queued so far (all, or all but the last).
  void flush_stores(bool all) {
    while (deferred_.size() > (all ? 0 : 1)) {
      int slot = deferred_.front().slot;
      acc_[size_t(slot)].second = p_.add(std::move(deferred_.front()));
      deferred_.erase(deferred_.begin());
    }
  }

  Program take() { return std::move(p_); }

 private:
  // A tile about to reuse an accumulator slot needs the slot's write-back out first.
  void flush_slot(int slot) {
    for (const Instr& d : deferred_)
      if (d.slot == slot) return flush_stores(true);
  }

 public:

 private:
  const SystolicConfig& c_;
  Program p_;
  SlotCache inputs_, weights_;
  int64_t acc_slots_;
  std::vector<std::pair<int, int>> acc_;  // per acc slot: last matmul, last store
  int acc_slot_ = 0;
  int bank_ = 0;
  int64_t epilogue_ops_;
  std::vector<Instr> deferred_;
};

}  // namespace

Tiling resolve_tiling(const SystolicConfig& c, const GemmJob& job, Tiling t) {
  int64_t in = c.input_bytes(), acc = c.acc_bytes();
  int64_t m = std::max<int64_t>(job.m, 1), k = std::max<int64_t>(job.k, 1), n = std::max<int64_t>(job.n, 1);
  if (c.dataflow == Dataflow::WeightStationary) {
    t.tk = clamp_to(t.tk ? t.tk : c.rows, 1, std::min<int64_t>(c.rows, k));
    t.tn = clamp_to(t.tn ? t.tn : c.cols, 1, std::min<int64_t>(c.cols, n));
    int64_t cap = std::min(c.acc_buffer / (2 * t.tn * acc), c.input_buffer / (2 * t.tk * in));
    t.tm = clamp_to(t.tm ? t.tm : cap, 1, std::min(cap, m));
  } else {
    t.tm = clamp_to(t.tm ? t.tm : c.rows, 1, std::min<int64_t>(c.rows, m));
    t.tn = clamp_to(t.tn ? t.tn : c.cols, 1, std::min<int64_t>(c.cols, n));
    int64_t cap = std::min(c.input_buffer / (2 * t.tm * in), c.weight_buffer / (2 * t.tn * in));
    t.tk = clamp_to(t.tk ? t.tk : cap, 1, std::min(cap, k));
  }
  return t;
}

Program emit_gemm(const std::vector<GemmJob>& jobs, const SystolicConfig& c, const Tiling& tiling,
                  int64_t epilogue_ops) {
  c.validate();
  std::vector<Step> steps;
  int64_t in_slots = 2, w_slots = 2, acc_slots = 2;
  for (const GemmJob& job : jobs) {
    if (job.m <= 0 || job.n <= 0 || job.k <= 0) continue;
    Tiling t = resolve_tiling(c, job, tiling);
    in_slots = std::max(in_slots, c.input_buffer / (t.tm * t.tk * c.input_bytes()));
    w_slots = std::max(w_slots, c.weight_buffer / (t.tk * t.tn * c.input_bytes()));
    acc_slots = std::max(acc_slots, c.acc_buffer / (t.tm * t.tn * c.acc_bytes()));
    for (int64_t m0 = 0; m0 < job.m; m0 += t.tm)
      for (int64_t n0 = 0; n0 < job.n; n0 += t.tn)
        for (int64_t k0 = 0; k0 < job.k; k0 += t.tk)
          steps.push_back({&job, m0, k0, n0, std::min(t.tm, job.m - m0), std::min(t.tk, job.k - k0),
                           std::min(t.tn, job.n - n0), k0 == 0, k0 + t.tk >= job.k});
  }
  // Jobs of different tilings share the buffers: count slots for the largest tiles.
  for (const GemmJob& job : jobs) {
    if (job.m <= 0 || job.n <= 0 || job.k <= 0) continue;
    Tiling t = resolve_tiling(c, job, tiling);
    in_slots = std::min(in_slots, c.input_buffer / (t.tm * t.tk * c.input_bytes()));
    w_slots = std::min(w_slots, c.weight_buffer / (t.tk * t.tn * c.input_bytes()));
    acc_slots = std::min(acc_slots, c.acc_buffer / (t.tm * t.tn * c.acc_bytes()));
  }
  GemmEmitter e(c, in_slots, w_slots, acc_slots, epilogue_ops);
  struct Loaded {
    std::vector<Dep> a, w;
    int a_slot = 0, w_slot = 0;
  };
  std::vector<Loaded> loaded(steps.size());
  if (!steps.empty()) e.load(steps[0], &loaded[0].a, &loaded[0].w, &loaded[0].a_slot, &loaded[0].w_slot);
  for (size_t s = 0; s < steps.size(); ++s) {
    if (s + 1 < steps.size())
      e.load(steps[s + 1], &loaded[s + 1].a, &loaded[s + 1].w, &loaded[s + 1].a_slot, &loaded[s + 1].w_slot);
    e.compute(steps[s], loaded[s].a, loaded[s].w, loaded[s].a_slot, loaded[s].w_slot);
    e.flush_stores(true);
  }
  e.flush_stores(true);
  return e.take();
}

Program emit_vector(int64_t in_bytes, int64_t ops, int64_t out_bytes, const SystolicConfig& c) {
  Program p;
  int64_t chunk = std::max<int64_t>(1, c.input_buffer / 2);
  int64_t chunks = std::max<int64_t>(1, (in_bytes + chunk - 1) / chunk);
  int last_vector[2] = {-1, -1};
  for (int64_t j = 0; j < chunks; ++j) {
    auto part = [&](int64_t total) { return total / chunks + (j < total % chunks); };
    Instr in{.op = OpCode::DmaIn, .buffer = BufferId::Input, .slot = int(j % 2), .bytes = part(in_bytes), .deps = {}};
    if (last_vector[j % 2] >= 0) in.deps.push_back({last_vector[j % 2], Cause::Sram});
    int load = in.bytes > 0 ? p.add(in) : -1;
    int64_t chunk_ops = part(ops);
    Instr v{.op = OpCode::Vector, .vector_cycles = (chunk_ops + c.vector_lanes - 1) / c.vector_lanes,
            .vector_elements = chunk_ops, .deps = {}};
    if (load >= 0) v.deps.push_back({load, Cause::Dram});
    int vec = p.add(v);
    last_vector[j % 2] = vec;
    Instr out{.op = OpCode::DmaOut, .buffer = BufferId::Acc, .slot = int(j % 2), .bytes = part(out_bytes), .deps = {}};
    out.deps.push_back({vec, Cause::Dependency});
    if (out.bytes > 0) p.add(out);
  }
  return p;
}

}  // namespace kiln::systolic
