// Shapes: a list of dims; a dim is a constant or a named symbolic variable with
// bounds (`seq in [1, 4096]`). Symbolic dims are bound to values at run time, so
// kernels compiled for them serve every value in the bounds.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln {

struct Dim {
  int64_t value = 0;  // the extent when constant
  std::string sym;    // non-empty: a symbolic dim with this name
  int64_t lo = 1, hi = 1;  // bounds of a symbolic dim (inclusive)

  Dim() = default;
  Dim(int64_t v) : value(v) {}  // NOLINT: constants convert implicitly
  static Dim symbol(std::string name, int64_t lo, int64_t hi);

  bool is_const() const { return sym.empty(); }
  bool is_one() const { return is_const() && value == 1; }
  bool operator==(const Dim& o) const;
  bool operator!=(const Dim& o) const { return !(*this == o); }
  std::string str() const;  // "128" or "seq"
};

using Shape = std::vector<Dim>;
// Values of the symbolic dims for one run: name -> value.
using Bindings = std::map<std::string, int64_t>;

std::string shape_str(const Shape& s);  // "[seq, 128]"
bool is_static(const Shape& s);
// Number of elements; throws kiln::Error when a symbolic dim is not bound or
// is out of its bounds.
int64_t numel(const Shape& s, const Bindings& b = {});
int64_t dim_value(const Dim& d, const Bindings& b);
// Row-major contiguous strides of concrete sizes.
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes);
std::vector<int64_t> concrete(const Shape& s, const Bindings& b);

// NumPy broadcasting of two shapes; throws kiln::Error naming `op` and both
// shapes when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& op);

}  // namespace kiln
