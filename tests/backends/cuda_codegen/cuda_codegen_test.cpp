// The CUDA emitter and NVRTC without a GPU: every kernel that lowering makes
// from a broad set of graphs compiles to PTX for sm_90 (ptxas checks a few
// more), the emitted C has the agreed shape, and kernels that are not
// scheduled for the GPU are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <functional>
#include <limits>

#include "backends/cuda/cuda_device.h"
#include "backends/cuda/nvrtc.h"
#include "codegen/emit/cuda/emit_cuda.h"
#include "codegen/emit/gpu_nest.h"
#include "frontend/models/llm.h"
#include "frontend/workloads.h"
#include "tests/backends/gpu_testing.h"

namespace kiln {
namespace {

using testing::scheduled;

BufferDecl global(std::string name, DType t, bool output = false) {
  return {std::move(name), t, MemScope::Global, 0, output};
}

// y[i] = f(x[i]) for i in 0..n, with the default GPU schedule.
Kernel map_kernel(DType in, DType out, const std::function<Expr(Expr)>& f, const std::string& name = "map") {
  Kernel k;
  k.name = name;
  k.params = {"n"};
  k.buffers = {global("x", in), global("y", out, true)};
  Stmt s = store(1, var("i"), f(load(0, valtype_of(in), var("i"))));
  k.body = block({for_loop("i", var("n"), LoopKind::Parallel, {s})});
  return scheduled(k);
}

Kernel copy_kernel(std::vector<Stmt> body, std::vector<std::string> params = {}) {
  Kernel k;
  k.name = "copy";
  k.params = std::move(params);
  k.buffers = {global("x", f32), global("y", f32, true)};
  k.body = block(std::move(body));
  return k;
}

Stmt copy_at(const Expr& i) { return store(1, i, load(0, ValType::f32, i)); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void expect_not_scheduled(const Kernel& k, const std::string& detail) {
  for (auto attempt : {+[](const Kernel& x) { emit_cuda(x, "f"); }, +[](const Kernel& x) { gpu_grid(x); },
                       +[](const Kernel& x) { compile_cuda_to_ptx(x, "sm_90"); }}) {
    try {
      attempt(k);
      ADD_FAILURE() << "accepted: " << print(k);
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "not scheduled for the GPU")) << e.what();
      EXPECT_TRUE(contains(e.what(), detail)) << e.what();
    }
  }
}

TEST(CudaCodegen, EveryLoweredKernelCompilesToPtx) {
  int kernels = 0;
  double seconds = 0;
  for (const testing::GraphCase& c : testing::op_cases()) {
    SCOPED_TRACE(c.name);
    for (const Kernel& lowered : lower(c.graph).kernels) {
      Kernel k = scheduled(lowered);
      auto t0 = std::chrono::steady_clock::now();
      std::string ptx;
      try {
        ptx = compile_cuda_to_ptx(k, "sm_90");
      } catch (const Error& e) {
        ADD_FAILURE() << e.what();
        continue;
      }
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++kernels;
      EXPECT_TRUE(contains(ptx, ".target sm_90")) << ptx;
      EXPECT_TRUE(contains(ptx, ".entry " + cuda_entry_name(k))) << ptx;
    }
  }
  EXPECT_GT(kernels, 250);
  std::printf("NVRTC: %d kernels to PTX and cubin for sm_90, %.1f ms each on average\n", kernels,
              1000 * seconds / kernels);
}

constexpr const char* kPtxas = "/usr/local/cuda/bin/ptxas";

// ptxas, the assembler the driver's JIT is built on, run on `ptx` for sm_90
// (in a folder of this process's, removed after): its exit status.
int ptxas_status(const std::string& ptx, const std::string& name, const std::string& arch = "sm_90") {
  auto dir = std::filesystem::temp_directory_path() / ("kiln_ptxas_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto file = dir / (name + ".ptx");
  std::ofstream(file) << ptx;
  std::string command = std::string(kPtxas) + " -arch=" + arch + " " + file.string() + " -o " + file.string() + ".cubin";
  int status = std::system(command.c_str());
  std::filesystem::remove_all(dir);
  return status;
}

// ptxas accepts the PTX.
TEST(CudaCodegen, PtxasAcceptsThePtx) {
  if (!std::filesystem::exists(kPtxas)) GTEST_SKIP() << "no " << kPtxas;
  std::vector<Kernel> kernels = {
      map_kernel(f16, bf16, [](Expr x) { return unary(UnOp::Exp2, x); }),
      map_kernel(i8, u8, [](Expr x) { return binary(BinOp::Div, x, const_int(ValType::i32, 3)); }),
      map_kernel(f32, i32, [](Expr x) { return cast(ValType::i32, x); }),
  };
  for (const char* spec : {"contract f16", "reduce_max i8 axes #3", "gather bf16 axis 1", "cast f32 -> u8"})
    for (const testing::GraphCase& c : testing::op_cases())
      if (c.name == spec)
        for (const Kernel& k : lower(c.graph).kernels) kernels.push_back(scheduled(k));
  ASSERT_EQ(kernels.size(), 7u);
  for (const Kernel& k : kernels)
    EXPECT_EQ(ptxas_status(compile_cuda_to_ptx(k, "sm_90"), cuda_entry_name(k)), 0) << emit_cuda(k, cuda_entry_name(k));
}

// Default NVRTC options: IEEE division and square root, denormals kept.
TEST(CudaCodegen, FloatArithmeticIsIeeeExact) {
  const std::pair<UnOp, const char*> cases[] = {
      {UnOp::Recip, "rcp.rn.f32"}, {UnOp::Sqrt, "sqrt.rn.f32"}};
  for (auto [op, instruction] : cases) {
    std::string ptx = compile_cuda_to_ptx(map_kernel(f32, f32, [op = op](Expr x) { return unary(op, x); }), "sm_90");
    EXPECT_TRUE(contains(ptx, instruction)) << ptx;
    EXPECT_FALSE(contains(ptx, ".ftz")) << ptx;
  }
  Kernel div = map_kernel(f32, f32, [](Expr x) { return binary(BinOp::Div, x, load(0, ValType::f32, idx(0))); });
  EXPECT_TRUE(contains(compile_cuda_to_ptx(div, "sm_90"), "div.rn.f32"));
}

TEST(CudaCodegen, SignatureTakesGlobalBuffersThenParams) {
  Kernel k = map_kernel(f32, f16, [](Expr x) { return x; }, "k0_cast");
  k.buffers.push_back({"acc", f32, MemScope::Local, 4, false});
  std::string c = emit_cuda(k, cuda_entry_name(k));
  EXPECT_TRUE(contains(c, "extern \"C\" __global__ void k0_cast(const float* buf0, "
                          "unsigned short* __restrict__ buf1, long long param0) {"))
      << c;
  EXPECT_TRUE(contains(c, "  float buf2[4];  // acc")) << c;
  EXPECT_TRUE(contains(c, "//   param0 = n")) << c;
  EXPECT_TRUE(contains(c, "kiln_f32_to_f16")) << c;
  EXPECT_FALSE(contains(c, "kiln_bf16")) << "helpers only when used:\n" << c;
  EXPECT_FALSE(contains(c, "#include")) << c;
}

TEST(CudaCodegen, BoundLoopsMapToXThenYThenZ) {
  // blocks c, b, a (outermost first) and threads f, e, d.
  auto loop = [](const char* v, Expr n, LoopKind kind, Stmt body) { return for_loop(v, n, kind, {body}); };
  Expr i = ((((var("c") * idx(3) + var("b")) * idx(4) + var("a")) * idx(5) + var("f")) * idx(6) + var("e")) * idx(7) +
           var("d");
  Stmt s = copy_at(i);
  s = loop("d", idx(7), LoopKind::GpuThread, s);
  s = loop("e", idx(6), LoopKind::GpuThread, s);
  s = loop("f", idx(5), LoopKind::GpuThread, s);
  s = loop("a", idx(4), LoopKind::GpuBlock, s);
  s = loop("b", idx(3), LoopKind::GpuBlock, s);
  s = loop("c", var("n"), LoopKind::GpuBlock, s);
  Kernel k = copy_kernel({s}, {"n"});
  std::string c = emit_cuda(k, "copy");
  for (const char* line : {"const long long c = blockIdx.z;", "const long long b = blockIdx.y;",
                           "const long long a = blockIdx.x;", "const long long f = threadIdx.z;",
                           "const long long e = threadIdx.y;", "const long long d = threadIdx.x;"})
    EXPECT_TRUE(contains(c, line)) << line << "\n" << c;
  GpuGrid grid = gpu_grid(k);
  EXPECT_EQ(evaluate_index(grid.blocks[0], {}), 4);
  EXPECT_EQ(evaluate_index(grid.blocks[1], {}), 3);
  EXPECT_EQ(evaluate_index(grid.blocks[2], {{"n", 9}}), 9);
  EXPECT_EQ(evaluate_index(grid.threads[0], {}), 7);
  EXPECT_EQ(evaluate_index(grid.threads[2], {}), 5);
  EXPECT_NO_THROW(compile_cuda_to_ptx(k, "sm_90"));
}

TEST(CudaCodegen, KernelWithoutBoundLoopsIsOneThread) {
  Kernel k = copy_kernel({copy_at(idx(0)), for_loop("j", idx(4), LoopKind::Unrolled, {copy_at(var("j"))})});
  GpuGrid grid = gpu_grid(k);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(evaluate_index(grid.blocks[i], {}), 1);
    EXPECT_EQ(evaluate_index(grid.threads[i], {}), 1);
  }
  std::string c = emit_cuda(k, "copy");
  EXPECT_FALSE(contains(c, "Idx")) << c;
  EXPECT_TRUE(contains(c, "#pragma unroll\n  for (long long j = 0; j < 4LL; ++j) {")) << c;
  EXPECT_NO_THROW(compile_cuda_to_ptx(k, "sm_90"));
}

TEST(CudaCodegen, SharedBuffersAndPerThreadLoops) {
  Kernel k = copy_kernel({for_loop(
      "b", var("n"), LoopKind::GpuBlock,
      {for_loop("t", idx(32), LoopKind::GpuThread,
                {store(2, var("t"), load(0, ValType::f32, var("b") * idx(32) + var("t"))),
                 for_loop("v", idx(1), LoopKind::Vectorized,
                          {store(1, var("b") * idx(32) + var("t"), load(2, ValType::f32, var("t")))})})})},
                         {"n"});
  k.buffers.push_back({"tile", f32, MemScope::Shared, 32, false});
  std::string c = emit_cuda(k, "copy");
  EXPECT_TRUE(contains(c, "__shared__ float buf2[32];  // tile")) << c;
  EXPECT_NO_THROW(compile_cuda_to_ptx(k, "sm_90"));
}

TEST(CudaCodegen, RefusesKernelsNotScheduledForTheGpu) {
  Stmt copy_i = copy_at(var("i"));
  expect_not_scheduled(copy_kernel({for_loop("i", idx(8), LoopKind::Parallel, {copy_i})}), "parallel loop 'i'");
  expect_not_scheduled(
      copy_kernel({for_loop("i", idx(8), LoopKind::GpuThread,
                            {for_loop("j", idx(2), LoopKind::GpuBlock, {copy_at(var("i") + var("j"))})})}),
      "gpu_block loop 'j' is inside a gpu_thread loop");
  Stmt four = copy_i;
  for (const char* v : {"i", "j", "k", "l"}) four = for_loop(v, idx(2), LoopKind::GpuBlock, {four});
  expect_not_scheduled(copy_kernel({four}), "more than three gpu_block loops");
  expect_not_scheduled(
      copy_kernel({for_loop("i", idx(8), LoopKind::GpuBlock,
                            {for_loop("s", idx(2), LoopKind::Serial,
                                      {for_loop("j", idx(2), LoopKind::GpuThread, {copy_i})})})}),
      "gpu_thread loop 'j' is not in the nest");
  expect_not_scheduled(copy_kernel({for_loop("i", idx(8), LoopKind::GpuBlock, {copy_i}), copy_at(idx(0))}),
                       "gpu_block loop 'i' is not in the nest");
  expect_not_scheduled(
      copy_kernel({for_loop("i", idx(8), LoopKind::GpuBlock,
                            {for_loop("j", var("i"), LoopKind::GpuThread, {copy_at(var("j"))})})}),
      "integer arithmetic on the kernel's params");
  expect_not_scheduled(
      copy_kernel({for_loop("i", cast(ValType::i64, load(0, ValType::f32, idx(0))), LoopKind::GpuBlock, {copy_i})}),
      "integer arithmetic on the kernel's params");
}

TEST(CudaCodegen, AllReduceIsAWarpTreeThenSharedPartials) {
  Kernel k = testing::allreduce_kernel();
  std::string src = emit_cuda(k, "f");
  EXPECT_TRUE(contains(src, "__shared__ float kiln_red_f32[8];")) << src;
  EXPECT_TRUE(contains(src, "__shared__ int kiln_red_i32[8];")) << src;
  EXPECT_TRUE(contains(src, "fmaxf(kiln_r, __shfl_xor_sync(0xffffffffu, kiln_r, kiln_o))")) << src;
  EXPECT_TRUE(contains(src, "kiln_w < 8;")) << src;
  EXPECT_TRUE(contains(compile_cuda_to_ptx(k, "sm_90"), "bar.sync")) << "the partials need a barrier";
  // Threads of a partial warp, or an allreduce not every thread reaches, are refused.
  std::string text = print(k);
  std::string partial = text, nested = text;
  partial.replace(partial.find("in 256"), 6, "in 48");
  EXPECT_THROW(emit_cuda(parse_kernel(partial), "f"), Error);
  nested.replace(nested.find("      allreduce hi[0] max over t\n"), 33, "      if cmplt(t, 3) {\n        allreduce hi[0] max over t\n      }\n");
  expect_not_scheduled(parse_kernel(nested), "inside a loop or condition");
}

// A row of one warp needs only its shuffles; rows along y each combine their
// own warps; an allreduce along y combines each column in shared memory.
TEST(CudaCodegen, AllReduceOverRowsAndColumns) {
  std::string text = print(testing::allreduce_kernel());
  std::string warp = text, rows = text, cols = text;
  warp.replace(warp.find("in 256"), 6, "in 32");
  std::string src = emit_cuda(parse_kernel(warp), "f");
  EXPECT_FALSE(contains(src, "__shared__")) << src;
  EXPECT_FALSE(contains(src, "__syncthreads")) << src;
  rows.replace(rows.find("    gpu_thread for t in 256 {\n"), 29, "    gpu_thread for y in 4 {\n    gpu_thread for t in 64 {\n");
  rows.replace(rows.rfind("  }\n}"), 5, "  }\n  }\n}");
  src = emit_cuda(parse_kernel(rows), "f");
  EXPECT_TRUE(contains(src, "__shared__ float kiln_red_f32[8];")) << src;
  EXPECT_TRUE(contains(src, "kiln_red_f32[kiln_row + (threadIdx.x >> 5)]")) << src;
  cols.replace(cols.find("    gpu_thread for t in 256 {\n"), 29, "    gpu_thread for t in 8 {\n    gpu_thread for c in 32 {\n");
  cols.replace(cols.rfind("  }\n}"), 5, "  }\n  }\n}");
  src = emit_cuda(parse_kernel(cols), "f");
  EXPECT_TRUE(contains(src, "__shared__ float kiln_red_f32[256];")) << src;
  EXPECT_TRUE(contains(src, "over t (axis y)")) << src;
  EXPECT_TRUE(contains(src, "for (int kiln_h = 4; kiln_h > 0; kiln_h >>= 1)")) << src;
  EXPECT_TRUE(contains(src, "kiln_red_f32[kiln_l + kiln_h * 32]")) << src;
  EXPECT_FALSE(contains(src, "__shfl_xor_sync")) << src;  // a warp holds 32 columns, one thread each
  EXPECT_TRUE(contains(compile_cuda_to_ptx(parse_kernel(cols), "sm_90"), "bar.sync"));
  // 16 columns by 64 parts (a decode step's P x V): a warp's two parts of a
  // column combine by a shuffle, then the column's 32 warps by halves; 6
  // parts of 32 columns (not a power of two): every thread reads all 6.
  std::string pv = text, six = cols;
  pv.replace(pv.find("    gpu_thread for t in 256 {\n"), 29, "    gpu_thread for t in 64 {\n    gpu_thread for c in 16 {\n");
  pv.replace(pv.rfind("  }\n}"), 5, "  }\n  }\n}");
  src = emit_cuda(parse_kernel(pv), "f");
  EXPECT_TRUE(contains(src, "for (int kiln_o = 16; kiln_o >= 16; kiln_o >>= 1)")) << src;
  EXPECT_TRUE(contains(src, "for (int kiln_h = 16; kiln_h > 0; kiln_h >>= 1)")) << src;
  EXPECT_TRUE(contains(src, "kiln_red_f32[kiln_l + kiln_h * 32]")) << src;
  EXPECT_TRUE(contains(compile_cuda_to_ptx(parse_kernel(pv), "sm_90"), "shfl.sync.bfly"));
  six.replace(six.find("for t in 8"), 10, "for t in 6");
  src = emit_cuda(parse_kernel(six), "f");
  EXPECT_TRUE(contains(src, "kiln_red_f32[kiln_c + kiln_j * 32]")) << src;
  EXPECT_TRUE(contains(src, "kiln_j < 6;")) << src;
  // Rows of 8 lanes (an attention head's 64-long dot product in 16-byte
  // pieces), 32 a block: 3 shuffles within each aligned group of 8, no shared
  // memory; groups that do not fill whole warps are refused.
  std::string lanes = text, ragged;
  lanes.replace(lanes.find("    gpu_thread for t in 256 {\n"), 29, "    gpu_thread for y in 32 {\n    gpu_thread for t in 8 {\n");
  lanes.replace(lanes.rfind("  }\n}"), 5, "  }\n  }\n}");
  ragged = lanes;
  ragged.replace(ragged.find("for y in 32"), 11, "for y in 3");
  src = emit_cuda(parse_kernel(lanes), "f");
  EXPECT_TRUE(contains(src, "for (int kiln_o = 4; kiln_o > 0; kiln_o >>= 1)")) << src;
  EXPECT_FALSE(contains(src, "__shared__")) << src;
  EXPECT_TRUE(contains(compile_cuda_to_ptx(parse_kernel(lanes), "sm_90"), "shfl.sync.bfly"));
  EXPECT_THROW(emit_cuda(parse_kernel(ragged), "f"), Error);
}

// A GEMV's rows are read a warp a row, 16 bytes a thread a step, by vector
// loads; a row whose base is not a multiple of the piece keeps scalar loads.
TEST(CudaCodegen, LongRowsAreReadInSixteenBytePieces) {
  for (DType t : {f32, f16}) {
    Graph g;
    g.outputs = {g.contract(g.input("w", t, {64, 1024}), g.input("x", t, {1024, 1}))};
    Kernel k = scheduled(lower(g).kernels[0]);
    std::string src = emit_cuda(k, "f"), ptx = compile_cuda_to_ptx(k, "sm_90");
    EXPECT_TRUE(contains(src, "uint4 kiln_vec0[1];")) << src;
    EXPECT_TRUE(contains(ptx, "ld.global.v4.")) << ptx;
  }
  // Short rows over a cache of symbolic length (an attention head's 64-long
  // dot products): 8 lanes a row, a 16-byte piece each, 3 shuffles; the
  // symbolic loop outermost, so no index divides by the cache's length.
  {
    Graph g;
    g.outputs = {g.reduce(Op::ReduceSum, g.input("s", f16, {Dim(32), Dim::symbol("past", 1, 4096), Dim(64)}), {2})};
    Kernel k = scheduled(lower(g).kernels[0]);
    std::string src = emit_cuda(k, "f");
    EXPECT_TRUE(contains(src, "uint4 kiln_vec0[1];")) << src;
    EXPECT_TRUE(contains(src, "for (int kiln_o = 4; kiln_o > 0; kiln_o >>= 1)")) << src;
    EXPECT_FALSE(contains(src, "kiln_div(")) << src;
    EXPECT_TRUE(contains(compile_cuda_to_ptx(k, "sm_90"), "shfl.sync.bfly")) << src;
  }
  // A 4-bit weight's GEMV (two elements a byte, groups of 32): a lane takes
  // 32 elements a step, its 16 packed bytes in one 16-byte load, element v
  // reading byte v % 16.
  {
    Program p = lower(make_workload("llm-decode:stories15m:40:q4", f16).graph);
    int packed = 0;
    for (const Kernel& raw : p.kernels) {
      Kernel k = scheduled(raw);
      std::string src = emit_cuda(k, "f");
      if (!contains(src, "reinterpret_cast<const unsigned char*>(kiln_vec")) continue;
      EXPECT_TRUE(contains(src, "16 elements of")) << src;
      // Each weight dequantized in half arithmetic, with no conversion
      // instruction (int -> float, f32 -> f16) in the loop: a group's 32
      // two at a time before the loop (f16x2), its nibbles taken by masks.
      EXPECT_TRUE(contains(src, "kiln_dequant_f16x2(kiln_b >> 12, kiln_zz, kiln_ss);")) << src;
      if (packed++ == 0) {
        std::string ptx = compile_cuda_to_ptx(k, "sm_90");
        EXPECT_TRUE(contains(ptx, "ld.global.v4.") || contains(ptx, "ld.global.nc.v4.")) << src;
        EXPECT_TRUE(contains(ptx, "mul.rn.f16x2")) << src;
        EXPECT_FALSE(contains(ptx, "cvt.rn.f32.s32") || contains(ptx, "cvt.rn.f32.u32")) << src;
      }
    }
    EXPECT_GT(packed, 0);
  }
  // The pairs are taken only where the IR's nibbles are Q4_0's (checked by
  // evaluating q for every element and byte): the same group with the high
  // nibble first keeps one dequantization an element.
  {
    std::string text = R"(kernel q4() {
  buffer y: f32 global out
  buffer s: f16 global immutable
  buffer w: u8 global immutable
  buffer x: f32 global
  buffer acc: f32 local[1]
  gpu_block for b in 4 {
    block {
      acc[0] = 0f
      unrolled for v in 32 {
        acc[0] = add(acc[0], mul(x[v], round<f16>(mul(sub(cast<f32>(select(cmplt(v, 16), NIBBLES)), 8f), s[b]))))
      }
      y[b] = acc[0]
    }
  }
}
)";
    const std::string byte = "w[b * 16 + v % 16]", hi = "round<u8>(div(" + byte + ", 16i32))",
                      lo = "round<u8>(sub(" + byte + ", round<u8>(mul(" + hi + ", 16i32))))";
    for (bool q4_0 : {true, false}) {
      std::string t = text;
      t.replace(t.find("NIBBLES"), 7, q4_0 ? lo + ", " + hi : hi + ", " + lo);
      std::string src = emit_cuda(parse_kernel(t), "f");
      EXPECT_EQ(contains(src, "kiln_dequant_f16x2(kiln_b"), q4_0) << src;
      EXPECT_EQ(contains(src, "kiln_dequant_f16(kiln_sel"), !q4_0) << src;
    }
  }
  // A product of two f16 values rounded to f16 (a folded norm's g * x) is
  // f16's own multiplication; with an f32 operand it is not.
  for (const char* xt : {"f16", "f32"}) {
    std::string src = emit_cuda(parse_kernel(std::string(R"(kernel gx() {
  buffer y: f16 global out
  buffer g: f16 global
  buffer x: )") + xt + R"( global
  gpu_block for i in 4 {
    y[i] = round<f16>(mul(g[i], x[i]))
  }
}
)"), "f");
    EXPECT_EQ(contains(src, "kiln_hmul(buf1[i], buf2[i])"), xt == std::string("f16")) << src;
  }
  // An int8 weight's GEMV: its bytes become floats by adding to the bits of
  // 1.5 * 2^23, not by a conversion instruction.
  {
    Program p = lower(make_workload("llm-decode:stories15m:40:q8", f16).graph);
    int int8 = 0;
    for (const Kernel& raw : p.kernels) {
      Kernel k = scheduled(raw);
      std::string src = emit_cuda(k, "f");
      if (!contains(src, "const signed char*")) continue;
      EXPECT_TRUE(contains(src, "kiln_small_i2f(")) << src;
      if (int8++ == 0) {
        EXPECT_FALSE(contains(compile_cuda_to_ptx(k, "sm_90"), "cvt.rn.f32.s32")) << src;
      }
    }
    EXPECT_GT(int8, 0);
  }
  Kernel odd = parse_kernel(R"(kernel odd() {
  buffer y: f32 global out
  buffer x: f32 global
  gpu_block for b in 4 {
    unrolled for v in 4 {
      y[b * 4 + v] = x[b * 4 + 1 + v]
    }
  }
}
)");
  EXPECT_FALSE(contains(emit_cuda(odd, "f"), "kiln_vec")) << emit_cuda(odd, "f");
  std::string aligned = print(odd);
  aligned.replace(aligned.find("b * 4 + 1 + v"), 13, "b * 4 + v");
  EXPECT_TRUE(contains(emit_cuda(parse_kernel(aligned), "f"), "uint4 kiln_vec0[1];")) << emit_cuda(parse_kernel(aligned), "f");
}

// A select whose operands load reads both before choosing (no branch that
// makes a load wait for the condition's); one without loads stays a ternary.
TEST(CudaCodegen, SelectsOfLoadsReadBothOperands) {
  Kernel k = parse_kernel(R"(kernel sel() {
  buffer y: f32 global out
  buffer c: bool global
  buffer a: f32 global
  buffer b: f32 global
  gpu_block for i in 4 {
    y[i] = add(select(c[i], a[i], b[i]), select(cmplt(i, 2), 1f, 2f))
  }
}
)");
  std::string src = emit_cuda(k, "f");
  EXPECT_TRUE(contains(src, "kiln_sel<float>(buf1[i] != 0, buf2[i], buf3[i])")) << src;
  EXPECT_TRUE(contains(src, "? 1.0f : 2.0f")) << src;
  EXPECT_FALSE(contains(compile_cuda_to_ptx(k, "sm_90"), "bra")) << src;
}

// A serial loop of symbolic length with no loop inside (a thread's share of
// a pass over a decode step's cache) is unrolled 4 iterations a step; a
// constant one and one with a loop inside are left alone.
TEST(CudaCodegen, SymbolicLeafLoopsGoFourIterationsAStep) {
  Kernel k = parse_kernel(R"(kernel passes(n) {
  buffer y: f32 global out
  buffer x: f32 global
  buffer acc: f32 local[1]
  gpu_block for b in 4 {
    acc[0] = 0f
    serial for i in n {
      acc[0] = add(acc[0], x[b * n + i])
    }
    serial for j in 8 {
      acc[0] = add(acc[0], x[j])
    }
    serial for o in n {
      serial for p in 2 {
        acc[0] = add(acc[0], x[o])
      }
    }
    y[b] = acc[0]
  }
}
)");
  std::string src = emit_cuda(k, "f");
  size_t first = src.find("#pragma unroll 4");
  ASSERT_NE(first, std::string::npos) << src;
  EXPECT_EQ(src.find("#pragma unroll 4", first + 1), std::string::npos) << src;
  EXPECT_LT(first, src.find("for (long long i")) << src;
  EXPECT_GT(first, src.find("for (long long i") - 40) << src;
  EXPECT_FALSE(compile_cuda_to_ptx(k, "sm_90").empty());
}

