// A fixed pool of worker threads for the CPU backend's parallel loops. The
// thread that calls parallel_for works too, so a pool of N threads starts N - 1
// workers, and a parallel_for nested inside another still makes progress.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

// How many threads ThreadPool::global() has: KILN_NUM_THREADS when set (it must
// be an integer from 1 to 4096, else kiln::Error), else the hardware's count.
int default_thread_count();

class ThreadPool {
 public:
  // Throws kiln::Error unless threads >= 1.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Calls fn(b, e) on contiguous chunks that cover [begin, end) exactly once,
  // spread over the pool and the caller, and returns when all are done. The
  // first exception that fn throws is rethrown here (chunks not yet started
  // are skipped). Safe to call from several threads at once.
  void parallel_for(int64_t begin, int64_t end,
                    const std::function<void(int64_t, int64_t)>& fn);

  // The process-wide pool of default_thread_count() threads.
  static ThreadPool& global();

 private:
  struct Job;

  void work();
  void retire(const std::shared_ptr<Job>& job);

  int size_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> jobs_;  // jobs that may have unclaimed chunks
  bool stopping_ = false;
  // Bumped (under mutex_) whenever jobs_ gains a job or the pool stops: what
  // an idle worker watches while it spins before sleeping.
  std::atomic<uint64_t> posted_{0};
};

}  // namespace kiln
