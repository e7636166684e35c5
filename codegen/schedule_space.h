// The space of schedules that the autotuner searches: the default schedule's
// heuristics (codegen/default_schedule.cpp) with each of their choices (tile
// sizes, loop order, which loop is parallel, packing, unrolling, thread
// counts) turned into a named knob. With every knob at its default the
// heuristics give exactly default_schedule(); other values give its
// neighbours. A knob's options are only candidates: a schedule built from
// them may still be refused by apply(), which the tuner treats as illegal.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "codegen/schedule.h"

namespace kiln {

struct Knob {
  std::string name;
  std::vector<int64_t> options;  // distinct; holds `def`
  int64_t def = 0;
};

// What the heuristics ask while they build a schedule: each choice by name.
// Records every knob asked for (its options and default), and answers with
// the value set for it, else its default.
class Knobs {
 public:
  Knobs() = default;
  explicit Knobs(std::map<std::string, int64_t> values) : values_(std::move(values)) {}

  // `options` need not hold `def` or be distinct; the recorded knob does and is.
  int64_t pick(const std::string& name, std::vector<int64_t> options, int64_t def);
  bool pick(const std::string& name, bool def) { return pick(name, {0, 1}, def ? 1 : 0) != 0; }

  const std::vector<Knob>& seen() const { return seen_; }
  const std::map<std::string, int64_t>& values() const { return values_; }

 private:
  std::map<std::string, int64_t> values_;
  std::vector<Knob> seen_;
};

// The schedule the heuristics build for `k` on `target` with the knobs'
// values (default_schedule(k, target) is schedule_with(k, target, Knobs())).
Schedule schedule_with(const Kernel& k, const DeviceInfo& target, Knobs& knobs);

// The knobs that `k` has on `target`, as the heuristics ask for them with
// every knob at its default. Empty where there is nothing to tune.
std::vector<Knob> schedule_knobs(const Kernel& k, const DeviceInfo& target);

// "nr=32 mr=8 order=0": a knob setting as text, for progress lines and logs.
std::string print_knobs(const std::map<std::string, int64_t>& values);

}  // namespace kiln
