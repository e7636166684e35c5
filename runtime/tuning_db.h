// The tuning database (issue 8): the schedule the autotuner found best for a
// kernel on a device, kept in SQLite at $KILN_CACHE_DIR/tuning.sqlite
// (default ~/.cache/kiln/tuning.sqlite; KILN_CACHE_DIR=off turns it off).
// Keyed by the kernel's structure (the SHA-256 of its text with names left
// out, so every layer of a model shares one entry), the device's fingerprint
// and kiln's version. The executor looks a kernel up here before it falls
// back to the default schedule.
//
// Several processes may read and write one file at once (WAL journal, busy
// timeout). A file that is not a sound database is moved aside and a new one
// made; a location that cannot be used turns the database off with one
// warning, never failing a compile.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "codegen/schedule.h"
#include "kiln/runtime.h"

struct sqlite3;

namespace kiln {

// kiln's version, part of every key: a new version retunes.
extern const char* const kKilnVersion;

struct TuningRecord {
  std::string kernel_hash;  // kernel_structure_hash()
  std::string device;       // device_fingerprint()
  std::string version = kKilnVersion;
  std::string schedule;     // print(Schedule)
  double default_s = 0;     // the default schedule's median time
  double tuned_s = 0;       // this schedule's median time
  int64_t candidates = 0;   // schedules measured to find it
  std::string kernel_name;  // for people reading the table; not part of the key
  std::string tuned_at;     // UTC, ISO 8601
};

// "cpu|cpu: Intel ...|avx2,fma|cores=2|vector=512": what a schedule's speed depends on.
std::string device_fingerprint(const DeviceInfo& d);
// The SHA-256 (hex) of the kernel's structural text (KernelCache::structural_text).
std::string kernel_structure_hash(const Kernel& k);

class TuningDb {
 public:
  // Opens (creating if needed) the database at `file`. A corrupt file is
  // renamed to FILE.corrupt-SECONDS and replaced by a new one. Throws
  // kiln::Error when the file cannot be opened or made at all.
  explicit TuningDb(const std::filesystem::path& file);
  ~TuningDb();
  TuningDb(const TuningDb&) = delete;
  TuningDb& operator=(const TuningDb&) = delete;

  // The process's database from the environment, opened at first use; null
  // when off or unusable (then one warning on stderr says why).
  static TuningDb* global();
  // Forgets the process's database, so the next global() reads the
  // environment again (tests that change KILN_CACHE_DIR).
  static void reset_global();

  const std::filesystem::path& path() const { return path_; }

  std::optional<TuningRecord> lookup(const std::string& kernel_hash, const std::string& device,
                                     const std::string& version = kKilnVersion);
  // Keeps `r` unless the database already has a faster schedule for its key.
  void store(const TuningRecord& r);
  std::vector<TuningRecord> records();

  // Every record as a JSON array, or as SQL INSERT statements.
  std::string export_json();
  std::string export_sql();
  // Records from export_json() or export_sql() text (told apart by the first
  // character), merged like store(). SQL text may only insert into the
  // tunings table. Returns how many records it read; throws kiln::Error on
  // malformed text.
  int64_t import_text(const std::string& text);

 private:
  void open_or_recover();
  void exec(const char* sql);

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
};

// A schedule with the kernel's buffers ("b0", "b1", ...) and loops ("v0",
// "v1", ... in pre-order) named as KernelCache::structural_text names them, so
// that one stored schedule serves every kernel of the same structure (the
// layers of a model); and back. Names the schedule makes up stay as they are.
Schedule structural_schedule(const Schedule& s, const Kernel& k);
Schedule named_schedule(const Schedule& s, const Kernel& k);

// The stored schedule for `k` on `dev` if the process's database has one and
// it applies to `k`; else nullopt (no message: the default is then used).
std::optional<Schedule> tuned_schedule(const Kernel& k, const DeviceInfo& dev);

}  // namespace kiln
