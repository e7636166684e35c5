#include "backends/systolic/systolic_device.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <sstream>

#include "backends/systolic/kernel_eval.h"
#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln::systolic {

namespace {

class SystolicBuffer : public Buffer {
 public:
  explicit SystolicBuffer(int64_t bytes) : bytes_(bytes) {
    if (bytes < 0) throw Error("systolic backend: cannot allocate " + std::to_string(bytes) + " bytes");
    data_.reset(new std::byte[size_t(std::max<int64_t>(bytes, 1))]());
  }
  int64_t bytes() const override { return bytes_; }
  std::byte* data() const { return data_.get(); }

 private:
  int64_t bytes_;
  std::unique_ptr<std::byte[]> data_;
};

SystolicBuffer& sys_buffer(const Buffer& b, const char* what) {
  auto* s = dynamic_cast<const SystolicBuffer*>(&b);
  if (!s) throw Error(std::string("systolic backend: ") + what + " a buffer of another device");
  return const_cast<SystolicBuffer&>(*s);
}

// Launches record their cycles on the device that owns the stream, so a
// cached executable never outlives the device it reports to.
class RecordingStream : public Stream {
 public:
  explicit RecordingStream(SystolicDevice* d) : dev(d) {}
  void synchronize() override {}
  std::optional<double> simulated_seconds() const override {
    return double(dev->cycles()) / (dev->config().clock_ghz * 1e9);
  }
  SystolicDevice* dev;
};

float to_bf16(float x) { return bf16_bits_to_f32(f32_to_bf16_bits(x)); }

// x as `parts` bf16 values, largest first, whose sum approximates x.
void split_bf16(float x, int parts, float* out) {
  for (int p = 0; p < parts; ++p) {
    out[p] = std::isfinite(x) ? to_bf16(x) : x;
    x = std::isfinite(x) ? x - out[p] : 0.0f;
  }
}

// The (a part, b part) products of a bf16xN pass, small terms first.
std::vector<std::pair<int, int>> pass_pairs(int passes) {
  if (passes == 3) return {{1, 0}, {0, 1}, {0, 0}};
  if (passes == 6) return {{2, 0}, {1, 1}, {0, 2}, {1, 0}, {0, 1}, {0, 0}};
  return {{0, 0}};
}

// Operands in the array's number format: a (m x k) and b (k x n) become
// DRAM matrices, plus per-row / per-column scales in int8 mode.
struct Operands {
  Matrix a, b;
  std::vector<float> a_scale, b_scale;
};

Operands convert(const SystolicConfig& c, const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                 int64_t k, int64_t n) {
  Operands o;
  if (c.input == InputType::Int8) {
    o.a = Matrix::of(c, m, k);
    o.b = Matrix::of(c, k, n);
    o.a_scale.assign(size_t(m), 1.0f);
    o.b_scale.assign(size_t(n), 1.0f);
    for (int64_t i = 0; i < m; ++i) {
      float hi = 0;
      for (int64_t q = 0; q < k; ++q) hi = std::max(hi, std::fabs(a[size_t(i * k + q)]));
      if (hi > 0 && std::isfinite(hi)) o.a_scale[size_t(i)] = hi / 127.0f;
    }
    // Column maxima a row at a time (the max of the non-NaN values, in any order).
    std::vector<float> col_hi(size_t(n), 0.0f);
    for (int64_t q = 0; q < k; ++q)
      for (int64_t j = 0; j < n; ++j) col_hi[size_t(j)] = std::max(col_hi[size_t(j)], std::fabs(b[size_t(q * n + j)]));
    for (int64_t j = 0; j < n; ++j) {
      float hi = col_hi[size_t(j)];
      if (hi > 0 && std::isfinite(hi)) o.b_scale[size_t(j)] = hi / 127.0f;
    }
    auto quant = [](float x, float s) {
      float q = std::nearbyint(x / s);
      return std::isnan(q) ? 0 : int32_t(std::clamp(q, -127.0f, 127.0f));
    };
    for (int64_t i = 0; i < m; ++i)
      for (int64_t q = 0; q < k; ++q) o.a.i[size_t(i * k + q)] = quant(a[size_t(i * k + q)], o.a_scale[size_t(i)]);
    for (int64_t q = 0; q < k; ++q)
      for (int64_t j = 0; j < n; ++j) o.b.i[size_t(q * n + j)] = quant(b[size_t(q * n + j)], o.b_scale[size_t(j)]);
    return o;
  }
  auto pairs = pass_pairs(c.bf16_passes);
  int parts = c.bf16_passes == 6 ? 3 : c.bf16_passes == 3 ? 2 : 1;
  int64_t P = int64_t(pairs.size());
  o.a = Matrix::of(c, m, k * P);
  o.b = Matrix::of(c, k * P, n);
  std::vector<float> split(static_cast<size_t>(parts));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t q = 0; q < k; ++q) {
      split_bf16(a[size_t(i * k + q)], parts, split.data());
      for (int64_t p = 0; p < P; ++p) o.a.f[size_t(i * k * P + p * k + q)] = split[size_t(pairs[size_t(p)].first)];
    }
  for (int64_t q = 0; q < k; ++q)
    for (int64_t j = 0; j < n; ++j) {
      split_bf16(b[size_t(q * n + j)], parts, split.data());
      for (int64_t p = 0; p < P; ++p) o.b.f[size_t((p * k + q) * n + j)] = split[size_t(pairs[size_t(p)].second)];
    }
  return o;
}