// f16 and bf16 contractions of tensor-core sizes run on them: cp.async copies
// into shared memory, ldmatrix (transposed where the tile's rows are not the
// reduction) and mma.sync, 256 threads a block; ptxas takes the PTX.
// The dtype of a kernel's (first) output.
DType output_dtype(const Kernel& k) {
  for (const BufferDecl& b : k.buffers)
    if (b.output) return b.dtype;
  return f32;
}

TEST(CudaCodegen, TensorCoreTiles) {
  int tiles = 0;
  for (const testing::GraphCase& c : testing::op_cases()) {
    if (c.name.rfind("tensor-core", 0) != 0) continue;
    SCOPED_TRACE(c.name);
    Kernel lowered = lower(c.graph).kernels[0];
    Knobs mma_sync({{"wgmma", 0}});  // sm_90 would take wgmma for some (WarpgroupTiles)
    Kernel k = apply(lowered, schedule_with(lowered, h100_description(), mma_sync));
    ASSERT_TRUE(k.array_tile.any());
    std::string src = emit_cuda(k, "f"), ptx = compile_cuda_to_ptx(k, "sm_90");
    bool bf = contains(c.name, "bf16");
    EXPECT_TRUE(contains(ptx, bf ? "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" : "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")) << src;
    // An int8 operand is converted element by element; 16-bit ones come by cp.async.
    EXPECT_TRUE(contains(ptx, "cp.async.cg.shared.global")) << src;
    EXPECT_EQ(contains(src, ")[(kiln_e / "), contains(c.name, "int8") || contains(c.name, "dequantized"))
        << src;
    EXPECT_TRUE(contains(ptx, "ldmatrix.sync.aligned.m8n8.x4")) << src;
    // Transposed loads for a B with contiguous columns and for an A with contiguous rows.
    EXPECT_EQ(contains(src, "kiln_ldmatrix_x4_trans_pair(kiln_b"), !contains(c.name, "weight rows")) << src;
    EXPECT_EQ(contains(src, "kiln_ldmatrix_x4_trans(kiln_a"), contains(c.name, "A columns")) << src;
    // A 16-bit output's columns j, j + 1 are stored as one word (converted together where f16).
    const DType out = output_dtype(k);
    EXPECT_EQ(contains(src, "*reinterpret_cast<unsigned*>(buf"), out == f16 || out == bf16) << src;
    EXPECT_EQ(contains(ptx, "cvt.rn.f16x2.f32"), out == f16) << src;
    GpuGrid grid = cuda_grid(k);
    EXPECT_EQ(evaluate_index(grid.threads[0], {}) * evaluate_index(grid.threads[1], {}), 256);
    if (std::filesystem::exists(kPtxas)) {
      EXPECT_EQ(ptxas_status(ptx, "tile" + std::to_string(tiles)), 0) << src;
    }
    ++tiles;
  }
  EXPECT_EQ(tiles, 10);
  // A tile the operands cannot take is refused with the reason, not miscompiled.
  Graph g;
  g.outputs = {g.contract(g.input("a", f16, {64, 64}), g.input("b", f16, {64, 128}))};
  Schedule s = default_schedule(lower(g).kernels[0], h100_description());
  s.steps.back().sizes[1] = 24;  // a reduction step mma.sync cannot take
  try {
    emit_cuda(apply(lower(g).kernels[0], s), "f");
    ADD_FAILURE() << "a reduction step of 24 was emitted";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "depth of 16")) << e.what();
  }
}

