#include "tools/cache.h"

#include <chrono>
#include <cstdio>
#include <string>

#include "frontend/models/llm.h"
#include "kiln/kiln.h"
#include "runtime/kernel_cache.h"

namespace kiln {

namespace {

struct CacheOptions {
  CLI::App* info = nullptr;
  CLI::App* clear = nullptr;
  CLI::App* compile = nullptr;
  std::string config = "tinyllama-1.1b";
  int64_t prefill = 512;
  std::string device = "cpu";
  std::string dtype = "f32";
};

CacheOptions& options() {
  static CacheOptions o;
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const DiskCache& disk_or_say_why() {
  const DiskCache& disk = KernelCache::global().disk();
  if (!disk.enabled()) std::printf("the kernel disk cache is off (KILN_CACHE_DIR=off, KILN_NO_DISK_CACHE, no HOME, or a folder that cannot be made)\n");
  return disk;
}

int cache_info() {
  const DiskCache& disk = disk_or_say_why();
  if (!disk.enabled()) return 0;
  DiskCache::Usage u = disk.usage();
  std::printf("path: %s\nentries: %lld\nbytes: %lld (%.1f MiB)\n", disk.dir().c_str(), (long long)u.entries,
              (long long)u.bytes, double(u.bytes) / (1 << 20));
  return 0;
}

int cache_clear() {
  const DiskCache& disk = disk_or_say_why();
  if (!disk.enabled()) return 0;
  std::printf("deleted %lld entries from %s\n", (long long)disk.clear(), disk.dir().c_str());
  return 0;
}

// One graph compiled on `dev`: prints how long it took and where its kernels came from.
double compile_one(const char* what, const Graph& g, const std::shared_ptr<Device>& dev) {
  KernelCache& cache = KernelCache::global();
  int64_t misses = cache.misses(), disk_hits = cache.disk_hits(), disk_misses = cache.disk_misses();
  auto t0 = std::chrono::steady_clock::now();
  CompiledGraph cg(g, dev);
  double s = seconds_since(t0);
  std::printf("%-8s compiled in %.3f s: %zu kernels, %lld new to this process, %lld from disk, %lld compiled\n", what,
              s, cg.program().kernels.size(), (long long)(cache.misses() - misses),
              (long long)(cache.disk_hits() - disk_hits), (long long)(cache.disk_misses() - disk_misses));
  return s;
}

int cache_compile() {
  const CacheOptions& o = options();
  std::shared_ptr<Device> dev = device(o.device);
  LlmConfig c = llm_config(o.config);
  DType dt = parse_dtype(o.dtype);
  const DiskCache& disk = KernelCache::global().disk();
  std::printf("%s on %s, disk cache %s\n", c.name.c_str(), dev->info().name.c_str(),
              disk.enabled() ? disk.dir().c_str() : "off");
  auto t0 = std::chrono::steady_clock::now();
  double total = compile_one("decode", llm_decode_graph(c, dt), dev);
  total += compile_one(("prefill:" + std::to_string(o.prefill)).c_str(), llm_prefill_graph(c, dt, o.prefill), dev);
  std::printf("total: %.3f s compiling, %.3f s with building the graphs\n", total, seconds_since(t0));
  return 0;
}

}  // namespace

CLI::App* add_cache_command(CLI::App& app) {
  CacheOptions& o = options();
  CLI::App* cache = app.add_subcommand("cache", "the on-disk kernel cache: info, clear, compile");
  cache->require_subcommand(1);
  o.info = cache->add_subcommand("info", "print the cache's folder, entries and bytes");
  o.clear = cache->add_subcommand("clear", "delete every cached kernel");
  o.compile = cache->add_subcommand("compile", "compile a model's decode and prefill graphs, print the time");
  o.compile->add_option("--config", o.config, "a built-in model shape (tinyllama-1.1b, ...)");
  o.compile->add_option("--prefill", o.prefill, "tokens of the prefill graph")->check(CLI::Range(1, 1 << 20));
  o.compile->add_option("--device", o.device, "device");
  o.compile->add_option("--dtype", o.dtype, "element type");
  return cache;
}

int run_cache() {
  const CacheOptions& o = options();
  if (o.info->parsed()) return cache_info();
  if (o.clear->parsed()) return cache_clear();
  return cache_compile();
}

}  // namespace kiln
