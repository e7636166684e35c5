// The cell-level reference: steps every cell of the array every cycle. Inputs
// enter skewed at the left edge and move one cell right per cycle; in WS each
// cell adds its product to the partial sum coming from above and passes it
// down, and sums leave the bottom row into the accumulators; in OS each cell
// keeps its own sum while operands stream in from the left and the top, and
// the finished tile shifts out through the top. DMAs move their bytes at the
// DRAM's bandwidth each cycle. Slow (rows * cols work per cycle): for small
// arrays, to check the fast model's timing rules and results.
#pragma once

#include <vector>

#include "backends/systolic/fast_model.h"
#include "backends/systolic/machine.h"

namespace kiln::systolic {

struct CellRun {
  std::vector<InstrTiming> instrs;  // start and done of each instruction (stall fields unset)
  int64_t total_cycles = 0;
};

// Runs `p` on `dram` (results written there) and returns when each
// instruction ran. Throws kiln::Error if operands meet out of step in a cell
// or the program can make no progress.
CellRun run_cell_model(const Program& p, const SystolicConfig& c, std::vector<Matrix>& dram);

}  // namespace kiln::systolic
