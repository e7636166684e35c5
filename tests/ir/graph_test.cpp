// Graph builders: symbolic dims keep one set of bounds per name.
#include <gtest/gtest.h>

#include "kiln/error.h"
#include "kiln/graph.h"

namespace kiln {
namespace {

TEST(Graph, ASymbolicDimHasOneSetOfBounds) {
  Graph g;
  g.input("x", f32, {Dim::symbol("seq", 1, 128), Dim(4)});
  EXPECT_NO_THROW(g.input("y", f32, {Dim::symbol("seq", 1, 128)}));
  try {
    g.input("z", f32, {Dim::symbol("seq", 1, 64)});
    FAIL() << "accepted two bounds for seq";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("two different bounds"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln
