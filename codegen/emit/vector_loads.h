// Vector loads for the GPU emitters (CUDA, GLSL): which loads of an unrolled
// loop read whole 4- to 64-byte pieces of a buffer, so that the emitter reads
// the pieces once before the loop (16 bytes a load) and each iteration takes
// its element from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/kernel.h"

namespace kiln {

// `e` as `base + v` with no `v` in base (through sums only); null otherwise.
Expr offset_base(const Expr& e, const std::string& v);

// `e` as base + off where off uses only `v` and base not at all (the terms of
// a sum split by whether they use v): a packed operand's index, such as a q4
// weight's byte (group * 16 + v % 16 for 32 elements v). False otherwise.
bool split_offset(const Expr& e, const std::string& v, Expr* base, Expr* off);

// Whether every value of the i64 expression `e` is a multiple of `n`, as its
// structure shows.
bool multiple_of(const Expr& e, int64_t n);

struct VectorLoad {
  const ExprNode* load = nullptr;  // the load in the loop's body
  Expr base;                       // the first element read: a multiple of `elems`
  int64_t elems = 0;               // elements read at once (a power of two)
  int64_t bytes = 0;               // elems times the element size
  Expr element;                    // the element iteration v takes; null: v itself
  size_t first = 0;                // the first of the list reading the same pieces (itself if none before)
};

// For an unrolled loop of constant extent W >= 2 whose body only stores: each
// load of a global buffer the body does not store to (bools excepted) at
// `base + v` with base a multiple of W, reading W elements, or at base +
// off(v) with off taking every value in [0, P) for a power of two P <= W (a q4
// weight's 16 bytes for 32 elements, each byte twice), when the piece is 4, 8
// or a multiple of 16 bytes up to `max_bytes` (multiples of 16 only where
// `sixteen_only`). Empty otherwise.
std::vector<VectorLoad> find_vector_loads(const Kernel& k, const StmtNode& loop, bool sixteen_only,
                                          int64_t max_bytes = 64);

}  // namespace kiln
