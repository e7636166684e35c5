// A whole file as text, for the tools' file arguments (IR text, fuzz cases,
// tuning exports); a file that cannot be read is a kiln::Error naming it.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "kiln/error.h"

namespace kiln {

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace kiln