int64_t product(const std::vector<int64_t>& ext, const std::vector<int>& which) {
  int64_t p = 1;
  for (int l : which) p *= ext[size_t(l)];
  return p;
}

// The schedule's tile (the kernel's array_tile), each size it leaves at 0
// taken from the device's.
Tiling scheduled_tiling(const Kernel& k, Tiling device) {
  const ArrayTile& a = k.array_tile;
  return {a.m ? a.m : device.tm, a.k ? a.k : device.tk, a.n ? a.n : device.tn};
}

class SystolicExecutable : public Executable {
 public:
  SystolicExecutable(const Kernel& k, SystolicConfig c, Tiling t)
      : kernel_(k), config_(c), tiling_(scheduled_tiling(k, t)), eval_(k), contraction_(find_contraction(k)) {}

  const std::string& name() const override { return kernel_.name; }

  void launch(Stream& stream, const std::vector<Buffer*>& args, const std::vector<int64_t>& params) override {
    auto* rs = dynamic_cast<RecordingStream*>(&stream);
    if (!rs) throw Error("systolic backend: kernel '" + kernel_.name + "' launched on another device's stream");
    std::vector<HostBuf> globals;
    int64_t in_bytes = 0, out_bytes = 0;
    std::vector<int> g = kernel_.global_buffers();
    if (args.size() != g.size()) throw Error("systolic backend: kernel '" + kernel_.name + "' takes " +
                                             std::to_string(g.size()) + " buffers, got " + std::to_string(args.size()));
    for (size_t j = 0; j < args.size(); ++j) {
      if (!args[j]) throw Error("systolic backend: kernel '" + kernel_.name + "' was given a null buffer");
      SystolicBuffer& b = sys_buffer(*args[j], "kernel launch with");
      globals.push_back({b.data(), b.bytes()});
      (kernel_.buffers[size_t(g[j])].output ? out_bytes : in_bytes) += b.bytes();
    }
    LaunchRecord r;
    r.kernel = kernel_.name;
    std::lock_guard<std::mutex> lock(mu_);  // the evaluator is not reentrant
    if (contraction_) {
      run_on_array(globals, params, &r);
    } else {
      int64_t ops = eval_.run(globals, params);
      Program p = emit_vector(in_bytes, ops, out_bytes, config_);
      r.timeline = time_program(p, config_);
      r.program = std::move(p);
    }
    r.stats = r.timeline.stats;
    rs->dev->record(std::move(r));
  }

 private:
  // Each stage's GEMMs, one after the other, then the kernel with their sums.
  void run_on_array(const std::vector<HostBuf>& globals, const std::vector<int64_t>& params, LaunchRecord* r) {
    std::vector<std::vector<float>> sums(contraction_->stages.size());
    for (size_t st = 0; st < sums.size(); ++st) run_stage(contraction_->stages[st], globals, params, r, &sums[st]);
    eval_.run(globals, params, &sums);
  }

