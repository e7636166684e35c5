#include "codegen/emit/llvm/math.h"

#include <cstdint>
#include <limits>
#include <span>

#include <llvm/IR/Constants.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>

namespace kiln {

namespace {

// Polynomial coefficients are minimax (Remez) fits for the relative error,
// rounded to f32; each comment gives the fit's error before that rounding.

// 2^f on [-1/2, 1/2], lowest degree first: 1.9e-9.
constexpr float kExp2[] = {1.0f,           0.693147182f,   0.240226462f,   0.0555032864f,
                           0.00961848907f, 0.00133999309f, 0.000153458124f};

// log2(1+u) = u/ln2 + u^2 * R(u) on [sqrt(1/2) - 1, sqrt(2) - 1]; these are R's
// coefficients (the fit of log2(1+u)/u: 4.1e-9).
constexpr float kLog2[] = {-0.721347332f, 0.480898231f, -0.360696644f, 0.288567394f, -0.239617407f,
                           0.204600632f,  -0.191062763f, 0.186174929f, -0.109949499f};
// 1/ln2 as hi + lo, so that u/ln2, the bulk of the result, is not off by
// 1/ln2's own rounding.
constexpr float kInvLn2Hi = 0x1.715476p+0f, kInvLn2Lo = 0x1.4ae0cp-26f;

// sin r = r + r^3 * S(r^2) and cos r = 1 + r^2 * C(r^2) on |r| <= 0.8, a little
// wider than pi/4 because k below is rounded from an f32 product: 4.4e-9, 7.7e-11.
constexpr float kSin[] = {-0.166666538f, 0.00833207089f, -0.000195030691f};
constexpr float kCos[] = {-0.5f, 0.0416666158f, -0.00138865097f, 2.43677023e-05f};
constexpr float kReduced = 0.8f;

// -pi/2 in three f32 parts (Cody-Waite), their sum within 1e-23 of it. In an
// fma each product is exact, and so is the first step's difference for |x| up
// to 4e7 (it is a multiple of 2^-23 below 2); the rest only rounds r once more.
constexpr float kMinusPiOver2[] = {-0x1.921fb6p+0f, 0x1.777a5cp-25f, 0x1.ee59dap-50f};
constexpr float kTwoOverPi = 0x1.45f306p-1f;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint32_t kSignBit = 0x80000000;

// Instructions on values of one type: f32 or <W x f32>, with i32 of the same
// shape for their bits.
class Math {
 public:
  Math(llvm::IRBuilderBase& b, llvm::Value* like)
      : b_(b), f_(like->getType()), i_(f_->getWithNewType(b.getInt32Ty())) {}

  llvm::Type* float_type() { return f_; }

  llvm::Value* f(float c) { return llvm::ConstantFP::get(f_, c); }
  llvm::Value* i(uint32_t c) { return llvm::ConstantInt::get(i_, c); }
  llvm::Value* bits(llvm::Value* v) { return b_.CreateBitCast(v, i_); }
  llvm::Value* from_bits(llvm::Value* v) { return b_.CreateBitCast(v, f_); }

  llvm::Value* call(llvm::Intrinsic::ID id, llvm::Value* v) { return b_.CreateUnaryIntrinsic(id, v); }
  llvm::Value* fma(llvm::Value* a, llvm::Value* m, llvm::Value* c) {
    return b_.CreateIntrinsic(llvm::Intrinsic::fma, {f_}, {a, m, c});
  }

  // c[0] + x*c[1] + x^2*c[2] + ...
  llvm::Value* horner(llvm::Value* x, std::span<const float> c) {
    llvm::Value* sum = f(c.back());
    for (size_t j = c.size() - 1; j-- > 0;) sum = fma(sum, x, f(c[j]));
    return sum;
  }

  // v limited to [lo, hi]; NaN stays NaN (its comparisons are false). Each
  // select is one minps/maxps on x86.
  llvm::Value* clamp(llvm::Value* v, float lo, float hi) {
    v = b_.CreateSelect(b_.CreateFCmpOGT(v, f(hi)), f(hi), v);
    return b_.CreateSelect(b_.CreateFCmpOLT(v, f(lo)), f(lo), v);
  }

  // 2^n for an i32 n in the normal exponent range.
  llvm::Value* pow2(llvm::Value* n) { return from_bits(b_.CreateShl(b_.CreateAdd(n, i(127)), 23)); }

