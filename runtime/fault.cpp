#include "runtime/fault.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdlib>
#include <string>

#include "kiln/error.h"

namespace kiln::fault {

namespace {

std::atomic<int> remaining[kSites];
std::atomic<bool> any_armed{false};

// KILN_FAULT=site[:count],... ; an unknown site or a bad count is an error, not
// a silently healthy run.
void arm_from_environment() {
  const char* env = std::getenv("KILN_FAULT");
  if (!env) return;
  std::string_view rest = env;
  while (!rest.empty()) {
    std::string_view item = rest.substr(0, rest.find(','));
    rest.remove_prefix(std::min(rest.size(), item.size() + 1));
    std::string_view name = item.substr(0, item.find(':'));
    int count = 1;
    if (name.size() < item.size()) {
      std::string_view n = item.substr(name.size() + 1);
      auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), count);
      if (ec != std::errc() || ptr != n.data() + n.size() || count < 0)
        throw Error("KILN_FAULT: bad count in '" + std::string(item) + "'");
    }
    bool found = false;
    for (int s = 0; s < kSites; ++s)
      if (name == site_name(Site(s))) {
        arm(Site(s), count);
        found = true;
      }
    if (!found) throw Error("KILN_FAULT: no fault site '" + std::string(name) + "' (alloc, jit_compile, launch)");
  }
}

}  // namespace

std::string_view site_name(Site site) {
  switch (site) {
    case Site::alloc: return "alloc";
    case Site::jit_compile: return "jit_compile";
    case Site::launch: return "launch";
  }
  return "?";
}

void arm(Site site, int count) {
  remaining[int(site)] = count;
  if (count > 0) any_armed = true;
}

void disarm_all() {
  for (auto& r : remaining) r = 0;
  any_armed = false;
}

namespace {

void read_environment_once() {
  static const bool environment_read = (arm_from_environment(), true);
  (void)environment_read;
}

}  // namespace

bool armed(Site site) {
  read_environment_once();
  return any_armed.load(std::memory_order_relaxed) && remaining[int(site)].load() > 0;
}

bool fires(Site site) {
  read_environment_once();
  if (!any_armed.load(std::memory_order_relaxed)) return false;
  std::atomic<int>& r = remaining[int(site)];
  for (int n = r.load(); n > 0;)
    if (r.compare_exchange_weak(n, n - 1)) return true;
  return false;
}

}  // namespace kiln::fault