  void run_stage(const ContractionStage& c, const std::vector<HostBuf>& globals, const std::vector<int64_t>& params,
                 LaunchRecord* r, std::vector<float>* sums_out) {
    const Contraction& whole = *contraction_;
    std::map<std::string, int64_t> pv;
    for (size_t j = 0; j < params.size(); ++j) pv[kernel_.params[j]] = params[j];
    std::vector<int64_t> ext;
    const StmtNode* s = kernel_.body.get();
    std::vector<Expr> extents;
    std::function<void(const StmtNode*)> walk = [&](const StmtNode* n) {
      if (!n) return;
      if (n->kind == StmtKind::Block && n->body.size() == 1) return walk(n->body[0].get());
      if (n->kind != StmtKind::For || extents.size() == whole.loops.size()) return;
      extents.push_back(n->extent);
      walk(n->body[0].get());
    };
    walk(s);
    for (const Expr& e : extents) ext.push_back(evaluate_index(e, pv));
    int64_t K = evaluate_index(c.extent_k, pv);
    std::vector<int> batch, mloops, nloops;
    for (size_t l = 0; l < whole.loops.size(); ++l) {
      bool in_a = std::count(c.a_loops.begin(), c.a_loops.end(), int(l)) > 0;
      bool in_b = std::count(c.b_loops.begin(), c.b_loops.end(), int(l)) > 0;
      (in_a && !in_b ? mloops : !in_a && in_b ? nloops : batch).push_back(int(l));
    }
    int64_t B = product(ext, batch), M = product(ext, mloops), N = product(ext, nloops);
    r->on_array = true;
    r->m = M, r->k = K, r->n = N, r->batch = B;
    std::vector<float>& sums = *sums_out;
    sums.assign(size_t(B * M * N), 0.0f);
    if (B * M * N > 0 && K > 0) {
      std::vector<std::string> names = whole.loops;
      names.push_back(c.reduction);
      auto pa = eval_.probe(c.a, names, globals, params);
      auto pb = eval_.probe(c.b, names, globals, params);
      std::vector<int64_t> box = ext;
      box.push_back(K);
      // Plain loads at affine indices are copied with strides, not evaluated.
      std::optional<AffineLoad> fa = eval_.affine_load(c.a, names, box, globals, params);
      std::optional<AffineLoad> fb = eval_.affine_load(c.b, names, box, globals, params);
      bool a_batched = false, b_batched = false;
      for (int l : batch) {
        a_batched |= std::count(c.a_loops.begin(), c.a_loops.end(), l) > 0;
        b_batched |= std::count(c.b_loops.begin(), c.b_loops.end(), l) > 0;
      }
      std::vector<Matrix> dram;
      std::vector<GemmJob> jobs;
      std::vector<Operands> ops;
      std::vector<int64_t> point(names.size(), 0);
      // Sets the loops in `which` to the digits of `index` (last loop fastest).
      auto set = [&](const std::vector<int>& which, int64_t index) {
        for (size_t j = which.size(); j-- > 0;) {
          point[size_t(which[j])] = index % ext[size_t(which[j])];
          index /= ext[size_t(which[j])];
        }
      };
      // An affine load's index at `point` with the reduction at 0 (in the
      // buffer: affine_load checked the whole box).
      auto base_of = [&](const AffineLoad& f) {
        uint64_t at = uint64_t(f.offset);
        for (size_t l = 0; l + 1 < point.size(); ++l) at += uint64_t(f.coeff[l]) * uint64_t(point[l]);
        return int64_t(at);
      };
      int a_region = -1, b_region = -1;
      for (int64_t bi = 0; bi < B; ++bi) {
        set(batch, bi);
        GemmJob job{0, 0, 0, M, K, N};
        if (a_region < 0 || a_batched || b_batched) {
          std::vector<float> a(size_t(M * K)), bm(size_t(K * N));
          if ((a_region < 0 || a_batched) && fa)
            for (int64_t mi = 0; mi < M; ++mi) {
              set(mloops, mi);
              const float* src = fa->data + base_of(*fa);
              for (int64_t q = 0; q < K; ++q) a[size_t(mi * K + q)] = src[q * fa->coeff.back()];
            }
          else if (a_region < 0 || a_batched)
            for (int64_t mi = 0; mi < M; ++mi) {
              set(mloops, mi);
              for (int64_t q = 0; q < K; ++q) {
                point.back() = q;
                a[size_t(mi * K + q)] = pa->at(point.data());
              }
            }
          if ((b_region < 0 || b_batched) && fb) {
            std::vector<int64_t> base(static_cast<size_t>(N));  // of each column, q = 0
            for (int64_t ni = 0; ni < N; ++ni) set(nloops, ni), base[size_t(ni)] = base_of(*fb);
            int64_t step = fb->coeff.back();
            for (int64_t q = 0; q < K; ++q)
              for (int64_t ni = 0; ni < N; ++ni) bm[size_t(q * N + ni)] = fb->data[base[size_t(ni)] + q * step];
          } else if (b_region < 0 || b_batched)
            for (int64_t ni = 0; ni < N; ++ni) {
              set(nloops, ni);
              for (int64_t q = 0; q < K; ++q) {
                point.back() = q;
                bm[size_t(q * N + ni)] = pb->at(point.data());
              }
            }
          Operands o = convert(config_, a, bm, M, K, N);
          if (a_region < 0 || a_batched) a_region = int(dram.size()), dram.push_back(std::move(o.a));
          if (b_region < 0 || b_batched) b_region = int(dram.size()), dram.push_back(std::move(o.b));
          ops.push_back(std::move(o));
        }
        job.a = a_region;
        job.b = b_region;
        job.c = int(dram.size());
        job.k = dram[size_t(a_region)].cols;  // K times the bf16 passes
        dram.push_back(Matrix::of(config_, M, N));
        jobs.push_back(job);
      }
      Program p = emit_gemm(jobs, config_, tiling_, &c == &whole.stages.back() ? whole.epilogue_ops : 0);
      Timeline t = time_program(p, config_);
      execute(p, config_, dram);
      append(r, std::move(p), std::move(t));
      // The sums in nest order.
      std::vector<int64_t> idx(whole.loops.size());
      for (int64_t flat = 0; flat < B * M * N; ++flat) {
        int64_t rest = flat;
        for (size_t l = whole.loops.size(); l-- > 0;) idx[l] = rest % ext[l], rest /= ext[l];
        int64_t bi = 0, mi = 0, ni = 0;
        for (int l : batch) bi = bi * ext[size_t(l)] + idx[size_t(l)];
        for (int l : mloops) mi = mi * ext[size_t(l)] + idx[size_t(l)];
        for (int l : nloops) ni = ni * ext[size_t(l)] + idx[size_t(l)];
        const Matrix& out = dram[size_t(jobs[size_t(bi)].c)];
        if (config_.input == InputType::Int8) {
          const Operands& o = ops[a_batched || b_batched ? size_t(bi) : 0];
          sums[size_t(flat)] = float(out.i[size_t(mi * N + ni)]) * o.a_scale[size_t(mi)] * o.b_scale[size_t(ni)];
        } else {
          sums[size_t(flat)] = out.f[size_t(mi * N + ni)];
        }
      }
    }
  }