// f16/bf16 contractions of warpgroup sizes take wgmma on sm_90 (compiled
// for sm_90a): operands from 128-byte swizzled shared memory by descriptor,
// transposed where a side is contiguous; 16-byte cp.async copies except for
// widened int8 weights; fences between the copies and the tensor cores;
// ptxas takes the PTX. The same tiles are refused for other architectures.
TEST(CudaCodegen, WarpgroupTiles) {
  int tiles = 0;
  for (const testing::GraphCase& c : testing::op_cases()) {
    if (c.name.rfind("wgmma", 0) != 0) continue;
    SCOPED_TRACE(c.name);
    Kernel lowered = lower(c.graph).kernels[0];
    // int8 weights take wgmma only when asked (by default mma.sync, whose element copies were faster).
    EXPECT_EQ(scheduled(lowered).array_tile.warpgroup, !contains(c.name, "int8"));
    Knobs on({{"wgmma", 1}, {"tma", 0}});  // the cp.async copies (tensor maps: below)
    Kernel k = apply(lowered, schedule_with(lowered, h100_description(), on));
    ASSERT_TRUE(k.array_tile.warpgroup);
    std::string src = emit_cuda(k, "f"), ptx = compile_cuda_to_ptx(k, "sm_90");
    EXPECT_TRUE(contains(ptx, ".target sm_90a")) << ptx.substr(0, 400);
    const bool bf = contains(c.name, "bf16"), wide = contains(c.name, "weight rows");
    const std::string n = std::to_string(k.array_tile.n);
    EXPECT_TRUE(contains(ptx, "wgmma.mma_async.sync.aligned.m64n" + n + "k16.f32." + (bf ? "bf16.bf16" : "f16.f16")))
        << src;
    EXPECT_FALSE(contains(ptx, "mma.sync")) << src;
    for (const char* s : {"wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned",
                          "fence.proxy.async.shared::cta"})
      EXPECT_TRUE(contains(ptx, s)) << s;
    // Transposed (MN-major) B where its columns are contiguous, A where its rows are.
    EXPECT_TRUE(contains(src, std::string(", p, 1, 1, ") + (contains(c.name, "A columns") ? "1" : "0") + ", " +
                                  (wide ? "0" : "1") + ";"))
        << src;
    EXPECT_EQ(contains(ptx, "cp.async.cg.shared.global"), true) << src;
    EXPECT_EQ(contains(src, "*reinterpret_cast<unsigned short*>(kiln_sb"), contains(c.name, "int8")) << src;
    const DType out = output_dtype(k);
    EXPECT_EQ(contains(src, "*reinterpret_cast<unsigned*>(buf"), out == f16 || out == bf16) << src;
    EXPECT_EQ(contains(ptx, "cvt.rn.f16x2.f32"), out == f16) << src;
    GpuGrid grid = cuda_grid(k);
    EXPECT_EQ(evaluate_index(grid.threads[0], {}) * evaluate_index(grid.threads[1], {}), 256);
    EXPECT_EQ(grid.dynamic_shared_bytes, k.array_tile.stages * (k.array_tile.m + k.array_tile.n) * 128 + 1024);
    if (std::filesystem::exists(kPtxas)) {
      EXPECT_EQ(ptxas_status(ptx, "wgmma" + std::to_string(tiles), "sm_90a"), 0) << src;
    }
    ++tiles;
    // wgmma is sm_90's alone: other architectures get an error that says so.
    try {
      compile_cuda_to_ptx(k, "sm_80");
      ADD_FAILURE() << "a wgmma tile compiled for sm_80";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "needs an sm_90 GPU")) << e.what();
    }
  }
  EXPECT_EQ(tiles, 8);
  // Steps 128 deep (two 64-deep regions a stage for K-major operands).
  for (const testing::GraphCase& c : testing::op_cases()) {
    if (c.name.rfind("wgmma", 0) != 0 || (contains(c.name, ",") && !contains(c.name, "int8"))) continue;  // reductions of 128
    SCOPED_TRACE(c.name + ", 128 deep");
    Kernel lowered = lower(c.graph).kernels[0];
    Knobs deep({{"mma_bk", 128}, {"mma_stages", 2}, {"wgmma", 1}});
    Kernel k = apply(lowered, schedule_with(lowered, h100_description(), deep));
    ASSERT_TRUE(k.array_tile.warpgroup);
    ASSERT_EQ(k.array_tile.k, 128);
    std::string ptx = compile_cuda_to_ptx(k, "sm_90");
    EXPECT_TRUE(contains(ptx, "wgmma.mma_async")) << emit_cuda(k, "f");
    if (std::filesystem::exists(kPtxas)) {
      EXPECT_EQ(ptxas_status(ptx, "wgmma_deep", "sm_90a"), 0) << emit_cuda(k, "f");
    }
  }
  // Without the knob, the same kernels take mma.sync.
  Graph g;
  g.outputs = {g.contract(g.input("a", f16, {128, 64}), g.input("b", f16, {64, 128}))};
  Kernel lowered = lower(g).kernels[0];
  Knobs off({{"wgmma", 0}});
  Kernel k = apply(lowered, schedule_with(lowered, h100_description(), off));
  EXPECT_FALSE(k.array_tile.warpgroup);
  EXPECT_TRUE(contains(compile_cuda_to_ptx(k, "sm_90"), "mma.sync.aligned.m16n8k16"));
  // A tile wgmma cannot take is refused with the reason.
  Schedule s = default_schedule(lowered, h100_description());
  ASSERT_TRUE(apply(lowered, s).array_tile.warpgroup);
  s.steps.back().sizes[1] = 32;
  try {
    emit_cuda(apply(lowered, s), "f");
    ADD_FAILURE() << "a wgmma step of 32 was emitted";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "depth 64")) << e.what();
  }
}

