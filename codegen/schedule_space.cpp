#include "codegen/schedule_space.h"

#include <algorithm>

namespace kiln {

int64_t Knobs::pick(const std::string& name, std::vector<int64_t> options, int64_t def) {
  options.push_back(def);
  std::sort(options.begin(), options.end());
  options.erase(std::unique(options.begin(), options.end()), options.end());
  bool known = false;
  for (const Knob& k : seen_) known |= k.name == name;
  if (!known) seen_.push_back({name, options, def});
  auto it = values_.find(name);
  if (it == values_.end() || std::find(options.begin(), options.end(), it->second) == options.end()) return def;
  return it->second;
}

std::vector<Knob> schedule_knobs(const Kernel& k, const DeviceInfo& target) {
  Knobs knobs;
  schedule_with(k, target, knobs);
  std::vector<Knob> out;
  for (const Knob& kn : knobs.seen())
    if (kn.options.size() > 1) out.push_back(kn);
  return out;
}

std::string print_knobs(const std::map<std::string, int64_t>& values) {
  std::string s;
  for (const auto& [name, v] : values) s += (s.empty() ? "" : " ") + name + "=" + std::to_string(v);
  return s;
}

}  // namespace kiln
