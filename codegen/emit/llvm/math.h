// f32 exp2, log2 and sin as inline, branch-free LLVM instructions (fma, shifts,
// selects, rint/floor/fabs), for scalars and <W x float> alike. llvm.exp2/log2/sin
// lower to scalar libm calls on x86, even inside vector loops; these stay vector
// code, so both kiln's vectorized loops and LLVM's loop vectorizer keep them wide.
// Accuracy (measured on every f32 input, against the correctly rounded result):
// exp2 and log2 within 1 ulp, sin within 2 ulp on |x| <= 10000.
#pragma once

namespace llvm {
class IRBuilderBase;
class Value;
}  // namespace llvm

namespace kiln {

// 2^x. inf for x >= 128, 0 for x <= -150, subnormal results in between
// (correctly rounded from the polynomial's value); NaN -> NaN.
llvm::Value* emit_exp2(llvm::IRBuilderBase& b, llvm::Value* x);

// log2(x), subnormal x included (scaled by 2^24 first). log2(+-0) = -inf,
// log2(x < 0) = NaN, log2(inf) = inf, NaN -> NaN.
llvm::Value* emit_log2(llvm::IRBuilderBase& b, llvm::Value* x);

// sin(x); absolute error below 7.3e-8 for |x| <= 2e5. Further out the error
// grows (about 0.05 at 1e6); past 1e7 the value is meaningless but stays in
// [-1, 1]. sin(-0) = -0, sin(+-inf) = NaN, NaN -> NaN.
llvm::Value* emit_sin(llvm::IRBuilderBase& b, llvm::Value* x);

}  // namespace kiln
