// Small tools over the Kernel IR that passes share.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "kiln/kernel.h"

namespace kiln {

// Replaces variables by expressions.
Expr substitute(const Expr& e, const std::map<std::string, Expr>& with);
Stmt substitute(const Stmt& s, const std::map<std::string, Expr>& with);

bool uses_var(const Expr& e, const std::string& v);
bool uses_var(const Stmt& s, const std::string& v);

// Rebuilds `s` bottom-up, giving every For loop named `v` to `f` (which returns
// its replacement). Counts the loops replaced in *count.
Stmt map_loops(const Stmt& s, const std::string& v, const std::function<Stmt(const Stmt&)>& f, int* count);

// Calls f on every statement, outermost first.
void visit(const Stmt& s, const std::function<void(const Stmt&)>& f);

// Rebuilds a statement with a new body (For, If, Block).
Stmt with_body(const Stmt& s, std::vector<Stmt> body);

// A reduction loop: every store under it is acc[0] = op(acc[0], term) into one
// local buffer of size 1, op Add, Max or Min, and nothing else under it reads acc.
struct Reduction {
  int acc = -1;
  BinOp op = BinOp::Add;
};
std::optional<Reduction> reduction_of(const Kernel& k, const Stmt& loop);

bool loads_buffer(const Expr& e, int buffer);

// A reduction loop that a tensor core takes as it is: its body is the one
// store acc[0] = add(acc[0], mul(a, b)), where a and b hold values of one
// 16-bit float dtype (f16 or bf16) exactly: each is a load of a global buffer
// of that dtype, an expression rounded to it (a dequantized q4 weight,
// round<f16>(scale * (nibble - 8))), or a load of an 8-bit integer buffer
// cast to f32 (a q8 weight, maybe rounded: exact in either dtype).
struct HalfProduct {
  int acc = -1;
  Expr a, b;  // the two operands
  DType dtype = f16;  // the float operands' dtype (f16 where both are integers)
};
std::optional<HalfProduct> half_product(const Kernel& k, const Stmt& loop);

// The same loop shape with f32 operands that are plain loads of f32 global
// buffers (dtype f32): what the CUDA emitter's SIMT tile takes (an
// array_tile on f32 contractions, products on the CUDA cores).
std::optional<HalfProduct> f32_product(const Kernel& k, const Stmt& loop);

// A positive integer that divides every value of the i64 expression `e` (an
// extent): 1 where nothing better is known (`32 * past` gives 32).
int64_t known_factor(const Expr& e);

}  // namespace kiln