 private:
  llvm::IRBuilderBase& b_;
  llvm::Type* f_;
  llvm::Type* i_;
};

}  // namespace

// 2^x = 2^n * 2^f with n = round(x). The scale is applied as two normal
// factors 2^(n/2), so that 2^128 and beyond overflow and results below 2^-126
// round once, from the polynomial's value, to the subnormal grid.
llvm::Value* emit_exp2(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x);
  x = m.clamp(x, -200, 200);  // the result is 0 or inf there already
  // Adding 1.5 * 2^23 rounds x to an integer (ties to even) and leaves it in
  // the low bits of the sum: no fptosi, which would be poison on NaN.
  const float shift = 0x1.8p23f;
  llvm::Value* shifted = b.CreateFAdd(x, m.f(shift));
  llvm::Value* n = b.CreateFSub(shifted, m.f(shift));
  llvm::Value* frac = b.CreateFSub(x, n);  // exact, in [-1/2, 1/2]
  llvm::Value* n_int = b.CreateSub(m.bits(shifted), m.bits(m.f(shift)));
  llvm::Value* half = b.CreateAShr(n_int, 1);
  llvm::Value* rest = b.CreateSub(n_int, half);
  return b.CreateFMul(b.CreateFMul(m.horner(frac, kExp2), m.pow2(half)), m.pow2(rest));
}

// x = 2^e * (1 + u) with 1 + u in [sqrt(1/2), sqrt(2)), so log2(1+u) is small
// and needs no cancellation-prone correction; log2 x = e + log2(1+u).
llvm::Value* emit_log2(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x);
  // Also true for 0 and negatives, whose results are replaced at the end.
  llvm::Value* subnormal = b.CreateFCmpOLT(x, m.f(0x1p-126f));
  llvm::Value* normal = b.CreateSelect(subnormal, b.CreateFMul(x, m.f(0x1p24f)), x);
  // Offsetting the bits by those of sqrt(1/2) makes the exponent field e.
  llvm::Value* x_bits = m.bits(normal);
  llvm::Value* e = b.CreateAShr(b.CreateSub(x_bits, m.i(0x3f3504f3)), 23);
  llvm::Value* mantissa = m.from_bits(b.CreateSub(x_bits, b.CreateShl(e, 23)));
  llvm::Value* u = b.CreateFSub(mantissa, m.f(1));  // exact
  e = b.CreateSub(e, b.CreateSelect(subnormal, m.i(24), m.i(0)));

  llvm::Value* u2_r = b.CreateFMul(b.CreateFMul(u, u), m.horner(u, kLog2));
  llvm::Value* log1p = m.fma(u, m.f(kInvLn2Hi), m.fma(u, m.f(kInvLn2Lo), u2_r));
  llvm::Value* result = b.CreateFAdd(b.CreateSIToFP(e, m.float_type()), log1p);

  result = b.CreateSelect(b.CreateFCmpOLT(x, m.f(kInf)), result, x);  // inf, NaN
  result = b.CreateSelect(b.CreateFCmpOEQ(x, m.f(0)), m.f(-kInf), result);
  return b.CreateSelect(b.CreateFCmpOLT(x, m.f(0)), m.f(std::numeric_limits<float>::quiet_NaN()), result);
}

// sin is odd: |x| = k*pi/2 + r with |r| <= pi/4 (about; see kReduced), the
// quadrant k mod 4 picks +-sin r or +-cos r, and x's sign bit goes on last
// (which keeps sin(-0) = -0). r is accurate to its own rounding for
// |x| <= 2e5; beyond, k (rounded from a*2/pi in f32) drifts from the
// nearest integer, r leaves [-0.8, 0.8] and is clamped there, which keeps the
// result in [-1, 1]. inf gives inf - inf = NaN in the reduction.
llvm::Value* emit_sin(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x);
  llvm::Value* a = m.call(llvm::Intrinsic::fabs, x);
  llvm::Value* k = m.call(llvm::Intrinsic::rint, b.CreateFMul(a, m.f(kTwoOverPi)));
  llvm::Value* r = a;
  for (float part : kMinusPiOver2) r = m.fma(k, m.f(part), r);
  r = m.clamp(r, -kReduced, kReduced);

  llvm::Value* r2 = b.CreateFMul(r, r);
  llvm::Value* sin_r = m.fma(b.CreateFMul(r, r2), m.horner(r2, kSin), r);
  llvm::Value* cos_r = m.fma(r2, m.horner(r2, kCos), m.f(1));

  // k >= 0 is an integer, so k/2 and k/4 (exact) have fractions 0, 1/4, 1/2, 3/4.
  llvm::Value* half = b.CreateFMul(k, m.f(0.5f));
  llvm::Value* odd = b.CreateFCmpUNE(half, m.call(llvm::Intrinsic::floor, half));
  llvm::Value* quarter = b.CreateFMul(k, m.f(0.25f));
  llvm::Value* quarter_frac = b.CreateFSub(quarter, m.call(llvm::Intrinsic::floor, quarter));
  llvm::Value* negate = b.CreateFCmpOGE(quarter_frac, m.f(0.5f));
  llvm::Value* v = b.CreateSelect(odd, cos_r, sin_r);
  v = b.CreateSelect(negate, b.CreateFNeg(v), v);
  llvm::Value* sign = b.CreateAnd(m.bits(x), m.i(kSignBit));
  return m.from_bits(b.CreateXor(m.bits(v), sign));
}

}  // namespace kiln