  // Stages run one after the other: their programs and timelines join end to end.
  static void append(LaunchRecord* r, Program p, Timeline t) {
    int64_t offset = r->timeline.stats.total_cycles;
    int base = int(r->program.instrs.size());
    for (Instr& i : p.instrs) {
      for (Dep& d : i.deps) d.on += base;
      r->program.instrs.push_back(std::move(i));
    }
    for (InstrTiming& it : t.instrs) {
      it.start += offset;
      it.done += offset;
      r->timeline.instrs.push_back(it);
    }
    if (base == 0) r->timeline.stats = t.stats;
    else r->timeline.stats.append(t.stats);
  }

  Kernel kernel_;
  SystolicConfig config_;
  Tiling tiling_;
  KernelEval eval_;
  std::unique_ptr<Contraction> contraction_;
  std::mutex mu_;
};

}  // namespace

SystolicDevice::SystolicDevice(SystolicConfig c, Tiling tiling)
    : config_(c), tiling_(tiling), stream_(std::make_unique<RecordingStream>(this)) {
  config_.validate();
  info_.name = "systolic: " + config_.describe();
  if (tiling.tm || tiling.tk || tiling.tn)
    info_.name += ", tiles " + std::to_string(tiling.tm) + "x" + std::to_string(tiling.tk) + "x" +
                  std::to_string(tiling.tn);
  info_.backend = "systolic";
  info_.cores = 1;
  info_.vector_bits = config_.vector_lanes * 32;
  info_.features = config_.input == InputType::Int8 ? "int8" : "bf16";
  info_.memory_bytes = int64_t(8) << 30;
  // The largest tile the emitter makes, for the schedule's tile knobs.
  int64_t huge = int64_t(1) << 40;
  Tiling largest = resolve_tiling(config_, {0, 1, 2, huge, huge, huge});
  info_.matrix_tile_m = largest.tm;
  info_.matrix_tile_k = largest.tk;
  info_.matrix_tile_n = largest.tn;
}

