#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "kiln/error.h"

namespace kiln {

namespace {

// Several chunks per thread so that uneven chunks still balance.
constexpr int64_t kChunksPerThread = 4;
constexpr int kMaxThreads = 4096;

// How long a thread spins for the next job (a worker) or for the last chunks
// of its own (the caller) before it sleeps on a condition variable. A decode
// step's kernels are a few microseconds apart, and waking a sleeping thread
// costs tens of microseconds on a VM; a spin this short costs an idle pool
// nothing that matters.
constexpr auto kSpin = std::chrono::microseconds(50);

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until done() or kSpin has passed; returns done().
template <class Done>
bool spin_until(Done done) {
  const auto stop = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if (i % 64 == 63 && std::chrono::steady_clock::now() >= stop) return done();
  }
}

}  // namespace

int default_thread_count() {
  const char* env = std::getenv("KILN_NUM_THREADS");
  if (!env) return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int n = 0;
  const char* end = env + std::strlen(env);
  auto [ptr, ec] = std::from_chars(env, end, n);
  if (ec != std::errc() || ptr != end || n < 1 || n > kMaxThreads)
    throw Error("KILN_NUM_THREADS must be an integer from 1 to " + std::to_string(kMaxThreads) +
                ", got '" + env + "'");
  return n;
}

// One parallel_for call. Threads claim chunks through `next`; the caller waits
// until `done` reaches `chunks`.
struct ThreadPool::Job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t begin;
  int64_t chunks;
  int64_t base;   // every chunk has `base` indices ...
  int64_t extra;  // ... and the first `extra` chunks one more
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;  // guarded by mutex

  int64_t chunk_begin(int64_t c) const { return begin + c * base + std::min(c, extra); }

  // Runs chunks until none is left to claim.
  void run() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      if (!failed.load()) {
        try {
          (*fn)(chunk_begin(c), chunk_begin(c + 1));
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex);
          if (!error) error = std::current_exception();
          failed = true;
        }
      }
      if (done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex);
        finished.notify_all();
      }
    }
  }
};

ThreadPool::ThreadPool(int threads) : size_(threads) {
  if (threads < 1) throw Error("a thread pool needs at least 1 thread, got " + std::to_string(threads));
  workers_.reserve(threads - 1);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    posted_.fetch_add(1);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_thread_count());
  return pool;
}

void ThreadPool::parallel_for(int64_t begin, int64_t end,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  int64_t n = end - begin;
  int64_t chunks = std::min(n, int64_t(size_) * kChunksPerThread);
  if (chunks == 1) {
    fn(begin, end);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->begin = begin;
  job->chunks = chunks;
  job->base = n / chunks;
  job->extra = n % chunks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(job);
    posted_.fetch_add(1);
  }
  wake_.notify_all();
  job->run();
  retire(job);
  spin_until([&] { return job->done.load() == job->chunks; });
  std::unique_lock<std::mutex> lock(job->mutex);
  job->finished.wait(lock, [&] { return job->done.load() == job->chunks; });
  if (job->error) std::rethrow_exception(job->error);
}

void ThreadPool::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (!stopping_ && jobs_.empty()) {
      const uint64_t seen = posted_.load();
      lock.unlock();
      spin_until([&] { return posted_.load() != seen; });
      lock.lock();
    }
    wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    std::shared_ptr<Job> job = jobs_.front();
    lock.unlock();
    job->run();
    retire(job);
    lock.lock();
  }
}

// Drops a job whose chunks are all claimed so that workers stop picking it.
void ThreadPool::retire(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find(jobs_.begin(), jobs_.end(), job);
  if (it != jobs_.end()) jobs_.erase(it);
}

}  // namespace kiln
