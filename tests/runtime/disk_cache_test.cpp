// The on-disk kernel cache (runtime/disk_cache.h): kernels compiled by one
// KernelCache load from disk in the next and give the interpreter's results;
// truncated, corrupt and unloadable entries are rebuilt; processes writing one
// folder at once corrupt nothing; a disabled cache still compiles; the key
// follows the schedule.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <set>

#include "codegen/lower.h"
#include "runtime/disk_cache.h"
#include "runtime/fault.h"
#include "runtime/kernel_cache.h"
#include "tests/backends/gpu_testing.h"
#include "tests/testing.h"

#ifdef KILN_WITH_CUDA
#include "backends/cuda/nvrtc.h"
#include "codegen/emit/cuda/emit_cuda.h"
#endif

extern char** environ;

namespace kiln {
namespace {

namespace fs = std::filesystem;

// A fresh folder under the system's temp folder, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("kiln-disk-cache-test-" + std::to_string(getpid()) + "-" +
                                         std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// softmax(x @ w + b) over rows, then sin: a contraction with an epilogue,
// reductions and an elementwise kernel, all different for each `scale`.
Graph test_graph(double scale) {
  Graph g;
  int x = g.input("x", f32, {8, 16});
  int w = g.input("w", f32, {16, 12});
  int b = g.input("b", f32, {8, 12});
  int y = g.binary(Op::Add, g.contract(x, w), b);
  int m = g.reduce(Op::ReduceMax, y, {1});
  int e = g.unary(Op::Exp2, g.binary(Op::Sub, y, g.expand(m, {8, 12})));
  int s = g.reduce(Op::ReduceSum, e, {1});
  int p = g.binary(Op::Div, e, g.expand(s, {8, 12}));
  g.outputs = {g.unary(Op::Sin, g.binary(Op::Mul, p, g.constant(scale, f32, {8, 12})))};
  return g;
}

// Runs `g` launch by launch with kernels from `cache` (not the global one).
std::vector<HostTensor> run_with(KernelCache& cache, Device& dev, const Graph& g,
                                 const std::map<std::string, HostTensor>& inputs) {
  Program p = lower(g);
  std::map<int, std::shared_ptr<Buffer>> bufs;
  for (int id : p.buffers) {
    const Node& n = p.graph.nodes[id];
    bufs[id] = dev.allocate(numel(n.shape) * dtype_size(n.dtype));
    if (n.op == Op::Input) dev.write(*bufs[id], inputs.at(n.name).data.data(), bufs[id]->bytes());
  }
  for (const Launch& l : p.launches) {
    const Kernel& k = p.kernels[l.kernel];
    std::shared_ptr<Executable> exe = cache.get_or_compile(dev, apply(k, default_schedule(k, dev.info())));
    std::vector<Buffer*> args;
    for (int id : l.args) args.push_back(bufs.at(id).get());
    exe->launch(dev.stream(), args, {});
  }
  dev.stream().synchronize();
  std::vector<HostTensor> out;
  for (int id : p.graph.outputs) {
    const Node& n = p.graph.nodes[id];
    std::vector<int64_t> sizes;
    for (const Dim& d : n.shape) sizes.push_back(d.value);
    out.emplace_back(n.dtype, sizes);
    dev.read(*bufs.at(id), out.back().data.data(), int64_t(out.back().data.size()));
  }
  return out;
}

void expect_matches(KernelCache& cache, Device& dev, const Graph& g, uint64_t seed = 11) {
  auto inputs = testing::inputs_for(g, {}, seed);
  std::vector<HostTensor> want = interpret(g, inputs, {});
  std::vector<HostTensor> got = run_with(cache, dev, g, inputs);
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    std::string diff = compare(want[o], got[o], tolerance_for(want[o].dtype));
    EXPECT_TRUE(diff.empty()) << dev.info().backend << ", output " << o << ": " << diff;
  }
}

int64_t distinct_kernels(const Graph& g, const DeviceInfo& info) {
  std::set<std::string> texts;
  Program p = lower(g);
  for (const Kernel& k : p.kernels) texts.insert(KernelCache::structural_text(apply(k, default_schedule(k, info))));
  return int64_t(texts.size());
}

// Every entry in `dir` reads back whole; their names.
std::vector<std::string> valid_entries(const DiskCache& disk) {
  std::vector<std::string> keys;
  for (const auto& e : fs::directory_iterator(disk.dir())) {
    std::string name = e.path().filename().string();
    EXPECT_EQ(name.rfind(".tmp.", 0), std::string::npos) << "a temporary file was left: " << name;
    bool bad = false;
    EXPECT_TRUE(disk.load(name, &bad).has_value()) << name;
    EXPECT_FALSE(bad) << name;
    keys.push_back(name);
  }
  return keys;
}

std::shared_ptr<Device> find_device(const std::string& backend) {
  for (const auto& d : devices())
    if (d->info().backend == backend) return d;
  return nullptr;
}

// A kernel compiled by one cache loads from disk in the next, with the same results.
void check_second_cache_loads_from_disk(Device& dev) {
  TempDir tmp;
  Graph g = test_graph(1.5);
  int64_t kernels = distinct_kernels(g, dev.info());
  ASSERT_GE(kernels, 2);
  {
    KernelCache first{DiskCache(tmp.path())};
    expect_matches(first, dev, g);
    EXPECT_EQ(first.disk_hits(), 0);
    EXPECT_EQ(first.disk_misses(), kernels);
  }
  DiskCache disk(tmp.path());
  EXPECT_EQ(disk.usage().entries, kernels);
  EXPECT_GT(disk.usage().bytes, 0);
  KernelCache second{DiskCache(tmp.path())};
  expect_matches(second, dev, g, /*seed=*/12);
  EXPECT_EQ(second.disk_hits(), kernels);
  EXPECT_EQ(second.disk_misses(), 0);
  EXPECT_EQ(second.disk_bad(), 0);

  second.clear_memory();  // and once more from disk, in the same cache
  expect_matches(second, dev, g, /*seed=*/13);
  EXPECT_EQ(second.disk_hits(), 2 * kernels);

  // A whole entry that this device cannot load is rebuilt.
  std::vector<std::string> keys;
  for (const auto& e : fs::directory_iterator(disk.dir())) keys.push_back(e.path().filename().string());
  ASSERT_FALSE(keys.empty());
  disk.store(keys[0], std::string(64, '\x11'));
  KernelCache third{DiskCache(tmp.path())};
  expect_matches(third, dev, g, /*seed=*/14);
  EXPECT_EQ(third.disk_bad(), 1);
  EXPECT_EQ(third.disk_hits(), kernels - 1);
  KernelCache fourth{DiskCache(tmp.path())};
  expect_matches(fourth, dev, g, /*seed=*/15);
  EXPECT_EQ(fourth.disk_hits(), kernels);
}

TEST(DiskCache, CpuKernelsLoadFromDiskInTheNextCache) { check_second_cache_loads_from_disk(*device("cpu")); }

TEST(DiskCache, VulkanKernelsLoadFromDiskInTheNextCache) {
  std::shared_ptr<Device> dev = find_device("vulkan");
  if (!dev) GTEST_SKIP() << "no Vulkan device";
  check_second_cache_loads_from_disk(*dev);
}

TEST(DiskCache, TruncatedCorruptAndUnloadableEntriesAreRebuilt) {
  std::shared_ptr<Device> dev = device("cpu");
  TempDir tmp;
  Graph g = test_graph(-0.75), h = test_graph(0.375);
  {
    KernelCache first{DiskCache(tmp.path())};
    expect_matches(first, *dev, g);
    expect_matches(first, *dev, h);
  }
  DiskCache disk(tmp.path());
  std::vector<std::string> keys = valid_entries(disk);
  ASSERT_GE(keys.size(), 3u);
  // Truncated, one byte flipped in the payload, and a valid entry whose
  // payload is no object file.
  fs::resize_file(disk.path(keys[0]), fs::file_size(disk.path(keys[0])) / 2);
  {
    std::fstream f(disk.path(keys[1]), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-100, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    f.seekp(-100, std::ios::end);
    c = char(c ^ 0x5a);
    f.write(&c, 1);
  }
  disk.store(keys[2], "not an object file");

  KernelCache second{DiskCache(tmp.path())};
  expect_matches(second, *dev, g, /*seed=*/21);
  expect_matches(second, *dev, h, /*seed=*/21);
  EXPECT_EQ(second.disk_bad(), 3);
  EXPECT_EQ(second.disk_misses(), 3);
  EXPECT_EQ(second.disk_hits(), int64_t(keys.size()) - 3);
  // Rewritten, valid, and loaded by the next cache.
  EXPECT_EQ(valid_entries(disk).size(), keys.size());
  KernelCache third{DiskCache(tmp.path())};
  expect_matches(third, *dev, g, /*seed=*/22);
  expect_matches(third, *dev, h, /*seed=*/22);
  EXPECT_EQ(third.disk_hits(), int64_t(keys.size()));
  EXPECT_EQ(third.disk_bad(), 0);
}

TEST(DiskCache, AnEntryOfAnotherKeyOrFormatIsNotLoaded) {
  TempDir tmp;
  DiskCache disk(tmp.path());
  std::string a = sha256_hex("a"), b = sha256_hex("b");
  disk.store(a, "payload");
  ASSERT_EQ(disk.load(a), std::optional<std::string>("payload"));
  fs::copy_file(disk.path(a), disk.path(b));  // echoes key a
  bool bad = false;
  EXPECT_FALSE(disk.load(b, &bad).has_value());
  EXPECT_TRUE(bad);
  EXPECT_FALSE(fs::exists(disk.path(b)));
  {
    std::fstream f(disk.path(a), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);  // the format version
    f.put(char(kDiskCacheFormat + 1));
  }
  EXPECT_FALSE(disk.load(a, &bad).has_value());
  EXPECT_TRUE(bad);
  EXPECT_FALSE(disk.load(sha256_hex("never stored"), &bad).has_value());
  EXPECT_FALSE(bad);
}

TEST(DiskCache, Sha256MatchesKnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}

// A process started by SeveralProcessesWriteOneFolderAtOnce: compiles and
// checks the test graphs with the disk cache in KILN_TEST_CACHE_WORKER.
TEST(DiskCacheWorker, CompileIntoSharedFolder) {
  const char* dir = std::getenv("KILN_TEST_CACHE_WORKER");
  if (!dir) GTEST_SKIP() << "run by SeveralProcessesWriteOneFolderAtOnce";
  std::shared_ptr<Device> dev = device("cpu");
  KernelCache cache{DiskCache(dir)};
  for (int i = 0; i < 4; ++i) expect_matches(cache, *dev, test_graph(0.25 + 0.5 * i), 30 + i);
}

TEST(DiskCache, SeveralProcessesWriteOneFolderAtOnce) {
  TempDir tmp;
  constexpr int kProcesses = 3;
  std::string env = "KILN_TEST_CACHE_WORKER=" + tmp.path().string();
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  envp.push_back(env.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=DiskCacheWorker.CompileIntoSharedFolder";
  std::vector<pid_t> pids;
  for (int i = 0; i < kProcesses; ++i) {
    char* argv[] = {exe.data(), filter.data(), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()), 0);
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker " << pid << " failed";
  }
  DiskCache disk(tmp.path());
  std::shared_ptr<Device> dev = device("cpu");
  int64_t kernels = 0;
  {
    std::set<std::string> texts;
    for (int i = 0; i < 4; ++i)
      for (const Kernel& k : lower(test_graph(0.25 + 0.5 * i)).kernels)
        texts.insert(KernelCache::structural_text(apply(k, default_schedule(k, dev->info()))));
    kernels = int64_t(texts.size());
  }
  EXPECT_EQ(int64_t(valid_entries(disk).size()), kernels);
  KernelCache after{DiskCache(tmp.path())};
  for (int i = 0; i < 4; ++i) expect_matches(after, *dev, test_graph(0.25 + 0.5 * i), 40 + i);
  EXPECT_EQ(after.disk_hits(), kernels);
  EXPECT_EQ(after.disk_misses(), 0);
}

TEST(DiskCache, DisabledCacheStillCompiles) {
  std::shared_ptr<Device> dev = device("cpu");
  KernelCache cache{DiskCache()};
  EXPECT_FALSE(cache.disk().enabled());
  expect_matches(cache, *dev, test_graph(2.0));
  EXPECT_EQ(cache.disk_hits() + cache.disk_misses(), 0);
  EXPECT_GT(cache.misses(), 0);
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(DiskCache, TheEnvironmentChoosesTheFolderOrTurnsItOff) {
  TempDir tmp;
  {
    ScopedEnv dir("KILN_CACHE_DIR", tmp.path().c_str());
    ScopedEnv no("KILN_NO_DISK_CACHE", nullptr);
    EXPECT_EQ(DiskCache::from_environment().dir(), tmp.path() / "kernels");
    ScopedEnv off("KILN_NO_DISK_CACHE", "1");
    EXPECT_FALSE(DiskCache::from_environment().enabled());
  }
  {
    ScopedEnv off("KILN_CACHE_DIR", "off");
    EXPECT_FALSE(DiskCache::from_environment().enabled());
  }
  {
    ScopedEnv dir("KILN_CACHE_DIR", nullptr);
    ScopedEnv home("HOME", tmp.path().c_str());
    EXPECT_EQ(DiskCache::from_environment().dir(), tmp.path() / ".cache" / "kiln" / "kernels");
    ScopedEnv no_home("HOME", nullptr);
    EXPECT_FALSE(DiskCache::from_environment().enabled());
  }
  {
    // A folder that cannot be created (under a file): off, no exception, and
    // kernels still compile.
    std::ofstream(tmp.path() / "file") << "x";
    ScopedEnv dir("KILN_CACHE_DIR", (tmp.path() / "file" / "sub").c_str());
    KernelCache cache;
    EXPECT_FALSE(cache.disk().enabled());
    expect_matches(cache, *device("cpu"), test_graph(0.5));
  }
}

TEST(DiskCache, KeyFollowsTheScheduleNotTheNames) {
  std::shared_ptr<Device> dev = device("cpu");
  Program p = lower(test_graph(1.0));
  const Kernel& k = p.kernels.back();
  Kernel a = apply(k, default_schedule(k, dev->info()));
  std::string id = dev->artifact_identity();
  ASSERT_FALSE(id.empty());
  std::string key = DiskCache::key(dev->info(), id, KernelCache::structural_text(a));

  Kernel renamed = a;
  renamed.name = "another_name";
  for (BufferDecl& b : renamed.buffers) b.name += "_x";
  EXPECT_EQ(DiskCache::key(dev->info(), id, KernelCache::structural_text(renamed)), key);
  // Loop variables named otherwise (schedules derive them from buffer names).
  std::function<std::string(const Stmt&)> first_loop = [&](const Stmt& st) -> std::string {
    if (st->kind == StmtKind::For) return st->var;
    for (const Stmt& b : st->body)
      if (std::string v = first_loop(b); !v.empty()) return v;
    return "";
  };
  std::string loop = first_loop(a.body);
  ASSERT_FALSE(loop.empty()) << print(a);
  std::string text = print(a);
  std::string other_vars = std::regex_replace(text, std::regex("\\b" + loop + "\\b"), "layer_7_" + loop);
  ASSERT_NE(other_vars, text);
  EXPECT_EQ(DiskCache::key(dev->info(), id, KernelCache::structural_text(parse_kernel(other_vars))), key);

  // The same kernel, scheduled otherwise.
  std::mt19937 rng(3);
  bool changed = false;
  for (int i = 0; i < 20 && !changed; ++i) {
    Kernel other = apply(k, testing::random_schedule(k, rng));
    if (print(other) == print(a)) continue;
    changed = true;
    EXPECT_NE(DiskCache::key(dev->info(), id, KernelCache::structural_text(other)), key) << print(other);
  }
  EXPECT_TRUE(changed) << "no random schedule differed from the default";

  DeviceInfo other_cpu = dev->info();
  other_cpu.features += ",avx512f";
  EXPECT_NE(DiskCache::key(other_cpu, id, KernelCache::structural_text(a)), key);
  EXPECT_NE(DiskCache::key(dev->info(), id + " (another LLVM)", KernelCache::structural_text(a)), key);
}

TEST(DiskCache, AFailedCompileIsStoredNowhere) {
  std::shared_ptr<Device> dev = device("cpu");
  TempDir tmp;
  KernelCache cache{DiskCache(tmp.path())};
  Program p = lower(test_graph(3.0));
  Kernel k = apply(p.kernels.back(), default_schedule(p.kernels.back(), dev->info()));
  fault::arm(fault::Site::jit_compile);
  EXPECT_THROW(cache.get_or_compile(*dev, k), Error);
  fault::disarm_all();
  EXPECT_EQ(cache.disk().usage().entries, 0);
  EXPECT_EQ(cache.misses(), 0);
  EXPECT_TRUE(cache.get_or_compile(*dev, k));
  EXPECT_EQ(cache.disk().usage().entries, 1);
}

#ifdef KILN_WITH_CUDA
// Without a GPU, the CUDA artifact is tested up to NVRTC: each kernel's cubin
// and entry name survive the disk cache, and other bytes do not parse.
TEST(DiskCache, CudaArtifactsRoundTripThroughTheDisk) {
  try {
    nvrtc_version();
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  TempDir tmp;
  DiskCache disk(tmp.path());
  int n = 0;
  for (const Kernel& lowered : lower(test_graph(1.0)).kernels) {
    Kernel k = testing::scheduled(lowered);
    std::string bytes = cuda_artifact(k, "sm_90");
    std::string key = DiskCache::key(testing::h100_info(), nvrtc_version(), KernelCache::structural_text(k));
    disk.store(key, bytes);
    std::optional<std::string> back = disk.load(key);
    ASSERT_TRUE(back.has_value());
    CudaImage image = parse_cuda_artifact(*back);
    EXPECT_EQ(image.entry, cuda_entry_name(k));
    EXPECT_EQ(image.image.substr(0, 4), "\x7f" "ELF") << "a cubin for sm_90";
    ++n;
  }
  EXPECT_GE(n, 2);
  EXPECT_THROW(parse_cuda_artifact("not a kernel"), Error);
  EXPECT_THROW(parse_cuda_artifact(""), Error);
}
#endif

}  // namespace
}  // namespace kiln