// The same tiles with `tma`: a producer warpgroup copies each stage by two
// tensor maps (A's and B's 2-D views: row pitch, rows, box) into the same
// swizzled layouts, mbarriers between it and the two multiplying warpgroups,
// 384 threads a block; ptxas takes the PTX. Operands that are not raw 16-bit
// loads (int8 weights) keep the cp.async copies.
TEST(CudaCodegen, WarpgroupTilesFedByTheTensorMemoryAccelerator) {
  int tiles = 0;
  for (const testing::GraphCase& c : testing::op_cases()) {
    if (c.name.rfind("wgmma", 0) != 0) continue;
    for (int64_t bk : {64, 128}) {
      if (bk == 128 && contains(c.name, ",") && !contains(c.name, "int8")) continue;  // reductions of 64
      SCOPED_TRACE(c.name + ", " + std::to_string(bk) + " deep");
      Kernel lowered = lower(c.graph).kernels[0];
      // The default for f16/bf16 operands (int8 weights take mma.sync).
      if (bk == 64) {
        EXPECT_EQ(scheduled(lowered).array_tile.tma, !contains(c.name, "int8"));
      }
      Knobs on({{"wgmma", 1}, {"tma", 1}, {"mma_bk", bk}, {"mma_stages", bk == 128 ? 2 : 4}});
      Kernel k = apply(lowered, schedule_with(lowered, h100_description(), on));
      ASSERT_TRUE(k.array_tile.warpgroup && k.array_tile.tma);
      EXPECT_TRUE(contains(print(k), " wgmma tma\n")) << print(k);
      EXPECT_EQ(parse_kernel(print(k)).array_tile, k.array_tile);  // the kernel's text and the schedule's round-trip
      Schedule s = schedule_with(lowered, h100_description(), on);
      EXPECT_EQ(print(parse_schedule(print(s))), print(s));
      EXPECT_TRUE(contains(print(s), " wgmma tma")) << print(s);
      std::vector<CudaTensorMap> maps = cuda_tensor_maps(k);
      std::string src = emit_cuda(k, "f"), ptx = compile_cuda_to_ptx(k, "sm_90");
      GpuGrid grid = cuda_grid(k);
      if (contains(c.name, "int8")) {  // widened element by element: cp.async as before
        EXPECT_TRUE(maps.empty());
        EXPECT_FALSE(contains(ptx, "cp.async.bulk.tensor")) << src;
        EXPECT_EQ(evaluate_index(grid.threads[0], {}), 256);
        continue;
      }
      ASSERT_EQ(maps.size(), 2u) << src;
      for (const char* s : {"cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
                            "mbarrier.try_wait.parity.shared::cta.b64", "mbarrier.arrive.expect_tx.shared::cta.b64",
                            "setmaxnreg.inc.sync.aligned.u32", "wgmma.wait_group.sync.aligned 0"})
        EXPECT_TRUE(contains(ptx, s)) << s << "\n" << src;
      // Steps before the last keep their multiplies in flight; the last waits
      // for all of them before the accumulators are read.
      EXPECT_EQ(contains(ptx, "wgmma.wait_group.sync.aligned 1"), !contains(src, "kiln_kt < 0;")) << src;
      EXPECT_TRUE(contains(src, "kiln_wgmma_commit();\n      kiln_wgmma_wait<0>();")) << src;
      EXPECT_FALSE(contains(ptx, "cp.async.cg.shared.global")) << src;
      EXPECT_TRUE(contains(src, "const __grid_constant__ kiln_tmap kiln_tma0, const __grid_constant__ kiln_tmap kiln_tma1)"))
          << src;
      EXPECT_EQ(evaluate_index(grid.threads[0], {}), 384);
      EXPECT_EQ(grid.dynamic_shared_bytes, k.array_tile.stages * (k.array_tile.m + k.array_tile.n) * bk * 2 + 1024);
      if (c.name == "wgmma contract f16") {  // a[128, 128] by rows (K-major), b[128, 192] by columns (MN-major)
        const std::vector<int> globals = k.global_buffers();
        EXPECT_EQ(k.buffers[size_t(globals[size_t(maps[0].buffer)])].name, "a");
        EXPECT_EQ(k.buffers[size_t(globals[size_t(maps[1].buffer)])].name, "b");
        EXPECT_EQ(maps[0].inner, 128);
        EXPECT_EQ(maps[0].outer, 128);
        EXPECT_EQ(maps[0].box_outer, k.array_tile.m);
        EXPECT_EQ(maps[1].inner, 192);
        EXPECT_EQ(maps[1].outer, 128);
        EXPECT_EQ(maps[1].box_outer, bk);
      }
      if (std::filesystem::exists(kPtxas)) {
        EXPECT_EQ(ptxas_status(ptx, "tma" + std::to_string(tiles), "sm_90a"), 0) << src;
      }
      ++tiles;
    }
  }
  EXPECT_EQ(tiles, 8);  // 3 layouts x 2 dtypes 64 deep, the 2 plain contractions 128 deep
}

