#include "kiln/shape.h"

#include <algorithm>

#include "kiln/error.h"

namespace kiln {

Dim Dim::symbol(std::string name, int64_t lo, int64_t hi) {
  if (name.empty()) throw Error("a symbolic dim needs a name");
  if (lo < 1 || hi < lo)
    throw Error("symbolic dim '" + name + "' has bad bounds [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "] (need 1 <= lo <= hi)");
  Dim d;
  d.sym = std::move(name);
  d.lo = lo;
  d.hi = hi;
  return d;
}

bool Dim::operator==(const Dim& o) const {
  if (is_const() != o.is_const()) return false;
  return is_const() ? value == o.value : sym == o.sym;
}

std::string Dim::str() const { return is_const() ? std::to_string(value) : sym; }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + s[i].str();
  return out + "]";
}

bool is_static(const Shape& s) {
  return std::all_of(s.begin(), s.end(), [](const Dim& d) { return d.is_const(); });
}

int64_t dim_value(const Dim& d, const Bindings& b) {
  if (d.is_const()) return d.value;
  auto it = b.find(d.sym);
  if (it == b.end()) throw Error("symbolic dim '" + d.sym + "' is not bound to a value");
  if (it->second < d.lo || it->second > d.hi)
    throw Error("symbolic dim '" + d.sym + "' = " + std::to_string(it->second) + " is outside its bounds [" +
                std::to_string(d.lo) + ", " + std::to_string(d.hi) + "]");
  return it->second;
}

std::vector<int64_t> concrete(const Shape& s, const Bindings& b) {
  std::vector<int64_t> out;
  out.reserve(s.size());
  for (const Dim& d : s) out.push_back(dim_value(d, b));
  return out;
}

int64_t numel(const Shape& s, const Bindings& b) {
  int64_t n = 1;
  for (const Dim& d : s) n *= dim_value(d, b);
  return n;
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> st(sizes.size(), 1);
  for (int i = int(sizes.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * sizes[i + 1];
  return st;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const Dim* da = i < n - a.size() ? nullptr : &a[i - (n - a.size())];
    const Dim* db = i < n - b.size() ? nullptr : &b[i - (n - b.size())];
    if (!da || da->is_one()) out[i] = db ? *db : Dim(1);
    else if (!db || db->is_one() || *da == *db) out[i] = *da;
    else
      throw Error(op + ": shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast (dim " +
                  da->str() + " vs " + db->str() + ")");
  }
  return out;
}

}  // namespace kiln
