// The two simulators on GEMM programs: cycle counts against formulas derived
// here from the timing rules, the fast model against the cell-level model on
// small arrays, and results bit-exact against plain integer arithmetic.
#include <gtest/gtest.h>

#include <random>

#include "backends/systolic/cell_model.h"
#include "backends/systolic/fast_model.h"
#include "codegen/emit/systolic/emit_gemm.h"
#include "kiln/dtype.h"

namespace kiln::systolic {
namespace {

SystolicConfig small(int rows, int cols, Dataflow df, InputType in) {
  SystolicConfig c;
  c.rows = rows;
  c.cols = cols;
  c.dataflow = df;
  c.input = in;
  c.input_buffer = c.weight_buffer = c.acc_buffer = 1 << 20;
  c.dram_bytes_per_cycle = 8;
  c.dram_latency = 10;
  c.vector_lanes = 4;
  return c;
}

// DRAM regions 0 (A, m x k), 1 (B, k x n), 2 (C, m x n) with random operands.
std::vector<Matrix> operands(const SystolicConfig& c, int64_t m, int64_t k, int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<Matrix> d = {Matrix::of(c, m, k), Matrix::of(c, k, n), Matrix::of(c, m, n)};
  for (int r = 0; r < 2; ++r) {
    if (c.input == InputType::Int8) {
      std::uniform_int_distribution<int> v(-128, 127);
      for (auto& x : d[r].i) x = v(rng);
    } else {
      std::uniform_real_distribution<float> v(-2, 2);
      for (auto& x : d[r].f) x = bf16_bits_to_f32(f32_to_bf16_bits(v(rng)));
    }
  }
  return d;
}

// The GEMM in plain integer arithmetic.
std::vector<int32_t> int_gemm(const std::vector<Matrix>& d) {
  const Matrix &a = d[0], &b = d[1];
  std::vector<int32_t> c(size_t(a.rows * b.cols));
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < b.cols; ++j) {
      int64_t s = 0;
      for (int64_t q = 0; q < a.cols; ++q) s += int64_t(a.i[size_t(i * a.cols + q)]) * b.i[size_t(q * b.cols + j)];
      c[size_t(i * b.cols + j)] = int32_t(s);
    }
  return c;
}

TEST(SystolicTiming, OneWeightStationaryTileMatchesTheFormula) {
  SystolicConfig c = small(4, 4, Dataflow::WeightStationary, InputType::Bf16);
  const int64_t M = 3, K = 4, N = 4, R = 4, L = 10, BW = 8;
  Program p = emit_gemm({{0, 1, 2, M, K, N}}, c);
  Timeline t = time_program(p, c);
  // A (M*K*2 bytes) and B (K*N*2 bytes) stream in one after the other on the
  // read channel; each lands L cycles after its last byte leaves.
  int64_t a_done = M * K * 2 / BW + L;
  int64_t b_done = M * K * 2 / BW + K * N * 2 / BW + L;
  // The weights enter one array row per cycle; then the inputs stream in,
  // skewed by one cycle a row; the last partial sum leaves the bottom of
  // column N-1 after M-1 + R-1 + N-1 cycles.
  int64_t load_done = std::max(a_done, b_done) + K;
  int64_t mm_done = load_done + (M - 1) + (R - 1) + (N - 1) + 1;
  int64_t total = mm_done + M * N * 4 / BW + L;  // results out at 4 bytes each
  EXPECT_EQ(t.stats.total_cycles, total) << print(p);
  EXPECT_EQ(t.stats.macs, M * K * N);
  EXPECT_EQ(t.stats.compute_cycles, M);
  EXPECT_EQ(t.stats.compute_cycles + t.stats.stall[0] + t.stats.stall[1] + t.stats.stall[2], total);
}

TEST(SystolicTiming, OneOutputStationaryTileMatchesTheFormula) {
  SystolicConfig c = small(4, 4, Dataflow::OutputStationary, InputType::Int8);
  const int64_t M = 4, K = 16, N = 3, L = 10, BW = 8;
  Program p = emit_gemm({{0, 1, 2, M, K, N}}, c);
  Timeline t = time_program(p, c);
  int64_t operands_done = (M * K + K * N) / BW + L;
  // Cell (i, j) does its last MAC K-1 + i + j cycles after the first; then
  // the results shift out of the top, one row per cycle.
  int64_t mm_done = operands_done + (K - 1) + (M - 1) + (N - 1) + 1 + M;
  EXPECT_EQ(t.stats.total_cycles, mm_done + (M * N * 4 + BW - 1) / BW + L) << print(p);
}

// With operands already close by (1-cycle DMAs, no latency), back-to-back WS
// matmuls keep the array's input ports busy: S steps of M rows each, after the
// first weight load and before the last drain.
TEST(SystolicTiming, WeightStationarySteadyStateIsComputeBound) {
  for (auto [R, C] : {std::pair{4, 4}, std::pair{8, 4}, std::pair{16, 16}}) {
    SystolicConfig c = small(R, C, Dataflow::WeightStationary, InputType::Int8);
    c.dram_bytes_per_cycle = 1e9;
    c.dram_latency = 0;
    const int64_t M = R + C + 5, K = 3 * R, N = 2 * C, S = (K / R) * (N / C);
    Program p = emit_gemm({{0, 1, 2, M, K, N}}, c);
    Timeline t = time_program(p, c);
    // Loads of A and B: cycles 0 and 1; first weight load R cycles; the last
    // matmul starts (S-1)*M later and drains M + R + C - 2 cycles; one more
    // cycle writes its tile back.
    int64_t want = 2 + R + (S - 1) * M + (M + R + C - 2) + 1;
    EXPECT_EQ(t.stats.total_cycles, want) << R << "x" << C << "\n" << print(p);
    EXPECT_EQ(t.stats.compute_cycles, S * M);
  }
}

TEST(SystolicTiming, OutputStationaryTilesRunBackToBack) {
  SystolicConfig c = small(4, 4, Dataflow::OutputStationary, InputType::Int8);
  c.dram_bytes_per_cycle = 1e9;
  c.dram_latency = 0;
  const int64_t M = 8, K = 20, N = 12, tiles = (M / 4) * (N / 4);
  Program p = emit_gemm({{0, 1, 2, M, K, N}}, c);
  Timeline t = time_program(p, c);
  // Two 1-cycle loads, then each tile holds the array K + 2*4 + 4 - 2 cycles;
  // the last write-back takes one cycle.
  EXPECT_EQ(t.stats.total_cycles, 2 + tiles * (K + 2 * 4 + 4 - 2) + 1) << print(p);
}

struct Case {
  int rows, cols;
  Dataflow df;
  InputType in;
  int64_t m, k, n;
  double bw;
};

class FastEqualsCells : public ::testing::TestWithParam<Case> {};

TEST_P(FastEqualsCells, SameCyclesAndBits) {
  const Case& k = GetParam();
  SystolicConfig c = small(k.rows, k.cols, k.df, k.in);
  c.dram_bytes_per_cycle = k.bw;
  // Small buffers, so that tiles are evicted and reloaded (SRAM capacity).
  c.input_buffer = 4 * int64_t(k.rows) * k.rows * c.input_bytes();
  c.weight_buffer = 2 * int64_t(k.rows) * k.cols * c.input_bytes();
  c.acc_buffer = 3 * int64_t(k.cols) * 16 * 4;
  Program p = emit_gemm({{0, 1, 2, k.m, k.k, k.n}}, c, {}, 2);
  std::vector<Matrix> fast = operands(c, k.m, k.k, k.n, 5), cells = fast;
  Timeline t = time_program(p, c);
  execute(p, c, fast);
  CellRun r = run_cell_model(p, c, cells);
  ASSERT_EQ(t.instrs.size(), r.instrs.size());
  for (size_t j = 0; j < t.instrs.size(); ++j) {
    EXPECT_EQ(t.instrs[j].start, r.instrs[j].start) << j << " " << print(p.instrs[j]);
    EXPECT_EQ(t.instrs[j].done, r.instrs[j].done) << j << " " << print(p.instrs[j]);
  }
  EXPECT_EQ(t.stats.total_cycles, r.total_cycles);
  if (c.input == InputType::Int8) {
    EXPECT_EQ(fast[2].i, int_gemm(fast));
    EXPECT_EQ(cells[2].i, int_gemm(fast));
  } else {
    EXPECT_EQ(fast[2].f, cells[2].f);  // bit-exact: the same sums in the same order
  }
}

INSTANTIATE_TEST_SUITE_P(
    Gemms, FastEqualsCells,
    ::testing::Values(Case{4, 4, Dataflow::WeightStationary, InputType::Int8, 5, 7, 6, 8},
                      Case{4, 4, Dataflow::WeightStationary, InputType::Bf16, 9, 12, 8, 3},
                      Case{8, 4, Dataflow::WeightStationary, InputType::Int8, 40, 17, 9, 64},
                      Case{3, 5, Dataflow::WeightStationary, InputType::Bf16, 1, 10, 11, 2.5},
                      Case{4, 4, Dataflow::OutputStationary, InputType::Int8, 5, 7, 6, 8},
                      Case{4, 4, Dataflow::OutputStationary, InputType::Bf16, 9, 12, 8, 3},
                      Case{8, 4, Dataflow::OutputStationary, InputType::Int8, 17, 40, 9, 64},
                      Case{3, 5, Dataflow::OutputStationary, InputType::Bf16, 1, 10, 11, 2.5},
                      // Tiles wide enough for the fast model's vector blocks
                      // (16 columns, 4 rows), with rows and columns left over.
                      Case{16, 24, Dataflow::WeightStationary, InputType::Bf16, 23, 37, 45, 64},
                      Case{16, 24, Dataflow::WeightStationary, InputType::Int8, 23, 37, 45, 64},
                      Case{16, 24, Dataflow::OutputStationary, InputType::Bf16, 23, 37, 45, 64},
                      Case{16, 24, Dataflow::OutputStationary, InputType::Int8, 23, 37, 45, 64}));

TEST(SystolicResults, Int8GemmIsExactAtTheLimits) {
  SystolicConfig c = small(8, 8, Dataflow::WeightStationary, InputType::Int8);
  std::vector<Matrix> d = operands(c, 20, 300, 13, 9);
  for (auto& x : d[0].i) x = -128;
  Program p = emit_gemm({{0, 1, 2, 20, 300, 13}}, c);
  execute(p, c, d);
  EXPECT_EQ(d[2].i, int_gemm(d));
}

}  // namespace
}  // namespace kiln::systolic
