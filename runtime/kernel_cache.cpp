#include "runtime/kernel_cache.h"

#include <link.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>

#include "runtime/fault.h"

namespace kiln {

KernelCache::KernelCache() : disk_(DiskCache::from_environment()) {}

KernelCache::KernelCache(DiskCache disk) : disk_(std::move(disk)) {}

KernelCache& KernelCache::global() {
  // Never destroyed, like the device list: executables must not outlive drivers.
  static KernelCache& cache = *new KernelCache();
  return cache;
}

namespace {

// Renames loop variables v0, v1, ... in the order they appear, and params
// p0, p1, ...: names the schedule derives from buffer names (one per layer of
// a model) then no longer make equal kernels look different.
class CanonicalNames {
 public:
  explicit CanonicalNames(const std::vector<std::string>& params) {
    for (size_t i = 0; i < params.size(); ++i) names_[params[i]] = "p" + std::to_string(i);
  }

  Expr expr(const Expr& e) {
    if (!e) return e;
    auto n = std::make_shared<ExprNode>(*e);
    if (n->kind == ExprKind::Var) n->name = renamed(n->name);
    for (Expr& a : n->args) a = expr(a);
    return n;
  }

  Stmt stmt(const Stmt& s) {
    if (!s) return s;
    auto n = std::make_shared<StmtNode>(*s);
    n->extent = expr(n->extent);  // outside the loop's own scope
    n->index = expr(n->index);
    n->value = expr(n->value);
    n->cond = expr(n->cond);
    if (n->kind == StmtKind::AllReduce) n->var = renamed(n->var);
    std::optional<std::string> outer;  // the name a loop shadows
    if (n->kind == StmtKind::For) {
      if (auto it = names_.find(s->var); it != names_.end()) outer = it->second;
      n->var = names_[s->var] = "v" + std::to_string(loops_++);
    }
    for (Stmt& b : n->body) b = stmt(b);
    if (n->kind == StmtKind::For) {
      if (outer)
        names_[s->var] = *outer;
      else
        names_.erase(s->var);
    }
    return n;
  }

 private:
  std::string renamed(const std::string& name) const {
    auto it = names_.find(name);
    return it == names_.end() ? name : it->second;
  }

  std::map<std::string, std::string> names_;
  int loops_ = 0;
};

}  // namespace

std::string KernelCache::structural_text(const Kernel& k) {
  // Buffers and params are passed by position, so their names do not matter
  // either.
  Kernel c = k;
  c.name = "kernel";
  for (size_t i = 0; i < c.buffers.size(); ++i) c.buffers[i].name = "b" + std::to_string(i);
  CanonicalNames names(k.params);
  for (size_t i = 0; i < c.params.size(); ++i) c.params[i] = "p" + std::to_string(i);
  c.body = names.stmt(k.body);
  return print(c);
}

std::shared_ptr<Executable> KernelCache::get_or_compile(Device& dev, const Kernel& k) {
  std::string text = structural_text(k);
  std::string key = dev.info().backend + "\n" + dev.info().name + "\n" + text;
  std::promise<std::shared_ptr<Executable>> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      ++hits_;
      return it->second;
    }
    // Another thread compiles it: wait for that (its error, if it fails).
    if (auto it = in_flight_.find(key); it != in_flight_.end()) {
      ++hits_;
      std::shared_future<std::shared_ptr<Executable>> pending = it->second;
      lock.unlock();
      return pending.get();
    }
    in_flight_.emplace(key, promise.get_future().share());
  }
  // Compile outside the lock so that different kernels compile in parallel.
  std::shared_ptr<Executable> exe;
  try {
    exe = compile_through_disk(dev, k, text);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_.erase(key);
    promise.set_exception(std::current_exception());
    throw;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++misses_;
  entries_.emplace(key, exe);
  in_flight_.erase(key);
  promise.set_value(exe);
  return exe;
}

namespace {

// Which build of kiln this is: the size and modification time of the binary
// (program or shared library) that holds this code. Emitters change without
// a change in kernel text, so artifacts of another build must not load.
const std::string& build_identity() {
  static const std::string id = [] {
    struct Search {
      uintptr_t address;
      std::string path;
    } search{reinterpret_cast<uintptr_t>(&build_identity), ""};
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) {
          auto* s = static_cast<Search*>(data);
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            const ElfW(Phdr)& ph = info->dlpi_phdr[i];
            uintptr_t start = info->dlpi_addr + ph.p_vaddr;
            if (ph.p_type != PT_LOAD || s->address < start || s->address >= start + ph.p_memsz) continue;
            // The program itself has no name here.
            s->path = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
            return 1;
          }
          return 0;
        },
        &search);
    struct stat st {};
    if (search.path.empty() || stat(search.path.c_str(), &st) != 0) return std::string("unknown build");
    return std::to_string(st.st_size) + " bytes, modified " + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
  }();
  return id;
}

}  // namespace

std::shared_ptr<Executable> KernelCache::compile_through_disk(Device& dev, const Kernel& k, const std::string& text) {
  // An armed compile fault must meet a compile, not a disk entry.
  if (!disk_.enabled() || fault::armed(fault::Site::jit_compile)) return dev.compile(k);
  std::string identity = dev.artifact_identity();
  if (identity.empty()) return dev.compile(k);
  std::string key = DiskCache::key(dev.info(), identity + "; kiln " + build_identity(), text);
  bool bad = false;
  if (std::optional<std::string> bytes = disk_.load(key, &bad)) {
    try {
      std::shared_ptr<Executable> exe = dev.load_artifact(k, *bytes);
      std::lock_guard<std::mutex> lock(mu_);
      ++disk_hits_;
      return exe;
    } catch (const Error& e) {
      // Whole and checksummed, yet the device rejects it: recompile.
      if (const char* v = std::getenv("KILN_CACHE_DEBUG"); v && *v && std::string(v) != "0")
        std::fprintf(stderr, "kiln: disk cache: entry %s does not load (%s): deleted\n", key.c_str(), e.what());
      disk_.remove(key);
      std::lock_guard<std::mutex> lock(mu_);
      ++disk_bad_;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++disk_misses_;
    if (bad) ++disk_bad_;
  }
  std::optional<std::string> artifact = dev.compile_artifact(k);
  if (!artifact) return dev.compile(k);
  // Stored only once it loads: a kernel that fails here is kept nowhere.
  std::shared_ptr<Executable> exe = dev.load_artifact(k, *artifact);
  disk_.store(key, *artifact);
  return exe;
}

int64_t KernelCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

int64_t KernelCache::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}

int64_t KernelCache::disk_hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return disk_hits_;
}

int64_t KernelCache::disk_misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return disk_misses_;
}

int64_t KernelCache::disk_bad() const {
  std::lock_guard<std::mutex> lock(mu_);
  return disk_bad_;
}

void KernelCache::clear_memory() {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.clear();
}

}  // namespace kiln