// Elementwise kernels with several points a thread (knob `elems`): the
// thread's points are one unrolled loop whose loads are 16 bytes wide, and
// the blocks that many times fewer.
TEST(CudaCodegen, SeveralPointsAThreadLoadSixteenBytes) {
  Workload w = make_workload("chain:1048576", f32, 1);
  Kernel lowered = lower(w.graph).kernels[0];
  Knobs four({{"elems", 4}});
  Kernel k = apply(lowered, schedule_with(lowered, h100_description(), four));
  std::string src = emit_cuda(k, "f"), ptx = compile_cuda_to_ptx(k, "sm_90");
  EXPECT_TRUE(contains(ptx, "ld.global.v4.")) << src;
  EXPECT_EQ(evaluate_index(cuda_grid(k).blocks[0], {}), 1048576 / 256 / 4) << src;
  // By default, large ones take 8 bytes a thread (two f32 points, read as
  // one 8-byte load), small ones one point a thread.
  Kernel two = scheduled(lowered);
  EXPECT_TRUE(contains(compile_cuda_to_ptx(two, "sm_90"), "ld.global.v2")) << emit_cuda(two, "f");
  EXPECT_EQ(evaluate_index(cuda_grid(two).blocks[0], {}), 1048576 / 256 / 2);
  Kernel one = scheduled(lower(make_workload("chain:65536", f32, 1).graph).kernels[0]);
  EXPECT_FALSE(contains(compile_cuda_to_ptx(one, "sm_90"), "ld.global.v")) << emit_cuda(one, "f");
  EXPECT_EQ(evaluate_index(cuda_grid(one).blocks[0], {}), 65536 / 256);
}

// f32 contractions of tile sizes run on SIMT tiles: the same cp.async
// pipeline (16-byte copies where a tile's side is contiguous, 4-byte ones
// otherwise), each thread's outputs from 16-byte shared-memory reads, fused
// multiply-adds; 256 threads a block; ptxas takes the PTX.
TEST(CudaCodegen, SimtTiles) {
  int tiles = 0;
  for (const testing::GraphCase& c : testing::op_cases()) {
    if (c.name.rfind("f32 tile", 0) != 0) continue;
    SCOPED_TRACE(c.name);
    Kernel k = scheduled(lower(c.graph).kernels[0]);
    ASSERT_TRUE(k.array_tile.any());
    std::string src = emit_cuda(k, "f"), ptx = compile_cuda_to_ptx(k, "sm_90");
    EXPECT_TRUE(contains(src, "// CUDA cores: 64 x 64 outputs a block")) << src;
    EXPECT_FALSE(contains(ptx, "mma.sync")) << src;
    EXPECT_TRUE(contains(ptx, "fma.rn.f32")) << src;
    EXPECT_TRUE(contains(ptx, "ld.shared.v4.f32")) << src;
    // 16-byte copies for every operand with a contiguous side, 4-byte ones for the rest.
    EXPECT_EQ(contains(ptx, "cp.async.cg.shared.global"), !contains(c.name, "weight rows")) << src;
    EXPECT_EQ(contains(ptx, "cp.async.ca.shared.global"), !contains(c.name, "A columns")) << src;
    GpuGrid grid = cuda_grid(k);
    EXPECT_EQ(evaluate_index(grid.threads[0], {}) * evaluate_index(grid.threads[1], {}), 256);
    EXPECT_EQ(grid.dynamic_shared_bytes, 4 * 4 * 2 * 8 * (64 + 4));  // 4 stages of 8 x (64 + 4) floats for A and for B
    if (std::filesystem::exists(kPtxas)) {
      EXPECT_EQ(ptxas_status(ptx, "tile" + std::to_string(tiles)), 0) << src;
    }
    ++tiles;
  }
  EXPECT_EQ(tiles, 3);
  // A tile the SIMT tile cannot take is refused with the reason.
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {128, 64}), g.input("b", f32, {64, 128}))};
  Schedule s = default_schedule(lower(g).kernels[0], h100_description());
  ASSERT_FALSE(s.steps.empty());
  s.steps.back().sizes[1] = 6;  // a reduction step that is not a multiple of 4
  try {
    emit_cuda(apply(lower(g).kernels[0], s), "f");
    ADD_FAILURE() << "a reduction step of 6 was emitted";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "multiple of 4")) << e.what();
  }
}

// Programmatic dependent launch: every kernel waits for the one before it
// before touching memory (sm_90 only, a no-op without the launch attribute);
// all but tensor-core tiles let the next one launch at once.
TEST(CudaCodegen, KernelsWaitForTheirPredecessor) {
  Graph g;
  g.outputs = {g.binary(Op::Add, g.input("a", f32, {1000}), g.input("b", f32, {1000}))};
  std::string plain = emit_cuda(scheduled(lower(g).kernels[0]), "f");
  EXPECT_TRUE(contains(plain, "griddepcontrol.wait")) << plain;
  EXPECT_TRUE(contains(plain, "griddepcontrol.launch_dependents")) << plain;
  EXPECT_LT(plain.find("griddepcontrol.wait"), plain.find("buf0[")) << plain;
  // Inputs are not __restrict__, so that no read-only load (ld.global.nc,
  // which ptxas may issue before the wait) reads a predecessor's output.
  EXPECT_TRUE(contains(plain, "const float* buf1")) << plain;
  EXPECT_TRUE(contains(plain, "float* __restrict__ buf0")) << plain;
  {
    Program deps = lower(make_workload("deps:3").graph);
    std::string ptx = compile_cuda_to_ptx(scheduled(deps.kernels[1]), "sm_90");
    EXPECT_TRUE(contains(ptx, "ld.global.f32")) << ptx;
    EXPECT_FALSE(contains(ptx, "ld.global.nc")) << ptx;
  }
  Graph mm;
  mm.outputs = {mm.contract(mm.input("a", f16, {128, 64}), mm.input("b", f16, {64, 128}))};
  Kernel tile = scheduled(lower(mm).kernels[0]);
  ASSERT_TRUE(tile.array_tile.any());
  std::string src = emit_cuda(tile, "f");
  EXPECT_TRUE(contains(src, "griddepcontrol.wait")) << src;
  EXPECT_FALSE(contains(src, "griddepcontrol.launch_dependents")) << src;
  EXPECT_TRUE(contains(compile_cuda_to_ptx(tile, "sm_90"), "griddepcontrol.wait"));
}