std::shared_ptr<Buffer> SystolicDevice::allocate(int64_t bytes) { return std::make_shared<SystolicBuffer>(bytes); }

void SystolicDevice::write(Buffer& dst, const void* src, int64_t bytes) {
  SystolicBuffer& b = sys_buffer(dst, "cannot write");
  if (bytes < 0 || bytes > b.bytes()) throw Error("systolic backend: cannot write " + std::to_string(bytes) + " bytes");
  if (bytes > 0) std::memcpy(b.data(), src, size_t(bytes));
}

void SystolicDevice::read(const Buffer& src, void* dst, int64_t bytes) {
  SystolicBuffer& b = sys_buffer(src, "cannot read");
  if (bytes < 0 || bytes > b.bytes()) throw Error("systolic backend: cannot read " + std::to_string(bytes) + " bytes");
  if (bytes > 0) std::memcpy(dst, b.data(), size_t(bytes));
}

std::shared_ptr<Executable> SystolicDevice::compile(const Kernel& k) {
  return std::make_shared<SystolicExecutable>(k, config_, tiling_);
}

std::string SystolicDevice::target_source(const Kernel& k) {
  std::ostringstream os;
  os << "// " << info_.name << "\n";
  auto c = find_contraction(k);
  if (!c) {
    os << "// " << k.name << ": vector unit (no contraction)\n";
    return os.str();
  }
  os << "// " << k.name << ": " << c->stages.size() << " contraction stage(s) on the array, over";
  for (const ContractionStage& st : c->stages) os << " " << st.reduction;
  os << "; nest";
  for (const std::string& l : c->loops) os << " " << l;
  os << "; epilogue " << c->epilogue_ops << " vector ops per output\n";
  if (k.array_tile.any()) {
    Tiling t = scheduled_tiling(k, tiling_);
    os << "// tiles " << t.tm << "x" << t.tk << "x" << t.tn << " (MxKxN, from the schedule; 0: the emitter's choice)\n";
  }
  return os.str();
}

void SystolicDevice::set_tracing(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  tracing_ = on;
}

std::vector<LaunchRecord> SystolicDevice::records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

Stats SystolicDevice::total() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.array_cells = int64_t(config_.rows) * config_.cols;
  for (const LaunchRecord& r : records_) s.append(r.stats);
  return s;
}

void SystolicDevice::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  records_.clear();
}

int64_t SystolicDevice::cycles() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cycles_;
}

void SystolicDevice::record(LaunchRecord r) {
  std::lock_guard<std::mutex> lock(mu_);
  cycles_ += r.stats.total_cycles;
  if (!tracing_) {
    r.program = {};
    r.timeline.instrs.clear();
  }
  records_.push_back(std::move(r));
}

std::shared_ptr<Device> make_systolic_device() {
  SystolicConfig c = default_config();
  c.bf16_passes = 6;
  return std::make_shared<SystolicDevice>(c);
}

}  // namespace kiln::systolic
