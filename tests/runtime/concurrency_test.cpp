// The runtime's shared parts used from several threads at once: the thread
// pool, the kernel cache and CompiledGraphs on one device. Run under
// ThreadSanitizer in build-tsan/ (docs/testing.md); here they check results.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "codegen/lower.h"
#include "runtime/kernel_cache.h"
#include "runtime/thread_pool.h"
#include "tests/testing.h"

namespace kiln {
namespace {

constexpr int kCallers = 4;

// sin(x * scale) over [n]: one kernel, different for each scale.
Graph scaled_graph(double scale, int64_t n = 256) {
  Graph g;
  int x = g.input("x", f32, {n});
  g.outputs = {g.unary(Op::Sin, g.binary(Op::Mul, x, g.constant(scale, f32, {n})))};
  return g;
}

// Calls fn(t) on threads t = 0 .. threads-1 at once; an exception fails the test.
void run_on_threads(int threads, const std::function<void(int)>& fn) {
  std::vector<std::thread> callers;
  std::atomic<int> failed = 0;
  for (int t = 0; t < threads; ++t)
    callers.emplace_back([&, t] {
      try {
        fn(t);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "thread " << t << ": " << e.what();
        ++failed;
      }
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(failed.load(), 0);
}

TEST(Concurrency, ThreadPoolParallelForFromSeveralThreads) {
  ThreadPool pool(3);
  std::vector<std::atomic<int64_t>> hits(10000);
  run_on_threads(kCallers, [&](int) {
    for (int round = 0; round < 50; ++round) {
      int64_t end = 1 + (round * 397) % int64_t(hits.size());
      pool.parallel_for(0, end, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
      });
    }
  });
  int64_t total = 0;
  for (auto& h : hits) total += h.load();
  int64_t want = 0;
  for (int round = 0; round < 50; ++round) want += 1 + (round * 397) % int64_t(hits.size());
  EXPECT_EQ(total, kCallers * want);
}

TEST(Concurrency, ThreadPoolExceptionsFromSeveralThreads) {
  ThreadPool pool(3);
  std::atomic<int> caught = 0;
  run_on_threads(kCallers, [&](int t) {
    for (int round = 0; round < 20; ++round) {
      try {
        pool.parallel_for(0, 100, [&](int64_t b, int64_t e) {
          if (b <= 50 && 50 < e) throw Error("chunk failed");
        });
      } catch (const Error&) {
        ++caught;
      }
    }
  });
  EXPECT_EQ(caught.load(), kCallers * 20);
}

// Jobs microseconds apart (workers still spinning for the next one, or just
// asleep) and pools destroyed right after a job (workers spinning when the
// pool stops) lose no chunk and never hang.
TEST(Concurrency, ThreadPoolJobsBackToBackAndStopsWhileSpinning) {
  for (int pools = 0; pools < 50; ++pools) {
    ThreadPool pool(3);
    std::atomic<int64_t> sum = 0;
    for (int job = 0; job < 20; ++job) {
      if (job % 5 == 4) std::this_thread::sleep_for(std::chrono::microseconds(200));  // past the spin: asleep
      pool.parallel_for(0, 64, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) sum.fetch_add(i, std::memory_order_relaxed);
      });
    }
    EXPECT_EQ(sum.load(), 20 * (63 * 64 / 2));
  }
}

// Every thread asks for the same kernels at once: each gets one executable
// per kernel, the same one, and it runs.
TEST(Concurrency, KernelCacheGetOrCompileFromSeveralThreads) {
  std::shared_ptr<Device> dev = device("cpu");
  std::vector<Kernel> kernels;
  for (int i = 0; i < 6; ++i) {
    Kernel k = lower(scaled_graph(1.0 + 0.125 * i, 128)).kernels.at(0);
    kernels.push_back(apply(k, default_schedule(k, dev->info())));
  }
  std::vector<std::vector<std::shared_ptr<Executable>>> got(kCallers);
  run_on_threads(kCallers, [&](int t) {
    for (size_t i = 0; i < kernels.size(); ++i) {
      size_t k = (i + t) % kernels.size();  // threads start on different kernels
      got[t].resize(kernels.size());
      got[t][k] = KernelCache::global().get_or_compile(*dev, kernels[k]);
    }
  });
  for (int t = 0; t < kCallers; ++t)
    for (size_t k = 0; k < kernels.size(); ++k) {
      ASSERT_TRUE(got[t][k]);
      EXPECT_EQ(got[t][k], got[0][k]) << "thread " << t << ", kernel " << k;
    }
}

// Whole graphs compiled and run from several threads on the one CPU device,
// some sharing kernels, each against the interpreter.
TEST(Concurrency, CompiledGraphsOnOneDeviceFromSeveralThreads) {
  std::atomic<int> wrong = 0;
  run_on_threads(kCallers, [&](int t) {
    for (int round = 0; round < 3; ++round) {
      Graph g = scaled_graph(0.5 + 0.25 * ((t + round) % 3), 64 + 32 * t);
      auto inputs = testing::inputs_for(g, {}, 11 + t);
      std::vector<HostTensor> want = interpret(g, inputs);
      CompiledGraph cg(g, device("cpu"));
      std::vector<HostTensor> got = cg.run(inputs);
      if (!testing::compare(want[0], got[0], testing::tolerance_for(f32)).empty()) ++wrong;
    }
  });
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace kiln