// A GEMV's immutable weight (Node::immutable: no kernel writes it) keeps
// `const __restrict__`; the pieces its unrolled loop reads, up to 256 bytes a
// thread, are loaded into registers before griddepcontrol.wait with plain
// loads (ptxas keeps those there; it moved read-only ones after the wait).
// Its vector x, another kernel's output, is read after the wait.
// KILN_CUDA_PRELOAD=0 reads the weight after the wait too.
TEST(CudaCodegen, ImmutableWeightsAreReadBeforeTheWait) {
  for (int64_t k : {512, 32768}) {
    SCOPED_TRACE(k);
    Graph g;
    int w = g.immutable_input("w", f32, {256, k});
    g.outputs = {g.contract(w, g.input("x", f32, {k, 1}))};
    Kernel kernel = scheduled(lower(g).kernels[0]);
    int wi = -1, xi = -1;
    for (int i : kernel.global_buffers()) {
      if (kernel.buffers[i].name == "w") wi = i;
      if (kernel.buffers[i].name == "x") xi = i;
    }
    ASSERT_GE(wi, 0);
    ASSERT_GE(xi, 0);
    EXPECT_TRUE(kernel.buffers[wi].immutable);
    EXPECT_FALSE(kernel.buffers[xi].immutable);
    std::string src = emit_cuda(kernel, "f"), w_name = "buf" + std::to_string(wi), x_name = "buf" + std::to_string(xi);
    EXPECT_TRUE(contains(src, "const float* __restrict__ " + w_name)) << src;
    EXPECT_TRUE(contains(src, "const float* " + x_name)) << src;
    size_t wait = src.find("griddepcontrol.wait");
    ASSERT_NE(wait, std::string::npos) << src;
    ASSERT_NE(src.find(w_name + " + ("), std::string::npos) << src;
    EXPECT_GT(src.find(x_name + " + ("), wait) << src;
    std::string ptx = compile_cuda_to_ptx(kernel, "sm_90");
    if (k == 512) {  // one 16-byte piece a thread
      EXPECT_LT(src.find("ld.global.v4.u32"), wait) << src;
      EXPECT_LT(src.find(w_name + " + ("), wait) << src;
      EXPECT_LT(ptx.find("ld.global.v4.u32"), ptx.find("griddepcontrol.wait")) << ptx;
      EXPECT_FALSE(contains(ptx, "ld.global.nc")) << ptx;
    } else {  // 32 pieces a thread: past the registers' 256 bytes, read after the wait
      EXPECT_FALSE(contains(src, "ld.global.v4.u32")) << src;
      EXPECT_GT(src.find(w_name + " + ("), wait) << src;
      EXPECT_TRUE(contains(ptx, "ld.global.nc")) << ptx;
    }
  }
  // A q4 GEMV's weight bytes and its groups' scales.
  {
    Program p = lower(make_workload("llm-decode:stories15m:40:q4", f16).graph);
    int preloaded = 0;
    for (const Kernel& k : p.kernels) {
      std::string src = emit_cuda(scheduled(k), "f");
      if (!contains(src, "kiln_dequant_f16x2(kiln_b")) continue;
      size_t wait = src.find("griddepcontrol.wait");
      EXPECT_LT(src.find("_weight an iteration, read before the wait"), wait) << src;
      EXPECT_LT(src.find("_weight_scale, read before the wait"), wait) << src;
      ++preloaded;
    }
    EXPECT_GT(preloaded, 0);
  }
  // Turned off: the weight is read after the wait, read-only.
  {
    Graph g;
    g.outputs = {g.contract(g.immutable_input("w", f32, {256, 512}), g.input("x", f32, {512, 1}))};
    Kernel kernel = scheduled(lower(g).kernels[0]);
    setenv("KILN_CUDA_PRELOAD", "0", 1);
    std::string src = emit_cuda(kernel, "f"), ptx = compile_cuda_to_ptx(kernel, "sm_90");
    unsetenv("KILN_CUDA_PRELOAD");
    EXPECT_FALSE(contains(src, "ld.global.v4.u32")) << src;
    EXPECT_TRUE(contains(ptx, "ld.global.nc")) << ptx;
  }
  // The same graph without the flag: no read-only loads and nothing early.
  Graph plain;
  plain.outputs = {plain.contract(plain.input("w", f32, {256, 512}), plain.input("x", f32, {512, 1}))};
  Kernel kernel = scheduled(lower(plain).kernels[0]);
  EXPECT_FALSE(contains(emit_cuda(kernel, "f"), "ld.global.v4.u32"));
  EXPECT_FALSE(contains(compile_cuda_to_ptx(kernel, "sm_90"), "ld.global.nc"));
}

// A q4 GEMV with its weight in f32 (the LLM builder's f32 activations): each
// group's 32 products are summed first and the sum multiplied by the group's
// scale once (factor_sums), nibble - 8 is one subtraction from the
// conversion's magic number (12582912 + 8), and the group's 32 f32
// activations are read as eight 16-byte pieces. KILN_CUDA_FACTOR=0 keeps the
// scale in every product. (Values: "q4 gemv, f32 weight" in the op cases, run
// on a GPU by test_backends_cuda.)
TEST(CudaCodegen, GroupScalesMultiplyPartialSums) {
  Program p = lower(make_workload("llm-decode:stories15m:40:q4", f32).graph);
  int factored = 0;
  for (const Kernel& k : p.kernels) {
    if (k.name.find("contract") == std::string::npos) continue;  // (the token's embedding row, stored once)
    Kernel s = scheduled(k);
    std::string src = emit_cuda(s, "f");
    if (!contains(src, "kiln_small_i2f_sub(")) continue;
    EXPECT_TRUE(contains(src, "12582920.0f")) << src;
    EXPECT_TRUE(contains(src, "// part")) << src;
    EXPECT_TRUE(contains(src, "[8];  // 32 elements of")) << src;
    setenv("KILN_CUDA_FACTOR", "0", 1);
    std::string off = emit_cuda(s, "f");
    unsetenv("KILN_CUDA_FACTOR");
    EXPECT_FALSE(contains(off, "// part")) << off;
    EXPECT_FALSE(compile_cuda_to_ptx(s, "sm_90").empty());
    ++factored;
  }
  EXPECT_GE(factored, 3);  // q/k/v, o, gate/up, down (the head stays f32)
}

