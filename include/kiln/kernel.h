// The Kernel IR: how one kernel computes. Loop nests over buffers with integer
// index expressions. Values inside a kernel have a compute type (f32, i32, i64
// for indices, bool); buffers have a storage dtype, and loads and stores convert
// between the two (an f16 buffer loads as f32; a store rounds to f16).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

enum class ValType : uint8_t { f32, i32, i64, b1 };
std::string_view valtype_name(ValType t);  // "f32", "i32", "i64", "bool"
ValType valtype_of(DType storage);          // compute type of a storage dtype

enum class ExprKind : uint8_t { Const, Var, Load, Unary, Binary, Select, Cast, Round };

enum class UnOp : uint8_t { Neg, Exp2, Log2, Sqrt, Recip, Sin, Not };
// Integer Div truncates toward zero and gives 0 for a zero divisor; Mod is the
// matching remainder. Float Div is IEEE. CmpLt/CmpEq yield bool; And/Or take bool.
enum class BinOp : uint8_t { Add, Sub, Mul, Div, Mod, Max, Min, CmpLt, CmpEq, And, Or };
std::string_view unop_name(UnOp op);
std::string_view binop_name(BinOp op);

struct ExprNode;
using Expr = std::shared_ptr<const ExprNode>;

struct ExprNode {
  ExprKind kind;
  ValType type;
  double fval = 0;     // Const of type f32
  int64_t ival = 0;    // Const of an integer or bool type
  std::string name;    // Var: a loop variable or a kernel parameter (i64)
  int buffer = -1;     // Load: index into Kernel::buffers
  UnOp unop = UnOp::Neg;
  BinOp binop = BinOp::Add;
  DType round_to = f32;  // Round: the storage dtype whose values this rounds to
  std::vector<Expr> args;  // operands; Load: {index}
};

// Constructors. Binary operands must have the same type (they throw kiln::Error
// otherwise); integer constants fold.
Expr const_f32(double v);
Expr const_int(ValType t, int64_t v);
Expr idx(int64_t v);  // i64 constant
Expr var(std::string name);  // i64 variable
Expr load(int buffer, ValType type, Expr index);
Expr unary(UnOp op, Expr a);
Expr binary(BinOp op, Expr a, Expr b);
Expr select(Expr cond, Expr a, Expr b);
// Plain conversion: int<->int sign-extends or truncates, float->int truncates
// toward zero and saturates (NaN -> 0), x->bool is x != 0, bool->x is 0 or 1.
Expr cast(ValType to, Expr a);
// Rounds a compute value to what `storage` can hold, keeping its compute type:
// f32 -> nearest f16/bf16 value (ties to even), i32 -> wraps to i8/u8 range.
Expr round_to(DType storage, Expr a);

// Index arithmetic helpers (i64) that fold constants: a+b, a*b, a/b, a%b.
Expr operator+(const Expr& a, const Expr& b);
Expr operator-(const Expr& a, const Expr& b);
Expr operator*(const Expr& a, const Expr& b);
Expr operator/(const Expr& a, const Expr& b);
Expr operator%(const Expr& a, const Expr& b);

enum class LoopKind : uint8_t { Serial, Parallel, Unrolled, Vectorized, GpuBlock, GpuThread };
std::string_view loopkind_name(LoopKind k);  // "serial", "parallel", ...

enum class StmtKind : uint8_t { For, Store, Block, If, AllReduce };

struct StmtNode;
using Stmt = std::shared_ptr<const StmtNode>;

struct StmtNode {
  StmtKind kind;
  // For: `for var in 0..extent` (step 1)
  std::string var;
  Expr extent;
  LoopKind loop = LoopKind::Serial;
  // Store: buffers[buffer][index] = value (value converts to the buffer's dtype)
  int buffer = -1;
  Expr index, value;
  // If: cond
  Expr cond;
  // AllReduce: buffers[buffer][0] = binop of it over the threads of the
  // gpu_thread loop `var`; every thread gets the combined value.
  BinOp binop = BinOp::Add;
  std::vector<Stmt> body;  // For/If body, Block contents
};

Stmt for_loop(std::string var, Expr extent, LoopKind kind, std::vector<Stmt> body);
Stmt store(int buffer, Expr index, Expr value);
Stmt block(std::vector<Stmt> body);
Stmt if_then(Expr cond, std::vector<Stmt> body);
// Combines a Local accumulator across the threads of one gpu_thread loop; op is
// Add, Max or Min. Every thread of the loop must reach it.
Stmt all_reduce(int buffer, BinOp op, std::string thread_var);

enum class MemScope : uint8_t { Global, Shared, Local };
std::string_view memscope_name(MemScope s);

struct BufferDecl {
  std::string name;
  DType dtype = f32;
  MemScope scope = MemScope::Global;
  int64_t size = 0;     // elements; only for Shared/Local (Global sizes are run-time)
  bool output = false;  // Global: the kernel writes it
  // Global, read only: an immutable graph input (Node::immutable), which no
  // kernel writes and which does not change while kernels run, so it may be
  // read before waiting for the kernel launched before (CUDA: const __restrict__).
  bool immutable = false;
};

// How a matrix unit that takes a contraction in whole tiles (the systolic
// array, tensor cores) should tile this kernel's: rows of the output, depth of
// the reduction and columns of the output per tile, and how many tiles deep
// the copies of the operands run ahead of the multiplication (stages; tensor
// cores only). 0 leaves a size to the backend. Set by the schedule's
// `array_tile` step; other targets ignore it.
struct ArrayTile {
  int64_t m = 0, k = 0, n = 0, stages = 0;
  bool warpgroup = false;  // CUDA: Hopper's warpgroup instructions (wgmma, sm_90a) instead of mma.sync
  // With warpgroup: operands copied by the Tensor Memory Accelerator (one
  // producer warp, mbarriers) where both are 2-D affine views of 16-bit
  // buffers; cp.async by every thread otherwise.
  bool tma = false;
  bool any() const { return m || k || n; }
  bool operator==(const ArrayTile& o) const = default;
};

// A kernel. Global buffers are its arguments, in declaration order; Local and
// Shared buffers are scratch it allocates. `params` are i64 scalars (the
// symbolic dims it uses), passed at launch.
struct Kernel {
  std::string name;
  std::vector<BufferDecl> buffers;
  std::vector<std::string> params;
  Stmt body;
  ArrayTile array_tile;

  // Global buffers in argument order (indices into `buffers`).
  std::vector<int> global_buffers() const;
};

// Evaluates an i64 expression of constants, variables and integer arithmetic
// (no loads) with `vars` giving each variable's value. Throws kiln::Error on an
// unbound variable, a load, or a zero divisor.
int64_t evaluate_index(const Expr& e, const std::map<std::string, int64_t>& vars);

// Structural equality of IR (used by round-trip tests and caches).
bool equal(const Expr& a, const Expr& b);
bool equal(const Stmt& a, const Stmt& b);
bool operator==(const Kernel& a, const Kernel& b);

// Text form (ir/kernel_text.cpp): parse_kernel(print(k)) == k.
std::string print(const Expr& e, const Kernel& k);
std::string print(const Kernel& k);
Kernel parse_kernel(std::string_view text);  // throws kiln::Error with line:col

}  // namespace kiln
