// kiln's one error type: every failure a user can cause (bad shapes, bad IR text,
// a failed JIT compile, a missing device) is thrown as kiln::Error with a message
// that says what went wrong and where.
#pragma once

#include <stdexcept>
#include <string>

namespace kiln {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace kiln