// The decode step's GEMVs with f16 activations (q4, q8, q4z; a block of 8 rows,
// a warp a row) go to the tensor cores: mma.sync m16n8k16, warp w taking
// shares 4w..4w+3 of the block's 8 rows, A = the thread's own row's
// weights (rows g and g + 8 of A), B = x chosen by the row's parity, the
// weights read before the wait as the thread that multiplies them
// (kiln_mrow, kiln_mthr), the warps' sums in shared memory behind one
// barrier a kernel, the loops kept for GPUs before sm_80.
// KILN_CUDA_MMA_GEMV=0 keeps the loops. (Values: test_backends_cuda on the
// GPU, the LLM decode cases.)
TEST(CudaCodegen, DecodeGemvRowsGoToTheTensorCores) {
  for (WeightFormat wf : {WeightFormat::q4, WeightFormat::q8, WeightFormat::q4z}) {
    SCOPED_TRACE(int(wf));
    Program p = lower(llm_decode_graph(llm_config("tinyllama-1.1b"), f16, wf));
    int mma = 0;
    for (const Kernel& k : p.kernels) {
      Kernel s = scheduled(k);
      std::string src = emit_cuda(s, "f");
      if (!contains(src, "emit_mma_gemv")) continue;
      EXPECT_TRUE(contains(src, "kiln_mma_f16(kiln_u % 2 ? kiln_c2 : kiln_c, &kiln_fw")) << src;
      EXPECT_TRUE(contains(src, "kiln_odd ?")) << src;
      EXPECT_TRUE(contains(src, "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800")) << src;
      EXPECT_TRUE(contains(src, "#else")) << src;
      size_t barriers = 0;
      for (size_t at = src.find("__syncthreads()"); at != std::string::npos; at = src.find("__syncthreads()", at + 1))
        ++barriers;
      EXPECT_EQ(barriers, 1u) << src;  // gate, its norm's sum of squares and up behind one
      std::string early = src.substr(0, src.find("griddepcontrol.wait"));
      size_t uses = 0;
      for (size_t at = early.find("kiln_mrow"); at != std::string::npos; at = early.find("kiln_mrow", at + 1)) ++uses;
      EXPECT_GE(uses, 2u) << src;  // declared, then a weight preloaded as the mma's thread
      // A q4 group's scale is dequantized from the register it was preloaded
      // into before the wait, not read again after it (session 23: the mma
      // loop was not open, so load_ref read memory, and ptxas dropped the
      // unused preload: a DRAM read after the wait in every q4 GEMV).
      std::string mma_path = src.substr(src.find("emit_mma_gemv"));
      mma_path = mma_path.substr(0, mma_path.find("#else"));
      if (wf == WeightFormat::q4) EXPECT_TRUE(contains(mma_path, "kiln_ss = (unsigned)kiln_pre")) << src;
      EXPECT_FALSE(contains(mma_path, "kiln_ss = (unsigned)buf")) << src;
      if (mma++ == 0) {
        std::string ptx = compile_cuda_to_ptx(s, "sm_90");
        EXPECT_TRUE(contains(ptx, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")) << ptx;
        setenv("KILN_CUDA_MMA_GEMV", "0", 1);
        std::string off = emit_cuda(s, "f");
        unsetenv("KILN_CUDA_MMA_GEMV");
        EXPECT_FALSE(contains(off, "kiln_mma_f16")) << off;
      }
    }
    EXPECT_GE(mma, 4);  // q/k/v, o, gate/up, down
  }
  // The op cases' q4 GEMV takes the path too.
  int cases = 0;
  for (const testing::GraphCase& c : testing::op_cases()) {
    if (c.name.find("gemv") == std::string::npos) continue;
    for (const Kernel& k : lower(c.graph).kernels) {
      std::string src = emit_cuda(scheduled(k), "f");
      size_t begin = src.find("emit_mma_gemv");
      if (begin == std::string::npos) continue;
      ++cases;
      // The mma's dequantized words hold their elements in order: where a
      // weight is not taken as a pair ("q4 gemv f16" rounds twice), it is
      // read element by element in that order, never in the loops' (which
      // took the wrong weights on the H100, session 22).
      std::string mma_path = src.substr(begin, src.find("#else", begin) - begin);
      EXPECT_FALSE(contains(mma_path, "8 * ((")) << c.name << "\n" << src;
    }
  }
  EXPECT_GT(cases, 0);
}

// The switches that change the emitted code are part of the CUDA device's
// artifact identity (the disk cache's key): a kernel compiled with
// KILN_CUDA_MMA_GEMV=1 is not reused without it, nor the other way round.
TEST(CudaCodegen, EmitterSwitchesNameTheirState) {
  const std::string all_default = "preload on, factor on, mma gemv on";
  EXPECT_EQ(cuda_emit_switches(), all_default);
  for (auto [name, value] : std::vector<std::pair<const char*, const char*>>{
           {"KILN_CUDA_PRELOAD", "0"}, {"KILN_CUDA_FACTOR", "0"}, {"KILN_CUDA_MMA_GEMV", "0"}}) {
    setenv(name, value, 1);
    EXPECT_NE(cuda_emit_switches(), all_default) << name;
    unsetenv(name);
  }
}

// ptxas 13.0 drops some negations it folds into sm_90's three-input integer
// max: an i32 negation goes through an identity byte permute it cannot fold.
TEST(CudaCodegen, IntNegationIsKeptFromPtxas) {
  Graph g;
  g.outputs = {g.reduce(Op::ReduceMax, g.unary(Op::Neg, g.input("x", i32, {1, 7})), {1})};
  Kernel k = scheduled(lower(g).kernels[0]);
  EXPECT_TRUE(contains(emit_cuda(k, "f"), "(int)__byte_perm(0u - (unsigned)")) << emit_cuda(k, "f");
  EXPECT_TRUE(contains(compile_cuda_to_ptx(k, "sm_90"), "prmt.b32")) << compile_cuda_to_ptx(k, "sm_90");
}

TEST(CudaCodegen, OtherBadIrIsAnError) {
  EXPECT_THROW(emit_cuda(copy_kernel({store(1, var("nowhere"), const_f32(1))}), "f"), Error);
  EXPECT_THROW(emit_cuda(copy_kernel({store(7, idx(0), const_f32(1))}), "f"), Error);
  EXPECT_THROW(emit_cuda(copy_kernel({store(1, idx(0), const_int(ValType::i32, 1))}), "f"), Error);
  EXPECT_THROW(emit_cuda(copy_kernel({for_loop("n", idx(2), LoopKind::Serial, {copy_at(var("n"))})}, {"n"}), "f"),
               Error);
}

// IR names are free text; in C they must neither clash nor shadow.
TEST(CudaCodegen, NamesThatAreNotSafeInC) {
  Kernel k = copy_kernel(
      {for_loop("buf0", idx(2), LoopKind::GpuBlock,
                {for_loop("int", idx(4), LoopKind::GpuThread,
                          {for_loop("int", idx(3), LoopKind::Serial,
                                    {store(1, var("buf0") * idx(12) + var("int") * idx(4), const_f32(1))})})})});
  k.name = "int";
  EXPECT_EQ(cuda_entry_name(k), "kernel_int");
  std::string c = emit_cuda(k, cuda_entry_name(k));
  EXPECT_TRUE(contains(c, "const long long kiln_v0 = blockIdx.x;")) << c;
  EXPECT_TRUE(contains(c, "for (long long kiln_v2 = 0;")) << c;
  EXPECT_TRUE(contains(c, "buf1[kiln_v0 * 12LL + kiln_v2 * 4LL]")) << c;
  EXPECT_NO_THROW(compile_cuda_to_ptx(k, "sm_90"));
  k.name = "k 1/x";
  EXPECT_EQ(cuda_entry_name(k), "k_1_x");
  k.name = "";
  EXPECT_EQ(cuda_entry_name(k), "kernel");
}

TEST(CudaCodegen, SpecialConstantsCompile) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<Expr> values = {const_f32(inf), const_f32(-inf), const_f32(std::nanf("")), const_f32(-0.0),
                              const_f32(1e-45), const_f32(3.4028235e38), const_f32(0.1), const_f32(-2)};
  std::vector<Stmt> stores;
  for (size_t i = 0; i < values.size(); ++i) stores.push_back(store(1, idx(int64_t(i)), values[i]));
  Expr big = cast(ValType::f32, const_int(ValType::i32, std::numeric_limits<int32_t>::min()));
  Expr huge = cast(ValType::f32, const_int(ValType::i64, std::numeric_limits<int64_t>::min()));
  stores.push_back(store(1, idx(8), binary(BinOp::Add, big, huge)));
  std::string c = emit_cuda(copy_kernel(stores), "f");
  for (const char* literal : {"__uint_as_float(0xff800000u)", "-0.0f", "1e-45f", "3.4028235e+38f", "0.1f", "-2.0f",
                              "-2147483647 - 1", "-9223372036854775807LL - 1"})
    EXPECT_TRUE(contains(c, literal)) << literal << "\n" << c;
  EXPECT_NO_THROW(compile_cuda_to_ptx(copy_kernel(stores), "sm_90"));
}

TEST(CudaCodegen, NvrtcErrorsCarryTheLogAndTheSource) {
  try {
    nvrtc_compile("extern \"C\" __global__ void f() { undeclared_thing = 1; }", "broken", "sm_90");
    FAIL() << "compiled";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_TRUE(contains(m, "kernel 'broken'")) << m;
    EXPECT_TRUE(contains(m, "undeclared_thing")) << m;
    EXPECT_TRUE(contains(m, "--- source ---\n   1 | extern")) << m;
  }
}

TEST(CudaCodegen, VirtualArchitectureGivesPtxOnly) {
  Kernel k = map_kernel(f32, f32, [](Expr x) { return unary(UnOp::Sqrt, x); });
  NvrtcOutput out = nvrtc_compile(emit_cuda(k, "map"), k.name, "compute_90");
  EXPECT_TRUE(contains(out.ptx, ".entry map"));
  EXPECT_TRUE(out.cubin.empty());
  std::vector<int> archs = nvrtc_architectures();
  EXPECT_NE(std::find(archs.begin(), archs.end(), 90), archs.end());
}

TEST(CudaCodegen, NoDriverMeansNoDevices) {
  std::string why;
  EXPECT_TRUE(make_cuda_devices("libkiln_no_such_driver.so.1", &why).empty());
  EXPECT_TRUE(contains(why, "libkiln_no_such_driver.so.1")) << why;
  EXPECT_TRUE(make_cuda_devices("libm.so.6", &why).empty()) << "a library without the driver's entry points";
  EXPECT_TRUE(contains(why, "cuInit")) << why;
}

}  // namespace
}  // namespace kiln
