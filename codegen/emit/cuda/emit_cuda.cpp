#include "codegen/emit/cuda/emit_cuda.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "codegen/factor_sums.h"
#include "codegen/ir_util.h"
#include "codegen/simplify_indices.h"
#include "codegen/emit/gpu_nest.h"
#include "codegen/emit/vector_loads.h"
#include "kiln/error.h"

namespace kiln {

namespace {

constexpr const char* kBackend = "cuda backend";

[[noreturn]] void fail(const Kernel& k, const std::string& what) {
  throw Error(std::string(kBackend) + ": kernel '" + k.name + "': " + what);
}

// --- C names ---

bool is_ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_ascii_alnum(char c) { return is_ascii_alpha(c) || (c >= '0' && c <= '9'); }

bool numbered(std::string_view s, std::string_view prefix) {
  if (s.size() <= prefix.size() || s.substr(0, prefix.size()) != prefix) return false;
  for (char c : s.substr(prefix.size()))
    if (c < '0' || c > '9') return false;
  return true;
}

// Whether an IR name can be a C name as it is: an identifier that is no C++
// keyword, no CUDA built-in or function the kernel calls, and none of the names
// the emitter makes up (bufN, paramN, kiln_*).
bool is_safe_name(std::string_view s) {
  static const std::set<std::string_view> reserved = {
      "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case",
      "catch", "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept", "const", "consteval",
      "constexpr", "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield", "decltype",
      "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern",
      "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new",
      "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected", "public",
      "register", "reinterpret_cast", "requires", "return", "short", "signed", "sizeof", "static",
      "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true",
      "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile",
      "wchar_t", "while", "xor", "xor_eq", "threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize",
      "exp2f", "log2f", "sqrtf", "sinf", "fmaxf", "fminf", "max", "min"};
  if (s.empty() || !is_ascii_alpha(s[0])) return false;
  for (char c : s)
    if (!is_ascii_alnum(c) && c != '_') return false;
  return s.rfind("kiln_", 0) != 0 && !numbered(s, "buf") && !numbered(s, "param") && !reserved.count(s);
}

// IR names go into // comments: one line, printable.
std::string comment_text(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c < ' ' || c > '~') c = '?';
  return out;
}

const char* storage_type(DType t) {
  switch (t) {
    case f32: return "float";
    case f16: case bf16: return "unsigned short";
    case i32: return "int";
    case i8: return "signed char";
    case u8: case boolean: return "unsigned char";
  }
  return "?";
}

// --- Helpers the kernel may call ---

const char* kF16Helpers = R"(// f16 <-> f32 through the hardware's conversions (round to nearest even), with
// no need for cuda_fp16.h.
__device__ __forceinline__ unsigned short kiln_f32_to_f16(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float kiln_f16_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ float kiln_round_f16(float f) { return kiln_f16_to_f32(kiln_f32_to_f16(f)); }
__device__ __forceinline__ unsigned short kiln_hmul(unsigned short a, unsigned short b) {
  unsigned short r;
  asm("mul.rn.f16 %0, %1, %2;" : "=h"(r) : "h"(a), "h"(b));
  return r;
}
// Two values in one conversion (sm_80 and up): lo in the low half.
__device__ __forceinline__ unsigned kiln_f32x2_to_f16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
)";

// A dequantized weight, round<f16>((q - zero) * scale) for an integer q and
// zero in [0, 1023] and an f16 scale, in half arithmetic: 0x6400 | q is the
// f16 value 1024 + q, so the subtraction of 1024 + zero is exact, and the
// multiplication rounds once, as the f32 product (exact: 11 by 11 bits)
// rounded to f16 does. Integer and half instructions at full rate instead of
// two conversions at a quarter (I2F, F2F): a 4-bit GEMV's inner loop.
const char* kDequantHelpers = R"(__device__ __forceinline__ float kiln_dequant_f16(int q, unsigned short zero, unsigned short scale) {
  unsigned short r;
  asm("{ .reg .b16 t;\n sub.rn.f16 t, %1, %2;\n mul.rn.f16 %0, t, %3; }"
      : "=h"(r) : "h"((unsigned short)(0x6400 | q)), "h"(zero), "h"(scale));
  return kiln_f16_to_f32(r);
}
// The same for two 4-bit values, bits 0-3 and 16-19 of `nibbles`, a pair's
// zero and scale in both halves: the f16 pair in one word.
__device__ __forceinline__ unsigned kiln_dequant_f16x2(unsigned nibbles, unsigned zero2, unsigned scale2) {
  unsigned r;
  // (nibbles & 0x000F000F) | 0x64006400 in one lop3 (ptxas spent two, one
  // immediate each).
  asm("{ .reg .b32 t;\n lop3.b32 t, %1, %4, %5, 0xEA;\n sub.rn.f16x2 t, t, %2;\n mul.rn.f16x2 %0, t, %3; }"
      : "=r"(r) : "r"(nibbles), "r"(zero2), "r"(scale2), "r"(0x000F000Fu), "r"(0x64006400u));
  return r;
}
)";

// The environment switches that change the emitted code, read in one place
// (cuda_emit_switches() names them for the disk cache's key).
struct Switches {
  bool preload = true;    // KILN_CUDA_PRELOAD=0: weights read after the wait
  bool factor = true;     // KILN_CUDA_FACTOR=0: no factor_sums
  bool mma_gemv = true;   // KILN_CUDA_MMA_GEMV=0: decode GEMVs a warp a row as loops, not on the tensor cores
};
Switches switches() {
  auto is = [](const char* name, const char* value) {
    const char* v = std::getenv(name);
    return v && std::string(v) == value;
  };
  return {!is("KILN_CUDA_PRELOAD", "0"), !is("KILN_CUDA_FACTOR", "0"), !is("KILN_CUDA_MMA_GEMV", "0")};
}

// Pairs for the tensor-core GEMVs (emit_mma_gemv).
const char* kMmaGemvHelpers = R"(// Two f16 products at once, each f16's correctly rounded multiplication.
__device__ __forceinline__ unsigned kiln_hmul2(unsigned a, unsigned b) {
  unsigned r;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
// Bytes 2h and 2h + 1 (h = 0 or 1) of a word as an f16 pair: next to 0x64 a
// byte is 1024 + it (a signed one biased by 128 first), so one subtraction
// leaves each exactly.
__device__ __forceinline__ unsigned kiln_u8_pair(unsigned w, int h) {
  unsigned t = __byte_perm(w, 0x64646464u, h ? 0x4342u : 0x4140u), r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(t), "r"(0x64006400u));
  return r;
}
__device__ __forceinline__ unsigned kiln_i8_pair(unsigned w, int h) {
  unsigned t = __byte_perm(w ^ 0x80808080u, 0x64646464u, h ? 0x4342u : 0x4140u), r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(t), "r"(0x64806480u));
  return r;
}
)";

// An integer of magnitude below 2^22 as a float without a conversion
// instruction (a quarter-rate I2F on sm_90): added to the bits of 1.5 * 2^23
// it is that float's integer offset, exactly; an int8 GEMV's inner loop.
const char* kSmallIntHelpers = R"(__device__ __forceinline__ float kiln_small_i2f(int x) { return __int_as_float(0x4B400000 + x) - 12582912.0f; }
)";
// The same less another integer: one subtraction of 1.5 * 2^23 + that.
const char* kSmallIntSubHelpers = R"(__device__ __forceinline__ float kiln_small_i2f_sub(int x, float magic) { return __int_as_float(0x4B400000 + x) - magic; }
)";

const char* kBF16Helpers = R"(// f32 -> bf16 exactly as kiln's f32_to_bf16_bits: round to nearest even, NaN stays a quiet NaN.
__device__ __forceinline__ unsigned short kiln_f32_to_bf16(float f) {
  unsigned x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
  return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float kiln_bf16_to_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
__device__ __forceinline__ float kiln_round_bf16(float f) { return kiln_bf16_to_f32(kiln_f32_to_bf16(f)); }
)";

const char* kDivHelpers = R"(// Integer division never traps or overflows: x / 0 == 0, x / -1 == -x (wrapping),
// x % 0 == x % -1 == 0.
__device__ __forceinline__ int kiln_div(int a, int b) {
  return b == 0 ? 0 : b == -1 ? (int)(0u - (unsigned)a) : a / b;
}
// Indices are mostly small and non-negative: 32-bit division then (64-bit
// division is a long software sequence on the GPU).
__device__ __forceinline__ bool kiln_fits_u31(long long a, long long b) {
  return (((unsigned long long)a | (unsigned long long)b) >> 31) == 0;
}
__device__ __forceinline__ long long kiln_div(long long a, long long b) {
  if (kiln_fits_u31(a, b)) return b == 0 ? 0 : (long long)((unsigned)a / (unsigned)b);
  return b == 0 ? 0 : b == -1 ? (long long)(0ull - (unsigned long long)a) : a / b;
}
__device__ __forceinline__ int kiln_mod(int a, int b) { return b == 0 || b == -1 ? 0 : a % b; }
__device__ __forceinline__ long long kiln_mod(long long a, long long b) {
  if (kiln_fits_u31(a, b)) return b == 0 ? 0 : (long long)((unsigned)a % (unsigned)b);
  return b == 0 || b == -1 ? 0 : a % b;
}
)";

// cvt.rzi truncates and saturates; for NaN the H100 gives 0 in 32 bits but
// INT64_MIN in 64, so NaN is handled here.
const char* kMmaHelpers = R"(// Tensor cores (sm_80 and up): 16-byte copies into shared memory that run
// behind the threads (cp.async), ldmatrix, and mma.sync m16n8k16 with f32
// accumulators.
__device__ __forceinline__ unsigned kiln_smem(const void* p) {
  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void kiln_cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(kiln_smem(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void kiln_cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(kiln_smem(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void kiln_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void kiln_cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }
__device__ __forceinline__ void kiln_ldmatrix_x4(unsigned* r, unsigned p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(p));
}
__device__ __forceinline__ void kiln_ldmatrix_x4_trans(unsigned* r, unsigned p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(p));
}
__device__ __forceinline__ void kiln_ldmatrix_x4_pair(unsigned* b0, unsigned* b1, unsigned p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(b0[0]), "=r"(b0[1]), "=r"(b1[0]), "=r"(b1[1]) : "r"(p));
}
__device__ __forceinline__ void kiln_ldmatrix_x4_trans_pair(unsigned* b0, unsigned* b1, unsigned p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(b0[0]), "=r"(b0[1]), "=r"(b1[0]), "=r"(b1[1]) : "r"(p));
}
__device__ __forceinline__ void kiln_mma_f16(float* c, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void kiln_mma_bf16(float* c, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
)";

// Hopper's warpgroup MMA (sm_90a): matrix descriptors of 128-byte swizzled
// shared-memory tiles, and the fences around the asynchronous multiplies.
const char* kWgmmaHelpers = R"(// Warpgroup tensor cores (sm_90a): a descriptor of a shared-memory matrix in
// the 128-byte swizzle (start address, leading and stride byte offsets).
__device__ __forceinline__ unsigned long long kiln_wgmma_desc(unsigned addr, unsigned lbo, unsigned sbo) {
  return (unsigned long long)((addr & 0x3FFFFu) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
         ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void kiln_fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void kiln_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void kiln_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void kiln_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }
// Keeps the compiler from moving an accumulator's uses across the fences.
__device__ __forceinline__ void kiln_wgmma_hold(float& x) { asm volatile("" : "+f"(x) :: "memory"); }
)";

// The Tensor Memory Accelerator (sm_90): tensor maps passed as grid
// constants, 2-D box copies into shared memory that complete on mbarriers,
// and the warpgroups' register budgets.
const char* kTmaHelpers = R"(// Tensor maps (a CUtensorMap's 128 bytes) and mbarriers (sm_90).
struct __align__(64) kiln_tmap { unsigned long long v[16]; };
__device__ __forceinline__ void kiln_mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void kiln_fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// One arrival that also expects `bytes` of copies to land.
__device__ __forceinline__ void kiln_mbar_expect(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void kiln_mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
// Waits until the barrier's phase of this parity has completed.
__device__ __forceinline__ void kiln_mbar_wait(unsigned bar, unsigned parity) {
  asm volatile("{\n.reg .pred p;\nKILN_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
               "@!p bra KILN_WAIT;\n}\n" :: "r"(bar), "r"(parity) : "memory");
}
// The box at element (x, y) of the map into shared memory at dst, counted on bar.
__device__ __forceinline__ void kiln_tma2d(unsigned dst, const kiln_tmap& map, int x, int y, unsigned bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
               :: "r"(dst), "l"(reinterpret_cast<unsigned long long>(&map)), "r"(x), "r"(y), "r"(bar) : "memory");
}
template <int N>
__device__ __forceinline__ void kiln_setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(N)); }
template <int N>
__device__ __forceinline__ void kiln_setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(N)); }
)";

const char* kSelectHelpers = R"(// A select whose operands load: both are read before choosing (kiln's loads
// are always in bounds), so the loads need not wait for the condition's.
template <class T>
__device__ __forceinline__ T kiln_sel(bool c, T a, T b) { return c ? a : b; }
)";

// Launched as a programmatic dependent (sm_90): the kernel lets the next one
// launch now and waits for the one before it to finish (and its writes to be
// visible) before it reads or writes memory. Without that launch attribute
// both are no-ops. Buffers the kernel only reads are not __restrict__ (see
// arguments()): their loads would be read-only (ld.global.nc), which ptxas
// moves above the wait. A tensor-core tile only waits: the next kernel's blocks,
// resident early, slowed the prefill's tiled contractions (H100: TTFT 11.0 ->
// 13.5 ms), so it launches when they are done, as without the attribute.
// The wait comes after the kernel's preloads (preload_weights()): loads of
// immutable buffers, which no kernel writes, issued while the one before runs.
const char* kDependentLaunch = R"(#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
)";
const char* kDependentWait = R"(#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
)";

const char* kCastHelpers = R"(// Float -> integer truncates toward zero and saturates; NaN gives 0.
__device__ __forceinline__ int kiln_f32_to_i32(float f) { return f != f ? 0 : __float2int_rz(f); }
__device__ __forceinline__ long long kiln_f32_to_i64(float f) { return f != f ? 0 : __float2ll_rz(f); }
)";

// --- The emitter ---

// C++ precedence, tightest first. An operand is parenthesized when it binds
// more loosely than its place allows.
enum Prec { kPrimary, kUnary, kMul, kAdd, kCompare, kLogical, kTernary };

struct CExpr {
  std::string text;
  Prec prec = kPrimary;
};

CExpr primary(std::string s) { return {std::move(s), kPrimary}; }
CExpr unary_op(std::string s) { return {std::move(s), kUnary}; }

CExpr float_literal(float f) {
  if (std::isnan(f)) return primary("__uint_as_float(0x7fc00000u)");
  if (std::isinf(f)) return primary(f > 0 ? "__uint_as_float(0x7f800000u)" : "__uint_as_float(0xff800000u)");
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, std::fabs(f)).ptr;  // shortest text that reads back as f
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  s += "f";
  return std::signbit(f) ? unary_op("-" + s) : primary(s);
}

CExpr int_literal(int64_t v, ValType t) {
  const char* suffix = t == ValType::i64 ? "LL" : "";
  int64_t lowest = t == ValType::i64 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int32_t>::min();
  if (v == lowest) return {"-" + std::to_string(-(v + 1)) + suffix + " - 1", kAdd};  // no literal for it
  std::string s = std::to_string(v) + suffix;
  return v < 0 ? unary_op(s) : primary(s);
}

// A tensor-core tile's operands in shared memory: one stage of an operand
// takes its tile in either layout (rows padded by 8 elements); all stages of
// A, then all of B.
int64_t tile_stage_elements(int64_t side, int64_t depth) { return std::max(side * (depth + 8), depth * (side + 8)); }
int64_t tile_stages(const ArrayTile& t) { return t.stages > 0 ? t.stages : 3; }
int64_t tile_shared_bytes(const ArrayTile& t) {
  return 2 * tile_stages(t) * (tile_stage_elements(t.m, t.k) + tile_stage_elements(t.n, t.k));
}
// A SIMT tile (f32 operands) holds each stage of an operand as BK rows of
// its tile's side, padded by 4 elements.
int64_t simt_stage_elements(int64_t side, int64_t depth) { return depth * (side + 4); }
int64_t simt_shared_bytes(const ArrayTile& t) {
  return 4 * tile_stages(t) * (simt_stage_elements(t.m, t.k) + simt_stage_elements(t.n, t.k));
}
// A warpgroup tile (wgmma) holds each stage of an operand as its tile's side
// times BK elements of the reduction, both operands' stages 1024-byte
// aligned (the swizzle's period), plus 1024 bytes to align the first.
int64_t warpgroup_shared_bytes(const ArrayTile& t) { return tile_stages(t) * (t.m + t.n) * t.k * 2 + 1024; }
constexpr int64_t kMaxSharedBytes = 227 * 1024;  // a block's shared memory on sm_90 (sm_80: 163 KiB)

class Emitter {
 public:
  static constexpr int64_t kMmaThreads = 256;  // a tensor-core tile's block: 8 warps

  explicit Emitter(const Kernel& k) : k_(k), nest_(find_gpu_nest(k, kBackend)) {}

  const std::vector<CudaTensorMap>& tensor_maps() const { return maps_; }

  std::string emit(const std::string& entry) {
    find_mma_gemvs();
    declare_scratch();
    bind_loops();
    if (!mma_gemv_.empty()) {
      line("const long long kiln_mrow = threadIdx.x >> 2;  // an mma GEMV's thread: the row of its products");
      line("const long long kiln_mthr = threadIdx.y * 4 + (threadIdx.x & 3);  // and whose share of the row it takes");
    }
    if (k_.array_tile.any()) {
      emit_tensor_core_tile();
    } else {
      preload_weights();
      body_ += kDependentWait;
      emit_stmts(*nest_.body);
    }

    std::string text = header();
    if (use_f16_) text += "\n" + std::string(kF16Helpers);
    if (use_dequant_) text += "\n" + std::string(kDequantHelpers);
    if (use_small_i2f_) text += "\n" + std::string(kSmallIntHelpers);
    if (use_small_i2f_sub_) text += "\n" + std::string(kSmallIntSubHelpers);
    if (use_bf16_) text += "\n" + std::string(kBF16Helpers);
    if (use_div_) text += "\n" + std::string(kDivHelpers);
    if (use_cast_) text += "\n" + std::string(kCastHelpers);
    if (use_sel_) text += "\n" + std::string(kSelectHelpers);
    if (use_mma_) text += "\n" + std::string(kMmaHelpers);
    if (!mma_gemv_.empty()) text += "\n" + std::string(kMmaGemvHelpers);
    if (!wgmma_helpers_.empty()) text += "\n" + std::string(kWgmmaHelpers) + wgmma_helpers_;
    if (!maps_.empty()) text += "\n" + std::string(kTmaHelpers);
    text += "\nextern \"C\" __global__ void " + std::string(maps_.empty() ? "" : "__launch_bounds__(384, 1) ") + entry +
            "(" + arguments() + ") {\n";
    return text + (k_.array_tile.any() ? kDependentWait : kDependentLaunch) + body_ + "}\n";
  }

 private:
  // --- The function around the statements ---

  std::string header() {
    std::string text = "// kiln kernel " + comment_text(k_.name) + "\n";
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const BufferDecl& b = k_.buffers[i];
      text += "//   buf" + std::to_string(i) + " = " + comment_text(b.name) + ": " + std::string(dtype_name(b.dtype)) +
              " " + std::string(memscope_name(b.scope)) + (b.output ? " out" : "") + "\n";
    }
    for (size_t j = 0; j < k_.params.size(); ++j)
      text += "//   param" + std::to_string(j) + " = " + comment_text(k_.params[j]) + "\n";
    return text;
  }

  // Global buffers the kernel never stores to are const, so loads can take the
  // read-only path.
  // Buffers the kernel only reads are `const T*`, not `const T* __restrict__`:
  // NVVM makes loads through the latter read-only (ld.global.nc), and ptxas
  // issued those before griddepcontrol.wait, so a kernel read what the one
  // before it had not yet written (a replayed deps:20 with new inputs gave
  // wrong results once its steps got shorter; H100, session 12, run 68). The
  // buffers it stores to keep __restrict__, which is what tells the compiler
  // that those stores do not change what the reads see. Immutable buffers
  // (model weights: no kernel writes them) are `const T* __restrict__`: their
  // loads may go before the wait, which lets a GEMV start reading its weights
  // while the kernel before it finishes.
  std::string arguments() {
    std::set<int> stored;
    collect_stores(k_.body->body, &stored);
    std::string args;
    for (int i : k_.global_buffers()) {
      if (!args.empty()) args += ", ";
      std::string type = storage_type(k_.buffers[i].dtype);
      if (stored.count(i))
        args += type + "* __restrict__ ";
      else
        args += "const " + type + (k_.buffers[i].immutable ? "* __restrict__ " : "* ");
      args += buffer_name(i);
    }
    for (size_t j = 0; j < k_.params.size(); ++j)
      args += (args.empty() ? "" : ", ") + std::string("long long param") + std::to_string(j);
    for (size_t m = 0; m < maps_.size(); ++m)
      args += (args.empty() ? "" : ", ") + std::string("const __grid_constant__ kiln_tmap kiln_tma") + std::to_string(m);
    return args;
  }

  static void collect_stores(const std::vector<Stmt>& stmts, std::set<int>* out) {
    for (const Stmt& s : stmts) {
      if (s->kind == StmtKind::Store) out->insert(s->buffer);
      collect_stores(s->body, out);
    }
  }

  // Local buffers are per-thread arrays; shared ones one per block.
  void declare_scratch() {
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const BufferDecl& b = k_.buffers[i];
      if (b.scope == MemScope::Global) continue;
      if (b.size < 0) fail(k_, std::string(memscope_name(b.scope)) + " buffer '" + b.name + "' has a negative size");
      std::string decl = std::string(b.scope == MemScope::Shared ? "__shared__ " : "") + storage_type(b.dtype) + " " +
                         buffer_name(int(i)) + "[" + std::to_string(std::max<int64_t>(b.size, 1)) + "];";
      line(decl + "  // " + comment_text(b.name));
    }
    if (!mma_gemv_.empty())
      line("__shared__ float kiln_mma_sum[" + std::to_string(64 * mma_gemv_.size()) +
           "];  // GEMV rows on the tensor cores: each warp's 8 sums, for each GEMV");
    if (nest_.allreduce_threads == 0) return;
    bool along_x = nest_.allreduce_axis == 0;
    if (along_x && nest_.allreduce_threads % 32 && (32 % nest_.allreduce_threads || nest_.threads_per_block() % 32))
      fail(k_, "an allreduce along x needs whole warps, or a power of two threads under 32 in blocks of whole warps");
    if (along_x && nest_.allreduce_threads <= 32) return;  // shuffles alone
    int64_t size = along_x ? nest_.threads_per_block() / 32 : nest_.threads_per_block();
    for (ValType t : nest_.allreduce_types)
      line("__shared__ " + c_type(t) + " " + scratch(t) + "[" + std::to_string(size) + "];  // " +
           (along_x ? "a partial result per warp" : "a partial result per thread") + ", for allreduce");
  }

  static std::string c_type(ValType t) { return t == ValType::f32 ? "float" : "int"; }
  static std::string scratch(ValType t) { return "kiln_red_" + std::string(valtype_name(t)); }

  // Outermost first, so that an inner loop's name shadows an outer one's.
  void bind_loops() {
    for (const GpuLoop& l : nest_.loops) {
      std::string index = l.stmt->loop == LoopKind::GpuBlock ? "blockIdx." : "threadIdx.";
      line("const long long " + declare(l.stmt->var) + " = " + index + "xyz"[l.axis] + ";");
    }
  }

  // --- Names ---

  std::string buffer_name(int i) { return "buf" + std::to_string(i); }

  const BufferDecl& buffer(int i) {
    if (i < 0 || i >= int(k_.buffers.size())) fail(k_, "buffer index " + std::to_string(i) + " out of range");
    return k_.buffers[i];
  }

  int param_index(const std::string& name) {
    for (size_t j = 0; j < k_.params.size(); ++j)
      if (k_.params[j] == name) return int(j);
    return -1;
  }

  // A loop variable comes into scope. It keeps its IR name where that is a
  // safe C name not already in scope (so no C shadowing ever hides a name the
  // IR still means), and gets a fresh one otherwise.
  std::string declare(const std::string& name) {
    if (param_index(name) >= 0) fail(k_, "loop variable '" + name + "' has the name of a parameter");
    bool taken = false;
    for (const auto& v : scope_) taken = taken || v.second == name;
    std::string c = is_safe_name(name) && !taken ? name : "kiln_v" + std::to_string(fresh_++);
    scope_.emplace_back(name, c);
    return c;
  }

  // Params first, then the innermost loop of that name, as the LLVM emitter.
  std::string var_name(const std::string& name) {
    if (int j = param_index(name); j >= 0) return "param" + std::to_string(j);
    for (auto it = scope_.rbegin(); it != scope_.rend(); ++it)
      if (it->first == name) return it->second;
    fail(k_, "variable '" + name + "' is neither a parameter nor an enclosing loop variable");
  }

  // --- Statements ---

  void line(const std::string& s) { body_ += std::string(2 * indent_, ' ') + s + "\n"; }

  void emit_stmts(const std::vector<Stmt>& stmts) {
    for (size_t i = 0; i < stmts.size(); ++i) {
      auto m = mma_gemv_.find(stmts[i].get());
      if (m == mma_gemv_.end()) {
        flush_mma_sums();
        emit_stmt(*stmts[i]);
        continue;
      }
      emit_mma_gemv(m->second);
      i += 2;  // its loop and its allreduce
    }
    flush_mma_sums();
  }

  // The block's mma GEMVs since the last flush (emit_mma_gemv) hold their
  // warps' sums in registers: all are stored to shared memory here, behind
  // one barrier, then each thread adds its row's 8 in order. (Each GEMV has
  // its own 64 floats, and a thread's body runs once, so nothing is written
  // again after it.)
  struct MmaPending {
    std::string acc;
    int64_t region = 0;
    std::string sum;  // the warp's sum of its 8 rows (lanes 4g hold row g's)
  };
  std::vector<MmaPending> mma_pending_;
  int64_t mma_regions_ = 0;  // the GEMVs given their 64 floats so far
  void flush_mma_sums() {
    if (mma_pending_.empty()) return;
    body_ += "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800\n";
    for (const MmaPending& p : mma_pending_)
      line("if ((threadIdx.x & 3) == 0) kiln_mma_sum[" + std::to_string(p.region) +
           " + threadIdx.y * 8 + (threadIdx.x >> 2)] = " + p.sum + ";");
    line("__syncthreads();  // the warps' sums of the mma GEMVs above");
    for (const MmaPending& p : mma_pending_) {
      const std::string base = "kiln_mma_sum[" + std::to_string(p.region) + " + ";
      line(p.acc + " = " + base + "threadIdx.y];");
      line("for (int kiln_w = 1; kiln_w < 8; ++kiln_w) " + p.acc + " += " + base + "kiln_w * 8 + threadIdx.y];");
    }
    body_ += "#endif\n";
    mma_pending_.clear();
  }

  void emit_stmt(const StmtNode& s) {
    switch (s.kind) {
      case StmtKind::For: return emit_for(s);
      case StmtKind::Store: return emit_store(s);
      case StmtKind::Block: return emit_stmts(s.body);
      case StmtKind::If:
        line("if (" + full(s.cond) + ") {");
        open_.insert(&s);
        emit_nested(s.body);
        open_.erase(&s);
        return line("}");
      case StmtKind::AllReduce: return emit_allreduce(s);
    }
    fail(k_, "unknown statement kind");
  }

  void emit_nested(const std::vector<Stmt>& stmts) {
    ++indent_;
    emit_stmts(stmts);
    --indent_;
  }

  // f32 sums in f32, max/min as fmaxf/fminf (a NaN operand yields the other),
  // i32 sums wrap.
  static std::string combine(BinOp op, ValType t, const std::string& a, const std::string& b) {
    bool f = t == ValType::f32;
    switch (op) {
      case BinOp::Max: return (f ? "fmaxf(" : "max(") + a + ", " + b + ")";
      case BinOp::Min: return (f ? "fminf(" : "min(") + a + ", " + b + ")";
      default: return f ? a + " + " + b : "(int)((unsigned)" + a + " + (unsigned)" + b + ")";
    }
  }

  // Along x: a butterfly of shuffles within each warp (within each aligned
  // group of n lanes where n < 32: a row of an attention head's 8 lanes),
  // then every thread of a row combines its row's warps' partials in the same
  // order, so all hold the same value (a row of one warp needs no more).
  // Along y or z: each thread leaves its partial in shared memory and
  // combines those of its column in order.
  void emit_allreduce(const StmtNode& s) {
    ValType t = valtype_of(buffer(s.buffer).dtype);
    std::string acc = buffer_name(s.buffer) + "[0]", red = scratch(t);
    int64_t n = nest_.allreduce_threads;
    line("{  // allreduce " + comment_text(buffer(s.buffer).name) + " " + std::string(binop_name(s.binop)) +
         " over " + comment_text(s.var) + " (axis " + "xyz"[nest_.allreduce_axis] + ")");
    ++indent_;
    line(c_type(t) + " kiln_r = " + acc + ";");
    if (nest_.allreduce_axis == 0) {
      line("for (int kiln_o = " + std::to_string(std::min<int64_t>(n, 32) / 2) + "; kiln_o > 0; kiln_o >>= 1)");
      line("  kiln_r = " + combine(s.binop, t, "kiln_r", "__shfl_xor_sync(0xffffffffu, kiln_r, kiln_o)") + ";");
      if (n > 32) {
        std::string warps = std::to_string(n / 32);
        bool rows = nest_.threads_per_block() > n;
        std::string first = rows ? "kiln_row" : "0";
        if (rows) line("const int kiln_row = (threadIdx.z * blockDim.y + threadIdx.y) * " + warps + ";");
        line("if ((threadIdx.x & 31u) == 0u) " + red + "[" + (rows ? "kiln_row + " : "") + "(threadIdx.x >> 5)] = kiln_r;");
        line("__syncthreads();");
        line("kiln_r = " + red + "[" + first + "];");
        line("for (int kiln_w = 1; kiln_w < " + warps + "; ++kiln_w) kiln_r = " +
             combine(s.binop, t, "kiln_r", red + "[" + (rows ? "kiln_row + " : "") + "kiln_w]") + ";");
        line("__syncthreads();  // the next allreduce reuses the scratch");
      }
    } else {
      // Along y or z, a column's threads lie `stride` apart in the block's
      // linear order. Where a warp holds several of them (stride a power of
      // two under 32, the axis filling whole warps), shuffles combine those
      // first; then the column's groups (a warp each, or a thread each where
      // stride >= 32) are combined in shared memory: by halves, a barrier a
      // round, where their number is a power of two, else each thread reads
      // them all. (A decode step's P x V, 16 columns by 64 parts: 5 rounds
      // over 32 warps instead of 64 reads a thread.)
      int64_t stride = nest_.allreduce_stride();
      bool shuffle = stride < 32 && 32 % stride == 0 && (stride * n) % 32 == 0;
      int64_t per_group = shuffle ? 32 / stride : 1, groups = n / per_group, step = per_group * stride;
      std::string mine = nest_.allreduce_axis == 1 ? "threadIdx.y" : "threadIdx.z";
      if (shuffle)
        line("for (int kiln_o = 16; kiln_o >= " + std::to_string(stride) + "; kiln_o >>= 1) kiln_r = " +
             combine(s.binop, t, "kiln_r", "__shfl_xor_sync(0xffffffffu, kiln_r, kiln_o)") + ";");
      if (groups > 1) {
        std::string at = std::to_string(step);
        line("const int kiln_l = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;");
        line("const int kiln_c = kiln_l - (int)" + mine + " * " + std::to_string(stride) + ";  // this column's first thread");
        line(red + "[kiln_l] = kiln_r;");
        line("__syncthreads();");
        if ((groups & (groups - 1)) == 0) {
          line("const int kiln_g = (int)" + mine + " / " + std::to_string(per_group) + ";  // this thread's group");
          line("for (int kiln_h = " + std::to_string(groups / 2) + "; kiln_h > 0; kiln_h >>= 1) {");
          line("  if (kiln_g < kiln_h) " + red + "[kiln_l] = kiln_r = " +
               combine(s.binop, t, "kiln_r", red + "[kiln_l + kiln_h * " + at + "]") + ";");
          line("  __syncthreads();");
          line("}");
          line("kiln_r = " + red + "[kiln_c];");
        } else {
          line("kiln_r = " + red + "[kiln_c];");
          line("for (int kiln_j = 1; kiln_j < " + std::to_string(groups) + "; ++kiln_j) kiln_r = " +
               combine(s.binop, t, "kiln_r", red + "[kiln_c + kiln_j * " + at + "]") + ";");
        }
        line("__syncthreads();  // the next allreduce reuses the scratch");
      }
    }
    line(acc + " = kiln_r;");
    --indent_;
    line("}");
  }

  // The IR evaluates an extent once, before the loop: one that loads is kept
  // in a constant, since the body may store to what it reads.
  void emit_for(const StmtNode& s) {
    std::string extent = full(s.extent);
    if (has_load(s.extent)) {
      std::string end = "kiln_end" + std::to_string(fresh_++);
      line("const long long " + end + " = " + extent + ";");
      extent = end;
    }
    std::vector<const ExprNode*> vectors = vector_loads(s);
    std::vector<const ExprNode*> packed = packed_dequant(s);
    std::string v = declare(s.var);
    if (s.loop == LoopKind::Unrolled) line("#pragma unroll");
    // A serial loop of a symbolic trip count with no loop inside (a decode
    // step's pass over its cache, a thread's share of it) goes 4 iterations
    // a step, so that 4 iterations' loads are in flight at once.
    bool leaf = true;
    for (const Stmt& b : s.body) visit(b, [&](const Stmt& st) { leaf &= st->kind != StmtKind::For; });
    if (s.loop == LoopKind::Serial && s.extent->kind != ExprKind::Const && leaf) line("#pragma unroll 4");
    line("for (long long " + v + " = 0; " + v + " < " + extent + "; ++" + v + ") {");
    open_.insert(&s);
    emit_nested(s.body);
    open_.erase(&s);
    line("}");
    scope_.pop_back();
    for (const ExprNode* load : vectors) vector_element_.erase(load);
    for (const ExprNode* d : packed) packed_dequant_.erase(d);
  }

  // A 4-bit weight's group in an unrolled loop of 32 (GGUF Q4_0: element v
  // is the low nibble of byte v of a 16-byte piece for v < 16, the high
  // nibble of byte v - 16 after), dequantized as round<f16>((q - zero) *
  // scale) (dequant_f16): all 32 are dequantized before the loop two at a
  // time, a nibble pair into f16 pairs by one mask (0x6400 | q is 1024 + q),
  // then one f16x2 subtraction and one f16x2 multiplication, the same
  // roundings as the scalar helper's. The body takes its element from the
  // pairs (emit_round). Which nibble each v takes is checked by
  // evaluating the IR's own expression of q for every v and byte value.
  // Returns the dequantizations (their products) so computed.
  // `natural`: word i holds elements (2i, 2i + 1) instead (the pairs an mma
  // GEMV's f16_pair takes), bytes 2w and 2w + 1 side by side by one byte
  // permute (f16_pair takes them as words, emit_round as elements).
  std::vector<const ExprNode*> packed_dequant(const StmtNode& loop, bool natural = false) {
    std::vector<const ExprNode*> done;
    if (loop.loop != LoopKind::Unrolled || loop.extent->kind != ExprKind::Const || loop.extent->ival != 32) return done;
    std::vector<const ExprNode*> rounds;
    std::function<void(const Expr&)> find = [&](const Expr& e) {
      if (!e) return;
      if (e->kind == ExprKind::Round && e->round_to == f16) rounds.push_back(e.get());
      for (const Expr& a : e->args) find(a);
    };
    for (const Stmt& b : loop.body)
      visit(b, [&](const Stmt& st) {
        find(st->index);
        find(st->value);
        find(st->cond);
        find(st->extent);
      });
    for (const ExprNode* r : rounds) {
      const Expr& a = r->args[0];
      if (packed_dequant_.count(a.get())) continue;
      std::optional<DequantParts> d = dequant_parts(a);
      if (!d || uses_var(d->scale, loop.var)) continue;
      std::optional<std::string> bytes = nibble_source(d->q, loop.var);
      if (!bytes) continue;
      const std::string dq = "kiln_dq" + std::to_string(fresh_++);
      use_f16_ = use_dequant_ = true;
      line("unsigned " + dq + "[16];  // the 32 dequantized weights, two a word (emit_round takes element v's)");
      line("{");
      ++indent_;
      line("const unsigned kiln_zz = " + zero_bits(d->zero) + "u * 0x10001u, kiln_ss = (unsigned)" + scale_bits(*d) +
           " * 0x10001u;");
      line("#pragma unroll");
      line("for (int kiln_w = 0; kiln_w < 4; ++kiln_w) {");
      line("  const unsigned kiln_b = reinterpret_cast<const unsigned*>(" + *bytes + ")[kiln_w];");
      if (natural) {
        line("  const unsigned kiln_p0 = __byte_perm(kiln_b, 0u, 0x1100u), kiln_p1 = __byte_perm(kiln_b, 0u, 0x3322u);");
        line("  " + dq + "[2 * kiln_w] = kiln_dequant_f16x2(kiln_p0, kiln_zz, kiln_ss);");
        line("  " + dq + "[2 * kiln_w + 1] = kiln_dequant_f16x2(kiln_p1, kiln_zz, kiln_ss);");
        line("  " + dq + "[2 * kiln_w + 8] = kiln_dequant_f16x2(kiln_p0 >> 4, kiln_zz, kiln_ss);");
        line("  " + dq + "[2 * kiln_w + 9] = kiln_dequant_f16x2(kiln_p1 >> 4, kiln_zz, kiln_ss);");
      } else {
        line("  " + dq + "[4 * kiln_w] = kiln_dequant_f16x2(kiln_b, kiln_zz, kiln_ss);");
        line("  " + dq + "[4 * kiln_w + 1] = kiln_dequant_f16x2(kiln_b >> 8, kiln_zz, kiln_ss);");
        line("  " + dq + "[4 * kiln_w + 2] = kiln_dequant_f16x2(kiln_b >> 4, kiln_zz, kiln_ss);");
        line("  " + dq + "[4 * kiln_w + 3] = kiln_dequant_f16x2(kiln_b >> 12, kiln_zz, kiln_ss);");
      }
      line("}");
      --indent_;
      line("}");
      packed_dequant_[a.get()] = {dq, loop.var, natural};
      done.push_back(a.get());
    }
    return done;
  }

  // The byte array (a vector load's pieces) an integer expression `q` of the
  // loop variable takes Q4_0's nibbles from: q's every load is the same
  // element of one 16-byte piece of a u8 buffer, that element is v % 16, and
  // q is that byte's low nibble for v < 16 and its high nibble after, for
  // every byte value. Empty otherwise.
  std::optional<std::string> nibble_source(const Expr& q, const std::string& v) {
    std::vector<const ExprNode*> loads;
    std::function<void(const Expr&)> find = [&](const Expr& e) {
      if (e->kind == ExprKind::Load) loads.push_back(e.get());
      for (const Expr& a : e->args) find(a);
    };
    find(q);
    if (loads.empty()) return std::nullopt;
    auto first = vector_element_.find(loads[0]);
    if (first == vector_element_.end() || !first->second.element || buffer(loads[0]->buffer).dtype != u8)
      return std::nullopt;
    for (const ExprNode* l : loads) {
      auto it = vector_element_.find(l);
      if (it == vector_element_.end() || it->second.array != first->second.array ||
          !equal(it->second.element, first->second.element))
        return std::nullopt;
    }
    for (int64_t i = 0; i < 32; ++i) {
      std::optional<int64_t> element = evaluate_int(first->second.element, {{v, i}}, 0);
      if (element != i % 16) return std::nullopt;
      for (int64_t b = 0; b < 256; ++b)
        if (evaluate_int(q, {{v, i}}, b) != (i < 16 ? b & 15 : b >> 4)) return std::nullopt;
    }
    return first->second.array;
  }

  // An integer or bool expression's value (i32 arithmetic wraps, as emitted),
  // every load reading `loaded`; empty where it holds anything else.
  static std::optional<int64_t> evaluate_int(const Expr& e, const std::map<std::string, int64_t>& vars,
                                             int64_t loaded) {
    if (e->type == ValType::f32) return std::nullopt;
    if (e->kind == ExprKind::Load) return loaded;  // (its index is the vector load's)
    auto wrap = [&](int64_t x) { return e->type == ValType::i32 ? int64_t(int32_t(uint32_t(uint64_t(x)))) : x; };
    std::vector<int64_t> a;
    for (const Expr& x : e->args) {
      std::optional<int64_t> r = evaluate_int(x, vars, loaded);
      if (!r) return std::nullopt;
      a.push_back(*r);
    }
    switch (e->kind) {
      case ExprKind::Const: return e->ival;
      case ExprKind::Var: {
        auto it = vars.find(e->name);
        return it == vars.end() ? std::nullopt : std::optional<int64_t>(it->second);
      }
      case ExprKind::Load: break;  // returned above, before its index
      case ExprKind::Unary:
        if (e->unop == UnOp::Not) return int64_t(a[0] == 0);
        if (e->unop == UnOp::Neg) return wrap(-a[0]);
        return std::nullopt;
      case ExprKind::Binary:
        switch (e->binop) {
          case BinOp::Add: return wrap(a[0] + a[1]);
          case BinOp::Sub: return wrap(a[0] - a[1]);
          case BinOp::Mul: return wrap(a[0] * a[1]);
          case BinOp::Div: return a[1] == 0 ? 0 : wrap(a[0] / a[1]);
          case BinOp::Mod: return a[1] == 0 ? 0 : wrap(a[0] % a[1]);
          case BinOp::Max: return std::max(a[0], a[1]);
          case BinOp::Min: return std::min(a[0], a[1]);
          case BinOp::CmpLt: return int64_t(a[0] < a[1]);
          case BinOp::CmpEq: return int64_t(a[0] == a[1]);
          case BinOp::And: return int64_t(a[0] && a[1]);
          case BinOp::Or: return int64_t(a[0] || a[1]);
        }
        return std::nullopt;
      case ExprKind::Select: return a[0] ? a[1] : a[2];
      case ExprKind::Cast:
        if (e->args[0]->type == ValType::f32) return std::nullopt;
        return e->type == ValType::b1 ? int64_t(a[0] != 0) : wrap(a[0]);
      case ExprKind::Round:
        if (e->round_to == u8) return int64_t(uint8_t(uint64_t(a[0])));
        if (e->round_to == i8) return int64_t(int8_t(uint8_t(uint64_t(a[0]))));
        return std::nullopt;
    }
    return std::nullopt;
  }

  // The loads of an unrolled loop that read whole pieces of a buffer
  // (find_vector_loads) are read before the loop in 4-, 8- or 16-byte loads,
  // and the body takes its element of them. Returns the loads so read. Up to
  // 128 bytes: a q4 group's 32 f32 activations (and a norm's gains) in 8
  // loads, not 32 (136 -> 40 loads a thread in TinyLlama's f32 gate/up GEMV).
  static constexpr int64_t kVectorBytes = 128;
  std::vector<const ExprNode*> vector_loads(const StmtNode& loop) {
    std::vector<const ExprNode*> done;
    std::vector<std::string> arrays;  // per load: the array holding its pieces
    for (const VectorLoad& v : find_vector_loads(k_, loop, false, kVectorBytes)) {
      const BufferDecl& b = buffer(v.load->buffer);
      if (v.first == arrays.size()) {
        arrays.push_back("kiln_vec" + std::to_string(fresh_++));
        const char* piece = piece_type(v.bytes);
        int64_t pieces = std::max<int64_t>(1, v.bytes / 16);
        line(std::string(piece) + " " + arrays.back() + "[" + std::to_string(pieces) + "];  // " +
             std::to_string(v.elems) + " elements of " + comment_text(b.name));
        auto pre = preload_.find(v.load);
        for (int64_t p = 0; p < pieces; ++p)
          line(arrays.back() + "[" + std::to_string(p) + "] = " +
               (pre != preload_.end()
                    ? pre->second.array + "[" + preload_index(pre->second, p) + "]"
                    : "reinterpret_cast<const " + std::string(piece) + "*>(" + buffer_name(v.load->buffer) + " + (" +
                          full(v.base) + "))[" + std::to_string(p) + "]") +
               ";");
      } else {
        arrays.push_back(arrays[v.first]);
      }
      vector_element_[v.load] = {"reinterpret_cast<const " + std::string(storage_type(b.dtype)) + "*>(" +
                                 arrays.back() + ")", loop.var, v.element, arrays.back()};
      done.push_back(v.load);
    }
    return done;
  }

  // --- GEMV rows on the tensor cores ---
  //
  // A GEMV as the decode step's schedule spells it: a block of 8 rows (y),
  // a warp a row, its 32 threads (x) each summing a share of the row's
  // products a * b in unrolled loops (o, then v of a constant extent that 8
  // divides, maybe under a condition on o and the thread), then an
  // allreduce over x. The products' operands hold f16 values exactly
  // (half_product): a dequantized weight that moves with the row, and x,
  // which does not. On sm_80 and up, mma.sync m16n8k16 takes them instead.
  // Warp w takes the shares of the threads 4w..4w+3 of every row: lane l
  // plays thread 4w + l % 4 of row g = l / 4, and its 8 products a step go
  // to A's rows g and g + 8 as they are (4 words, no copies), B's columns
  // taking x: the even ones row g's elements, the odd ones row g + 8's (the
  // thread picks by g's parity). C[g][even] + C[g + 8][odd] is then row g's
  // sum over the warp's 4 shares; the 8 warps' sums meet in shared memory
  // behind one barrier for all the kernel's GEMVs (flush_mma_sums), and
  // every thread of a row holds its row's, as after the allreduce. Two
  // chains of mmas. Older GPUs keep the loops (#else); KILN_CUDA_MMA_GEMV=0
  // keeps them everywhere.
  //
  // H100 (session 21, run 107), TinyLlama decode tok/s: q4 1060 -> 1128, q8
  // 1060 -> 1092 (f16 rows, 128 lanes a row, keep their loops); SASS a
  // thread (q4, layer 0; q/k/v layer 1): o 464 -> 304, gate/up 1136 -> 792,
  // down 1208 -> 648, q/k/v 696 -> 440. Storing the warps' sums at the
  // flush instead of after each GEMV (nothing stored between a gate and an
  // up, which then share x * g: q4 gate/up 792 -> 736) gave q4 1113 -> 1181,
  // q8 1079 -> 1097 (session 22, run 108). Session 20's form (A = x in all
  // 16 rows, copied for every mma, two barriers a GEMV) was 5-9% slower than
  // the loops; a
  // warp owning 8 whole rows (4 lanes a row, no barrier: 8 times fewer
  // warps) halved the decode (run 106: q4 478, f16 300 tok/s).
  struct MmaGemv {
    const StmtNode* outer = nullptr;  // unrolled for o
    const StmtNode* guard = nullptr;  // a condition inside it, around inner (or null)
    const StmtNode* inner = nullptr;  // unrolled for v: acc[0] += w * x
    const StmtNode* reduce = nullptr;  // the allreduce after it
    int acc = -1;
    Expr w, x;                         // x does not move with the row (w may)
    std::string row, thr;              // the y and x thread loops' variables
  };
  std::map<const StmtNode*, MmaGemv> mma_gemv_;  // by its acc[0] = 0
  std::map<const StmtNode*, const MmaGemv*> mma_outer_;  // by their outer loops

  void find_mma_gemvs() {
    if (!switches().mma_gemv || !nest_.body || nest_.allreduce_threads != 32 || nest_.allreduce_axis != 0 ||
        nest_.block_threads != std::array<int64_t, 3>{32, 8, 1})
      return;
    std::string row, thr;
    for (const GpuLoop& l : nest_.loops)
      if (l.stmt->loop == LoopKind::GpuThread) (l.axis == 0 ? thr : row) = l.stmt->var;
    if (row.empty() || thr.empty()) return;
    std::function<void(const std::vector<Stmt>&)> scan = [&](const std::vector<Stmt>& stmts) {
      for (size_t i = 0; i < stmts.size(); ++i) {
        if (stmts[i]->kind == StmtKind::Block) scan(stmts[i]->body);
        if (i + 2 >= stmts.size()) continue;
        const StmtNode &init = *stmts[i], &outer = *stmts[i + 1], &reduce = *stmts[i + 2];
        if (init.kind != StmtKind::Store || reduce.kind != StmtKind::AllReduce || reduce.binop != BinOp::Add ||
            reduce.buffer != init.buffer || reduce.var != thr || outer.kind != StmtKind::For ||
            outer.loop != LoopKind::Unrolled || outer.extent->kind != ExprKind::Const || outer.body.size() != 1)
          continue;
        const BufferDecl& acc = buffer(init.buffer);
        if (acc.scope != MemScope::Local || acc.dtype != f32 || init.value->kind != ExprKind::Const ||
            init.value->fval != 0.0)
          continue;
        MmaGemv m;
        m.outer = &outer;
        const StmtNode* in = outer.body[0].get();
        if (in->kind == StmtKind::If && in->body.size() == 1) {
          if (uses_var(in->cond, row) || has_load(in->cond)) continue;
          m.guard = in;
          in = in->body[0].get();
        }
        if (in->kind != StmtKind::For || in->loop != LoopKind::Unrolled || in->extent->kind != ExprKind::Const ||
            in->extent->ival % 8 != 0)
          continue;
        Stmt inner_stmt;
        for (const Stmt& c : (m.guard ? m.guard->body : outer.body))
          if (c.get() == in) inner_stmt = c;
        std::optional<HalfProduct> p = half_product(k_, inner_stmt);
        if (!p || p->dtype != f16 || p->acc != init.buffer) continue;
        // One operand may move with the row (a weight); where neither does (a
        // norm's sum of squares), every row's sum is the same.
        bool a_row = uses_var(p->a, row), b_row = uses_var(p->b, row);
        if (a_row && b_row) continue;
        m.inner = in;
        m.reduce = &reduce;
        m.acc = init.buffer;
        m.w = a_row ? p->a : p->b;
        m.x = a_row ? p->b : p->a;
        m.row = row;
        m.thr = thr;
        mma_outer_[&outer] = &(mma_gemv_[&init] = m);
      }
    };
    scan(*nest_.body);
  }

  // The f16 pair (element lo, element lo + 1) of `e`, an f16-exact value of
  // the loop variable `v`, lo (even) in the low half; `lo` names a C
  // variable. For emit_mma_gemv (which turns on the f16 helpers).
  std::string f16_pair(const Expr& e, const std::string& v, const std::string& lo) {
    // A q4 group's dequantized words (packed_dequant, natural): word lo / 2.
    if (e->kind == ExprKind::Round && e->round_to == f16)
      if (auto p = packed_dequant_.find(e->args[0].get()); p != packed_dequant_.end() && p->second.loop == v) {
        if (!p->second.natural) fail(k_, "an mma GEMV's dequantized pairs in the other order");
        return p->second.array + "[" + lo + " / 2]";
      }
    // An f16 load's 16-byte pieces: word k holds elements 2k and 2k + 1.
    auto word = [&](const Expr& l) -> std::optional<std::string> {
      if (!f16_load(l)) return std::nullopt;
      auto it = vector_element_.find(l.get());
      if (it == vector_element_.end() || it->second.element || it->second.loop != v) return std::nullopt;
      return "reinterpret_cast<const unsigned*>(" + it->second.pieces + ")[" + lo + " / 2]";
    };
    if (std::optional<std::string> w = word(e)) return *w;
    // A folded norm's x * g, rounded to f16: f16's own multiplication, of
    // both elements at once.
    if (e->kind == ExprKind::Round && e->round_to == f16 && e->args[0]->kind == ExprKind::Binary &&
        e->args[0]->binop == BinOp::Mul) {
      std::optional<std::string> a = word(e->args[0]->args[0]), b = word(e->args[0]->args[1]);
      if (a && b) return "kiln_hmul2(" + *a + ", " + *b + ")";
    }
    // An 8-bit integer weight (q8): bytes lo % 4 and lo % 4 + 1 of word
    // lo / 4 next to 0x64 are 1024 + the byte (shifted by 128 where signed),
    // less that in one subtraction: exact.
    const Expr& c = e->kind == ExprKind::Round && e->round_to == f16 ? e->args[0] : e;
    if (c->kind == ExprKind::Cast && c->type == ValType::f32 && c->args[0]->kind == ExprKind::Load) {
      const Expr& l = c->args[0];
      auto it = vector_element_.find(l.get());
      DType t = buffer(l->buffer).dtype;
      if ((t == i8 || t == u8) && it != vector_element_.end() && !it->second.element && it->second.loop == v)
        return std::string(t == i8 ? "kiln_i8_pair" : "kiln_u8_pair") + "(reinterpret_cast<const unsigned*>(" +
               it->second.pieces + ")[" + lo + " / 4], " + lo + " % 4 / 2)";
    }
    // Anything else: both values in f32, converted together (exactly).
    size_t n = scope_.size();
    std::string hi = "kiln_e" + std::to_string(fresh_++);
    line("const long long " + hi + " = " + lo + " + 1;");
    scope_.emplace_back(v, lo);
    std::string first = full(e);
    scope_.back().second = hi;
    std::string second = full(e);
    scope_.resize(n);
    return "kiln_f32x2_to_f16x2(" + first + ", " + second + ")";
  }

  void emit_mma_gemv(const MmaGemv& m) {
    const std::string acc = buffer_name(m.acc) + "[0]";
    const int64_t width = m.inner->extent->ival, pairs = width / 2;
    use_mma_ = use_f16_ = true;
    // The warp's sum of its 8 rows, stored at the flush (flush_mma_sums).
    const std::string sum = "kiln_ms" + std::to_string(fresh_++);
    body_ += "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800\n";
    line("float " + sum + ";");
    body_ += "#endif\n";
    line("{  // " + comment_text(buffer(m.acc).name) + ": the block's 8 rows on the tensor cores (emit_mma_gemv)");
    body_ += "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800\n";
    ++indent_;
    // Two chains of mmas (even and odd steps of 16 products).
    line("float kiln_c[4] = {0.0f, 0.0f, 0.0f, 0.0f}, kiln_c2[4] = {0.0f, 0.0f, 0.0f, 0.0f};");
    // The thread's row g = lane / 4: whose columns of B its x fills, even or odd.
    line("const bool kiln_odd = (threadIdx.x >> 2) & 1;");
    line("{");
    ++indent_;
    size_t n = scope_.size();
    scope_.emplace_back(m.row, "kiln_mrow");
    scope_.emplace_back(m.thr, "kiln_mthr");
    // The condition (a row's last partial step of its threads' shares) where
    // some thread's share may fail it: the steps before, where every
    // thread's holds, go without it.
    const int64_t steps = m.outer->extent->ival;
    int64_t sure = m.guard ? 0 : steps;
    for (bool all = true; all && sure < steps; sure += all)
      for (int64_t t = 0; t < nest_.allreduce_threads && all; ++t)
        all = evaluate_int(m.guard->cond, {{m.outer->var, sure}, {m.thr, t}}, 0) == 1;
    auto emit_steps = [&](int64_t begin, int64_t end, bool guarded) {
      if (begin >= end) return;
      size_t outer_scope = scope_.size();
      std::string o = declare(m.outer->var);
      line("#pragma unroll");
      line("for (long long " + o + " = " + std::to_string(begin) + "; " + o + " < " + std::to_string(end) + "; ++" + o +
           ") {");
      ++indent_;
      // Open, so that the loads preloaded inside it (a q4 group's scale) are
      // taken from their registers (load_ref); so is the guard in the steps
      // that go without it, where it holds for every thread.
      open_.insert(m.outer);
      if (m.guard) open_.insert(m.guard);
      std::string fw = "kiln_fw" + std::to_string(fresh_++), fx = "kiln_fx" + std::to_string(fresh_++);
      line("unsigned " + fw + "[" + std::to_string(pairs) + "], " + fx + "[" + std::to_string(pairs) +
           "];  // pairs of w and of x: word p holds elements (2p, 2p + 1)");
      if (guarded) {
        line("if (" + full(m.guard->cond) + ") {");
        ++indent_;
      }
      std::vector<const ExprNode*> vectors = vector_loads(*m.inner);
      std::vector<const ExprNode*> packed = packed_dequant(*m.inner, true);
      line("#pragma unroll");
      line("for (int kiln_p = 0; kiln_p < " + std::to_string(pairs) + "; ++kiln_p) {");
      ++indent_;
      std::string lo = "kiln_e" + std::to_string(fresh_++);
      line("const long long " + lo + " = 2 * kiln_p;");
      line(fw + "[kiln_p] = " + f16_pair(m.w, m.inner->var, lo) + ";");
      line(fx + "[kiln_p] = " + f16_pair(m.x, m.inner->var, lo) + ";");
      --indent_;
      line("}");
      for (const ExprNode* l : vectors) vector_element_.erase(l);
      for (const ExprNode* d : packed) packed_dequant_.erase(d);
      if (guarded) {
        --indent_;
        line("} else {");
        line("  for (int kiln_p = 0; kiln_p < " + std::to_string(pairs) + "; ++kiln_p) " + fw + "[kiln_p] = " + fx +
             "[kiln_p] = 0u;");
        line("}");
      }
      // A's rows g and g + 8 are the thread's own row, elements 8u..8u+7
      // (words 4u..4u+3: rows g, g + 8, g, g + 8 as A's fragment takes them);
      // B's even columns hold x's elements of row g's words (4u, 4u + 2), its
      // odd ones those of row g + 8's (4u + 1, 4u + 3), so C[g][even] +
      // C[g + 8][odd] is the row's sum over the warp's 4 shares, and no
      // register is copied.
      line("#pragma unroll");
      line("for (int kiln_u = 0; kiln_u < " + std::to_string(width / 8) + "; ++kiln_u) {");
      line("  const unsigned kiln_b[2] = {kiln_odd ? " + fx + "[4 * kiln_u + 1] : " + fx + "[4 * kiln_u], kiln_odd ? " +
           fx + "[4 * kiln_u + 3] : " + fx + "[4 * kiln_u + 2]};");
      line("  kiln_mma_f16(kiln_u % 2 ? kiln_c2 : kiln_c, &" + fw + "[4 * kiln_u], kiln_b);");
      line("}");
      open_.erase(m.outer);
      if (m.guard) open_.erase(m.guard);
      --indent_;
      line("}");
      scope_.resize(outer_scope);
    };
    emit_steps(0, sure, false);
    emit_steps(sure, steps, true);
    scope_.resize(n);
    --indent_;
    line("}");
    // Warp w's sums of the 8 rows (C[g][2t] + C[g + 8][2t + 1], over shares
    // 4w..4w+3), stored to shared memory at the flush (flush_mma_sums), after
    // the kernel's last mma GEMV: nothing is stored between two (a gate's and
    // an up's), so the compiler may share their work (the folded norm's x *
    // g). After the barrier each thread adds its row's 8.
    line(sum + " = (kiln_c[0] + kiln_c[3]) + (kiln_c2[0] + kiln_c2[3]);");
    mma_pending_.push_back({acc, 64 * mma_regions_++, sum});
    --indent_;
    body_ += "#else\n";
    ++indent_;
    // The loops as they are (the acc = 0 store first), reading what was
    // preloaded for the mma's threads again as their own.
    std::map<const ExprNode*, Preload> pieces, elements;
    std::function<void(const Expr&)> unload = [&](const Expr& e) {
      if (!e) return;
      if (auto p = preload_.find(e.get()); p != preload_.end()) pieces.insert(*p), preload_.erase(p);
      if (auto p = preload_scalar_.find(e.get()); p != preload_scalar_.end()) elements.insert(*p), preload_scalar_.erase(p);
      for (const Expr& a : e->args) unload(a);
    };
    for (const Stmt& b : m.outer->body)
      visit(b, [&](const Stmt& st) {
        unload(st->index);
        unload(st->value);
        unload(st->cond);
      });
    line(acc + " = 0.0f;");
    std::vector<MmaPending> pending = std::move(mma_pending_);  // not flushed in the loops
    mma_pending_.clear();
    emit_stmt(*m.outer);
    emit_stmt(*m.reduce);
    mma_pending_ = std::move(pending);
    preload_.insert(pieces.begin(), pieces.end());
    preload_scalar_.insert(elements.begin(), elements.end());
    --indent_;
    body_ += "#endif\n";
    line("}");
  }

  // --- Weights read before the wait ---
  //
  // Under programmatic dependent launch a kernel's blocks are resident while
  // the kernel before it still runs, and wait (griddepcontrol.wait) before
  // they touch memory. An immutable buffer (a model's weights: no kernel
  // writes it) may be read before that wait, so its DRAM latency overlaps the
  // previous kernel instead of following it. In unrolled loops of constant
  // extent that enclose nothing but blocks, such loops and conditions on them
  // from the top of the thread's code, the pieces vector_loads() would read of
  // an immutable buffer and the other loads of one (a q4 group's scale) whose
  // index uses only the thread's variables, the params and those loops' are
  // read into registers before the wait, up to kPreloadBytes a thread, and the
  // loop takes them from there. They are plain loads (ld.global): ptxas keeps
  // those before the wait, where it moved read-only ones (ld.global.nc) after
  // it. KILN_CUDA_PRELOAD=0 turns this off. H100, TinyLlama decode (run 97):
  // q8 976 -> 1059 tok/s, q4 968 -> 996, f16 825 -> 848 with 256 bytes
  // (1019, 986, 844 with 128). Prefetching into L2 instead
  // (prefetch.global.L2 a thread) halved the q4 and q8 decodes (run 96).
  static constexpr int64_t kPreloadBytes = 256;

  struct Preload {
    std::string array;                   // the registers holding its pieces
    std::vector<const StmtNode*> loops;  // the loops (and conditions) around its reads, outermost first
    int64_t pieces = 1;                  // 16-byte pieces (or one smaller) an iteration of those loops
  };
  std::map<const ExprNode*, Preload> preload_;         // vector loads
  std::map<const ExprNode*, Preload> preload_scalar_;  // loads of one element
  std::set<const StmtNode*> open_;                      // the loops and conditions being emitted

  void preload_weights() {
    if (!switches().preload) return;
    const int64_t budget = kPreloadBytes;
    std::set<std::string> allowed;
    for (const GpuLoop& l : nest_.loops) allowed.insert(l.stmt->var);
    for (const std::string& p : k_.params) allowed.insert(p);
    int64_t used = 0;
    std::vector<const StmtNode*> path;  // the loops and conditions around
    std::map<std::string, std::string> preloaded;  // preload_key -> the registers holding what it reads
    std::function<void(const std::vector<Stmt>&)> walk = [&](const std::vector<Stmt>& stmts) {
      for (const Stmt& s : stmts) {
        std::set<std::string> outer = allowed;
        for (const StmtNode* l : path)
          if (l->kind == StmtKind::For) outer.insert(l->var);
        if (s->kind == StmtKind::Block) {
          walk(s->body);
          continue;
        }
        if (s->kind == StmtKind::If && only_vars(s->cond, outer)) {
          path.push_back(s.get());
          walk(s->body);
          path.pop_back();
          continue;
        }
        if (s->kind != StmtKind::For || s->loop != LoopKind::Unrolled || s->extent->kind != ExprKind::Const) continue;
        // An mma GEMV's threads read other rows' weights (emit_mma_gemv): its
        // loads are read as that thread, named by kiln_mrow and kiln_mthr.
        size_t scoped = scope_.size();
        if (auto m = mma_outer_.find(s.get()); m != mma_outer_.end()) {
          scope_.emplace_back(m->second->row, "kiln_mrow");
          scope_.emplace_back(m->second->thr, "kiln_mthr");
        }
        std::set<const ExprNode*> vectors;
        std::vector<VectorLoad> found = find_vector_loads(k_, *s, false, kVectorBytes);
        for (size_t i = 0; i < found.size(); ++i) {
          const VectorLoad& v = found[i];
          vectors.insert(v.load);
          const BufferDecl& b = buffer(v.load->buffer);
          // Only the first load of the same pieces reads them (vector_loads()).
          if (!b.immutable || v.first != i || !only_vars(v.base, outer)) continue;
          std::vector<const StmtNode*> around = enclosing(v.base, path);
          int64_t count = iterations(around);
          // The same pieces preloaded for an earlier loop of the same shape (a
          // norm's gain, read by a gate's and an up's sums): taken from there.
          // H100, run 99: q4 decode 1007 -> 1069 tok/s, q8 1084 -> 1064
          // (the budget then goes to other loads), f16 unchanged.
          std::string key = "pieces " + preload_key(v.load->buffer, v.bytes, v.base, around);
          if (auto same = preloaded.find(key); same != preloaded.end()) {
            preload_[v.load] = {same->second, around, std::max<int64_t>(1, v.bytes / 16)};
            continue;
          }
          if (used + count * std::max<int64_t>(v.bytes, 16) > budget) continue;
          used += count * std::max<int64_t>(v.bytes, 16);
          Preload pre{"kiln_pre" + std::to_string(fresh_++), around, std::max<int64_t>(1, v.bytes / 16)};
          line(std::string(piece_type(v.bytes)) + " " + pre.array + "[" + std::to_string(count * pre.pieces) + "];  // " +
               std::to_string(v.elems) + " elements of " + comment_text(b.name) + " an iteration, read before the wait");
          open_preload(around);
          for (int64_t p = 0; p < pre.pieces; ++p) {
            std::string dst = pre.array + "[" + preload_index(pre, p) + "]";
            std::string src = "reinterpret_cast<const char*>(" + buffer_name(v.load->buffer) + " + (" + full(v.base) +
                              ")) + " + std::to_string(16 * p);
            if (v.bytes >= 16)
              line("asm volatile(\"ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\" : \"=r\"(" + dst + ".x), \"=r\"(" + dst +
                   ".y), \"=r\"(" + dst + ".z), \"=r\"(" + dst + ".w) : \"l\"(" + src + "));");
            else if (v.bytes == 8)
              line("asm volatile(\"ld.global.v2.u32 {%0, %1}, [%2];\" : \"=r\"(" + dst + ".x), \"=r\"(" + dst +
                   ".y) : \"l\"(" + src + "));");
            else
              line("asm volatile(\"ld.global.u32 %0, [%1];\" : \"=r\"(" + dst + ") : \"l\"(" + src + "));");
          }
          close_preload(around);
          preload_[v.load] = pre;
          preloaded[key] = pre.array;
        }
        // The loop's other immutable loads, one element each.
        path.push_back(s.get());
        outer.insert(s->var);
        std::function<void(const Expr&)> find = [&](const Expr& e) {
          if (!e) return;
          for (const Expr& a : e->args) find(a);
          if (e->kind != ExprKind::Load || vectors.count(e.get()) || e->args.size() != 1) return;
          const BufferDecl& b = buffer(e->buffer);
          if (b.scope != MemScope::Global || !b.immutable || b.dtype == boolean || !only_vars(e->args[0], outer)) return;
          std::vector<const StmtNode*> around = enclosing(e->args[0], path);
          std::string key = "element " + preload_key(e->buffer, dtype_size(b.dtype), e->args[0], around);
          if (auto same = preloaded.find(key); same != preloaded.end()) {
            preload_scalar_[e.get()] = {same->second, around, 1};
            return;
          }
          int64_t count = iterations(around);
          if (used + 4 * count > budget) return;
          used += 4 * count;
          Preload pre{"kiln_pre" + std::to_string(fresh_++), around, 1};
          std::string ptx = dtype_size(b.dtype) == 1 ? "u8" : dtype_size(b.dtype) == 2 ? "u16" : "u32";
          std::string reg = dtype_size(b.dtype) == 2 ? "h" : "r";
          std::string type = dtype_size(b.dtype) == 1 ? "unsigned int" : storage_type(b.dtype);
          line(type + " " + pre.array + "[" + std::to_string(count) + "];  // " + comment_text(b.name) +
               ", read before the wait");
          open_preload(around);
          std::string dst = pre.array + "[" + preload_index(pre, 0) + "]";
          std::string target = b.dtype == f32 ? "*reinterpret_cast<unsigned int*>(&" + dst + ")" : dst;
          line("asm volatile(\"ld.global." + ptx + " %0, [%1];\" : \"=" + reg + "\"(" + target + ") : \"l\"(" +
               buffer_name(e->buffer) + " + (" + full(e->args[0]) + ")));");
          close_preload(around);
          preload_scalar_[e.get()] = pre;
          preloaded[key] = pre.array;
        };
        for (const Stmt& b : s->body)
          if (b->kind == StmtKind::Store) {
            find(b->index);
            find(b->value);
          }
        walk(s->body);
        path.pop_back();
        scope_.resize(scoped);
      }
    };
    walk(*nest_.body);
  }

  // What a preload reads: the buffer, the bytes an iteration, the index and
  // the conditions, with the loops around named by position and their extents
  // (so that the same data read under another loop of the same shape, a
  // norm's gain read by a gate's and an up's sums, is read once).
  std::string preload_key(int buf, int64_t bytes, const Expr& index, const std::vector<const StmtNode*>& around) {
    std::map<std::string, Expr> rename;
    std::string key = std::to_string(buf) + "/" + std::to_string(bytes);
    size_t n = scope_.size();
    for (const StmtNode* l : around)
      if (l->kind == StmtKind::For) {
        std::string p = "kiln_l" + std::to_string(rename.size());
        rename[l->var] = var(p);
        scope_.emplace_back(p, p);
        key += "/" + std::to_string(l->extent->ival);
      }
    for (const StmtNode* l : around)
      if (l->kind == StmtKind::If) key += "/if " + full(substitute(l->cond, rename));
    key += "/" + full(substitute(index, rename));
    scope_.resize(n);
    return key;
  }

  static const char* piece_type(int64_t bytes) { return bytes == 4 ? "unsigned int" : bytes == 8 ? "uint2" : "uint4"; }

  // Whether `e` loads nothing and uses no variable outside `vars`.
  static bool only_vars(const Expr& e, const std::set<std::string>& vars) {
    if (!e) return true;
    if (e->kind == ExprKind::Load) return false;
    if (e->kind == ExprKind::Var && !vars.count(e->name)) return false;
    for (const Expr& a : e->args)
      if (!only_vars(a, vars)) return false;
    return true;
  }

  // The loops of `path` whose variable `e` or a condition on the path uses,
  // and the path's conditions, outermost first.
  static std::vector<const StmtNode*> enclosing(const Expr& e, const std::vector<const StmtNode*>& path) {
    std::vector<const StmtNode*> around;
    for (const StmtNode* l : path) {
      bool used = l->kind == StmtKind::If || uses_var(e, l->var);
      for (const StmtNode* c : path) used = used || (c->kind == StmtKind::If && uses_var(c->cond, l->var));
      if (used) around.push_back(l);
    }
    return around;
  }

  static int64_t iterations(const std::vector<const StmtNode*>& around) {
    int64_t n = 1;
    for (const StmtNode* l : around)
      if (l->kind == StmtKind::For) n *= l->extent->ival;
    return n;
  }

  void open_preload(const std::vector<const StmtNode*>& around) {
    for (const StmtNode* l : around) {
      if (l->kind == StmtKind::If) {
        line("if (" + full(l->cond) + ") {");
      } else {
        std::string v = declare(l->var);
        line("#pragma unroll");
        line("for (long long " + v + " = 0; " + v + " < " + std::to_string(l->extent->ival) + "LL; ++" + v + ") {");
      }
      ++indent_;
    }
  }

  void close_preload(const std::vector<const StmtNode*>& around) {
    for (auto it = around.rbegin(); it != around.rend(); ++it) {
      --indent_;
      line("}");
      if ((*it)->kind == StmtKind::For) scope_.pop_back();
    }
  }

  // Piece p of the current iteration of the preload's loops (by the names in scope).
  std::string preload_index(const Preload& pre, int64_t p) {
    std::string i = "0LL";
    for (const StmtNode* l : pre.loops)
      if (l->kind == StmtKind::For) i = "(" + i + ") * " + std::to_string(l->extent->ival) + "LL + " + var_name(l->var);
    return "(" + i + ") * " + std::to_string(pre.pieces) + "LL + " + std::to_string(p) + "LL";
  }

  static bool has_load(const Expr& e) {
    if (e->kind == ExprKind::Load) return true;
    for (const Expr& a : e->args)
      if (has_load(a)) return true;
    return false;
  }

  void emit_store(const StmtNode& s) {
    const BufferDecl& buf = buffer(s.buffer);
    if (s.value->type != valtype_of(buf.dtype))
      fail(k_, "a store of " + std::string(valtype_name(s.value->type)) + " to " + std::string(dtype_name(buf.dtype)) +
                   " buffer '" + buf.name + "'");
    line(buffer_name(s.buffer) + "[" + full(s.index) + "] = " + to_storage(buf.dtype, s.value) + ";");
  }

  // The value a store of `v` to a 16-bit buffer converts: v itself, or what
  // v rounds where v is already rounded to that type (rounding to nearest
  // twice is rounding once; a 16-bit result's epilogue would otherwise
  // convert three times). Not a dequantized weight, whose rounding is its
  // fast half arithmetic.
  const Expr& stored_value(DType t, const Expr& v) {
    if (v->kind != ExprKind::Round || v->round_to != t || (t != f16 && t != bf16)) return v;
    if (t == f16 && half_dequant(v->args[0])) return v;
    return v->args[0];
  }

  // Compute type -> storage dtype, rounding to nearest even.
  std::string to_storage(DType t, const Expr& v) {
    switch (t) {
      case f32: case i32: return full(v);
      case f16:
        use_f16_ = true;
        if (v->kind == ExprKind::Round && v->round_to == f16)
          if (std::optional<std::string> h = f16_product(v->args[0])) return *h;
        return "kiln_f32_to_f16(" + full(stored_value(t, v)) + ")";
      case bf16: use_bf16_ = true; return "kiln_f32_to_bf16(" + full(stored_value(t, v)) + ")";
      case i8: return "(signed char)" + operand(v, kPrimary);
      case u8: case boolean: return "(unsigned char)" + operand(v, kPrimary);
    }
    fail(k_, "unknown dtype");
  }

  // --- Expressions ---

  std::string full(const Expr& e) { return expr(e).text; }

  std::string operand(const Expr& e, Prec loosest) {
    CExpr c = expr(e);
    return c.prec > loosest ? "(" + c.text + ")" : c.text;
  }

  std::string call(const char* fn, const Expr& a) { return std::string(fn) + "(" + full(a) + ")"; }
  std::string call(const char* fn, const Expr& a, const Expr& b) {
    return std::string(fn) + "(" + full(a) + ", " + full(b) + ")";
  }
  // Arithmetic is left-associative; comparisons and logic parenthesize
  // operands of their own kind, for the reader.
  CExpr infix(const Expr& a, const char* op, const Expr& b, Prec prec) {
    Prec left = prec == kCompare || prec == kLogical ? Prec(prec - 1) : prec;
    return {operand(a, left) + " " + op + " " + operand(b, Prec(prec - 1)), prec};
  }

  CExpr expr(const Expr& e) {
    if (!e) fail(k_, "missing expression");
    switch (e->kind) {
      case ExprKind::Const: return constant(*e);
      case ExprKind::Var: return primary(var_name(e->name));
      case ExprKind::Load: return emit_load(*e);
      case ExprKind::Unary: return emit_unary(*e);
      case ExprKind::Binary: return emit_binary(*e);
      case ExprKind::Select:
        // A branch on the condition would make an operand's load wait for
        // the condition's own (two memory latencies in a row, in a loop over
        // a cache: a decode's P x V whose new row is selected in).
        if (has_load(e->args[1]) || has_load(e->args[2])) {
          use_sel_ = true;
          static const char* types[] = {"float", "int", "long long", "bool"};
          return primary("kiln_sel<" + std::string(types[int(e->type)]) + ">(" + full(e->args[0]) + ", " +
                         full(e->args[1]) + ", " + full(e->args[2]) + ")");
        }
        return {operand(e->args[0], kCompare) + " ? " + operand(e->args[1], kCompare) + " : " +
                    operand(e->args[2], kCompare),
                kTernary};
      case ExprKind::Cast: return emit_cast(*e);
      case ExprKind::Round: return emit_round(e->round_to, e->args[0]);
    }
    fail(k_, "unknown expression kind");
  }

  CExpr constant(const ExprNode& e) {
    switch (e.type) {
      case ValType::f32: return float_literal(static_cast<float>(e.fval));
      case ValType::b1: return primary(e.ival ? "true" : "false");
      default: return int_literal(e.ival, e.type);
    }
  }

  // The element a load reads, in its storage type.
  std::string load_ref(const ExprNode& e) {
    // Taken only inside every loop and condition around the preload: a load
    // node shared with code elsewhere (where such a condition may not hold)
    // reads memory there.
    auto pre = preload_scalar_.find(&e);
    if (pre != preload_scalar_.end() && std::all_of(pre->second.loops.begin(), pre->second.loops.end(),
                                                    [&](const StmtNode* l) { return open_.count(l); })) {
      const BufferDecl& b = buffer(e.buffer);
      std::string r = pre->second.array + "[" + preload_index(pre->second, 0) + "]";
      return dtype_size(b.dtype) == 1 ? "(" + std::string(storage_type(b.dtype)) + ")" + r : r;
    }
    auto vec = vector_element_.find(&e);
    return vec == vector_element_.end() ? buffer_name(e.buffer) + "[" + full(e.args[0]) + "]"
           : vec->second.element        ? vec->second.array + "[" + full(vec->second.element) + "]"
                                        : vec->second.array + "[" + var_name(vec->second.loop) + "]";
  }

  // Storage dtype -> compute type.
  CExpr emit_load(const ExprNode& e) {
    const BufferDecl& buf = buffer(e.buffer);
    if (e.type != valtype_of(buf.dtype))
      fail(k_, "a load of " + std::string(valtype_name(e.type)) + " from " + std::string(dtype_name(buf.dtype)) +
                   " buffer '" + buf.name + "'");
    std::string ref = load_ref(e);
    switch (buf.dtype) {
      case f32: case i32: return primary(ref);
      case f16: use_f16_ = true; return primary("kiln_f16_to_f32(" + ref + ")");
      case bf16: use_bf16_ = true; return primary("kiln_bf16_to_f32(" + ref + ")");
      case i8: case u8: return unary_op("(int)" + ref);
      case boolean: return {ref + " != 0", kCompare};
    }
    fail(k_, "unknown dtype");
  }

  // i32 arithmetic wraps as in the LLVM emitter; C's signed overflow is
  // undefined, so it goes through unsigned. i64 is index arithmetic, which
  // never overflows in a kernel that stays in bounds.
  CExpr emit_unary(const ExprNode& e) {
    const Expr& a = e.args[0];
    switch (e.unop) {
      case UnOp::Neg:
        if (e.type == ValType::b1) return expr(a);  // -x == x in one bit
        // Through an identity byte permute: ptxas 13.0 folds a negation into
        // sm_90's three-input integer max (VIMNMX3) and drops it for some
        // operands (a reduce_max of negated i32, kiln fuzz seed 8004).
        if (e.type == ValType::i32)
          return primary("(int)__byte_perm(0u - (unsigned)" + operand(a, kPrimary) + ", 0u, 0x3210u)");
        return unary_op("-" + operand(a, kPrimary));
      case UnOp::Exp2: return primary(call("exp2f", a));
      case UnOp::Log2: return primary(call("log2f", a));
      case UnOp::Sqrt: return primary(call("sqrtf", a));
      case UnOp::Sin: return primary(call("sinf", a));
      case UnOp::Recip: return {"1.0f / " + operand(a, kUnary), kMul};
      case UnOp::Not: return unary_op("!" + operand(a, kPrimary));
    }
    fail(k_, "unknown unary op");
  }

  CExpr emit_binary(const ExprNode& e) {
    switch (e.args[0]->type) {
      case ValType::f32: return emit_float_binary(e);
      case ValType::b1: return emit_bool_binary(e);
      default: return emit_int_binary(e);
    }
  }

  CExpr emit_float_binary(const ExprNode& e) {
    const Expr &a = e.args[0], &b = e.args[1];
    switch (e.binop) {
      case BinOp::Add:
        if (std::optional<CExpr> off = small_i2f_offset(a, b, 1)) return *off;
        return infix(a, "+", b, kAdd);
      case BinOp::Sub:
        if (std::optional<CExpr> off = small_i2f_offset(a, b, -1)) return *off;
        return infix(a, "-", b, kAdd);
      case BinOp::Mul: return infix(a, "*", b, kMul);
      case BinOp::Div: return infix(a, "/", b, kMul);
      case BinOp::Max: return primary(call("fmaxf", a, b));
      case BinOp::Min: return primary(call("fminf", a, b));
      case BinOp::CmpLt: return infix(a, "<", b, kCompare);
      case BinOp::CmpEq: return infix(a, "==", b, kCompare);
      default: fail(k_, std::string(binop_name(e.binop)) + " does not take f32");
    }
  }

  CExpr emit_int_binary(const ExprNode& e) {
    const Expr &a = e.args[0], &b = e.args[1];
    bool i32 = e.args[0]->type == ValType::i32;
    auto wrapping = [&](const char* op, Prec prec) {
      if (!i32) return infix(a, op, b, prec);
      return unary_op("(int)((unsigned)" + operand(a, kPrimary) + " " + op + " (unsigned)" + operand(b, kPrimary) + ")");
    };
    switch (e.binop) {
      case BinOp::Add: return wrapping("+", kAdd);
      case BinOp::Sub: return wrapping("-", kAdd);
      case BinOp::Mul: return wrapping("*", kMul);
      case BinOp::Div: case BinOp::Mod: {
        bool div = e.binop == BinOp::Div;
        bool plain = b->kind == ExprKind::Const && b->ival != 0 && b->ival != -1;  // C's operator is exact then
        if (plain) return infix(a, div ? "/" : "%", b, kMul);
        use_div_ = true;
        return primary(call(div ? "kiln_div" : "kiln_mod", a, b));
      }
      case BinOp::Max: return primary(call("max", a, b));
      case BinOp::Min: return primary(call("min", a, b));
      case BinOp::CmpLt: return infix(a, "<", b, kCompare);
      case BinOp::CmpEq: return infix(a, "==", b, kCompare);
      default: fail(k_, std::string(binop_name(e.binop)) + " does not take integers");
    }
  }

  // false < true, so Max is Or and Min is And.
  CExpr emit_bool_binary(const ExprNode& e) {
    const Expr &a = e.args[0], &b = e.args[1];
    switch (e.binop) {
      case BinOp::CmpEq: return infix(a, "==", b, kCompare);
      case BinOp::CmpLt: return infix(a, "<", b, kCompare);
      case BinOp::Max: case BinOp::Or: return infix(a, "||", b, kLogical);
      case BinOp::Min: case BinOp::And: return infix(a, "&&", b, kLogical);
      default: fail(k_, std::string(binop_name(e.binop)) + " does not take bool");
    }
  }

  // A small integer converted to f32 plus or minus (sign) an integer
  // constant, as one subtraction from the conversion's magic number:
  // float(0x4B400000 + x) is 12582912 + x exactly, and 12582912 + x - (12582912
  // - c) is x + c exactly (every value an integer below 2^24). A q4 weight's
  // nibble - 8: one FADD fewer a weight.
  std::optional<CExpr> small_i2f_offset(const Expr& a, const Expr& b, int sign) {
    if (a->kind != ExprKind::Cast || a->args[0]->type != ValType::i32 || b->kind != ExprKind::Const) return std::nullopt;
    double c = sign * b->fval;
    if (c != std::floor(c) || std::fabs(c) > double(1 << 20)) return std::nullopt;
    std::optional<std::pair<int64_t, int64_t>> r = int_range(a->args[0]);
    if (!r || r->first < -(int64_t(1) << 21) || r->second >= (int64_t(1) << 21)) return std::nullopt;
    use_small_i2f_sub_ = true;
    char magic[32];
    std::snprintf(magic, sizeof magic, "%.1ff", 12582912.0 - c);
    return primary("kiln_small_i2f_sub(" + full(a->args[0]) + ", " + magic + ")");
  }

  // Float -> integer saturates with NaN -> 0, as fptosi.sat on the CPU.
  CExpr emit_cast(const ExprNode& e) {
    const Expr& a = e.args[0];
    ValType from = a->type, to = e.type;
    const char* c_type = to == ValType::i64 ? "(long long)" : to == ValType::i32 ? "(int)" : "(float)";
    if (from == to) return expr(a);
    if (to == ValType::b1) return {operand(a, kAdd) + (from == ValType::f32 ? " != 0.0f" : " != 0"), kCompare};
    if (from == ValType::f32) {
      use_cast_ = true;
      return primary(call(to == ValType::i64 ? "kiln_f32_to_i64" : "kiln_f32_to_i32", a));
    }
    if (from == ValType::b1 && to == ValType::f32) return {operand(a, kCompare) + " ? 1.0f : 0.0f", kTernary};
    if (to == ValType::f32 && from == ValType::i32) {
      std::optional<std::pair<int64_t, int64_t>> r = int_range(a);
      if (r && r->first >= -(int64_t(1) << 22) && r->second < (int64_t(1) << 22)) {
        use_small_i2f_ = true;
        return primary(call("kiln_small_i2f", a));
      }
    }
    return unary_op(c_type + operand(a, kPrimary));
  }

  // The values an integer expression can take, where the dtypes of its
  // loads and roundings bound them (a quantized weight's byte or nibble).
  std::optional<std::pair<int64_t, int64_t>> int_range(const Expr& e) {
    using R = std::pair<int64_t, int64_t>;
    auto of_dtype = [](DType t) -> std::optional<R> {
      if (t == u8) return R{0, 255};
      if (t == i8) return R{-128, 127};
      if (t == boolean) return R{0, 1};
      return std::nullopt;
    };
    constexpr int64_t kLimit = int64_t(1) << 30;
    auto bounded = [&](int64_t lo, int64_t hi) -> std::optional<R> {
      if (lo < -kLimit || hi > kLimit) return std::nullopt;
      return R{lo, hi};
    };
    switch (e->kind) {
      case ExprKind::Const:
        if (e->type == ValType::f32) return std::nullopt;
        return bounded(e->ival, e->ival);
      case ExprKind::Load: return of_dtype(buffer(e->buffer).dtype);
      case ExprKind::Round: return of_dtype(e->round_to);
      case ExprKind::Cast:
        if (e->args[0]->type == ValType::f32) return std::nullopt;
        return int_range(e->args[0]);
      case ExprKind::Select: {
        auto a = int_range(e->args[1]), b = int_range(e->args[2]);
        if (!a || !b) return std::nullopt;
        return R{std::min(a->first, b->first), std::max(a->second, b->second)};
      }
      case ExprKind::Binary: {
        if (e->type == ValType::f32 || e->type == ValType::b1) return std::nullopt;
        auto a = int_range(e->args[0]), b = int_range(e->args[1]);
        if (!a || !b) return std::nullopt;
        switch (e->binop) {
          case BinOp::Add: return bounded(a->first + b->first, a->second + b->second);
          case BinOp::Sub: return bounded(a->first - b->second, a->second - b->first);
          case BinOp::Mul: {
            int64_t c[] = {a->first * b->first, a->first * b->second, a->second * b->first, a->second * b->second};
            return bounded(*std::min_element(c, c + 4), *std::max_element(c, c + 4));
          }
          case BinOp::Min: return R{std::min(a->first, b->first), std::min(a->second, b->second)};
          case BinOp::Max: return R{std::max(a->first, b->first), std::max(a->second, b->second)};
          case BinOp::Div:  // truncation is monotone in the dividend
            if (b->first != b->second || b->first <= 0) return std::nullopt;
            return R{a->first / b->first, a->second / b->first};
          case BinOp::Mod:
            if (b->first != b->second || b->first <= 0) return std::nullopt;
            if (a->first >= 0) return R{0, std::min(a->second, b->first - 1)};
            return R{-(b->first - 1), b->first - 1};
          default: return std::nullopt;
        }
      }
      default: return std::nullopt;
    }
  }

  // The parts of a dequantization, round<f16>((q - zero) * scale) in
  // either order of the product: q an integer expression, zero an integer
  // constant in [0, 1023], scale an f16 load or rounding (scale_bits).
  struct DequantParts {
    Expr q;
    int zero = 0;
    Expr scale;
  };
  std::optional<DequantParts> dequant_parts(const Expr& a) {
    if (a->kind != ExprKind::Binary || a->binop != BinOp::Mul || a->type != ValType::f32) return std::nullopt;
    for (int side = 0; side < 2; ++side) {
      const Expr &diff = a->args[side], &scale = a->args[1 - side];
      if (diff->kind != ExprKind::Binary || diff->binop != BinOp::Sub) continue;
      const Expr &q = diff->args[0], &zero = diff->args[1];
      if (q->kind != ExprKind::Cast || q->args[0]->type == ValType::f32 || zero->kind != ExprKind::Const) continue;
      double z = zero->fval;
      if (!(z >= 0 && z <= 1023 && z == std::floor(z))) continue;
      if (!(scale->kind == ExprKind::Load && buffer(scale->buffer).dtype == f16) &&
          !(scale->kind == ExprKind::Round && scale->round_to == f16))
        continue;
      return DequantParts{q->args[0], int(z), scale};
    }
    return std::nullopt;
  }
  std::string scale_bits(const DequantParts& d) {
    return d.scale->kind == ExprKind::Load ? load_ref(*d.scale) : "kiln_f32_to_f16(" + full(d.scale->args[0]) + ")";
  }
  static std::string zero_bits(int zero) {
    char bits[16];
    std::snprintf(bits, sizeof bits, "0x%04x", 0x6400 + zero);
    return bits;
  }

  // A dequantization with q an integer in [0, 1023], which
  // kiln_dequant_f16's half arithmetic computes exactly.
  std::optional<DequantParts> half_dequant(const Expr& a) {
    std::optional<DequantParts> d = dequant_parts(a);
    if (!d) return std::nullopt;
    std::optional<std::pair<int64_t, int64_t>> r = int_range(d->q);
    if (!r || r->first < 0 || r->second > 1023) return std::nullopt;
    return d;
  }

  // kiln_dequant_f16 for a half_dequant; empty where it does not match.
  std::optional<CExpr> dequant_f16(const Expr& a) {
    std::optional<DequantParts> d = half_dequant(a);
    if (!d) return std::nullopt;
    use_f16_ = use_dequant_ = true;
    std::string q_int = d->q->type == ValType::i32 ? full(d->q) : "(int)" + operand(d->q, kPrimary);
    return primary("kiln_dequant_f16(" + q_int + ", " + zero_bits(d->zero) + ", " + scale_bits(*d) + ")");
  }

  // round<f16>(a), where a is a product of two f16 loads, as f16 bits.
  std::optional<std::string> f16_product(const Expr& a) {
    if (a->kind != ExprKind::Binary || a->binop != BinOp::Mul || !f16_load(a->args[0]) || !f16_load(a->args[1]))
      return std::nullopt;
    use_f16_ = true;
    return "kiln_hmul(" + load_ref(*a->args[0]) + ", " + load_ref(*a->args[1]) + ")";
  }
  bool f16_load(const Expr& e) { return e->kind == ExprKind::Load && buffer(e->buffer).dtype == f16; }

  // The nearest value of `to`, kept in the compute type.
  CExpr emit_round(DType to, const Expr& a) {
    switch (to) {
      case f16:
        if (auto p = packed_dequant_.find(a.get()); p != packed_dequant_.end()) {
          // kiln_dq's word 4w holds elements (4w, 4w + 2) of bytes 4w..4w+3's low nibbles, 4w + 1 (4w + 1, 4w + 3),
          // 4w + 2 and 4w + 3 the same of the high nibbles (elements + 16): element v's f16 is at this slot.
          const std::string v = var_name(p->second.loop);
          if (p->second.natural)  // (an mma GEMV's words, read element by element where f16_pair found no pair)
            return primary("kiln_f16_to_f32(reinterpret_cast<const unsigned short*>(" + p->second.array + ")[" + v + "])");
          return primary("kiln_f16_to_f32(reinterpret_cast<const unsigned short*>(" + p->second.array + ")[8 * ((" + v +
                         " % 16) / 4) + 4 * (" + v + " / 16) + 2 * (" + v + " % 2) + (" + v + " % 4) / 2])");
        }
        if (std::optional<CExpr> d = dequant_f16(a)) return *d;
        use_f16_ = true;
        // The f32 product of two f16 values is exact (11 by 11 bits), so
        // rounding it to f16 is f16's own correctly rounded multiplication:
        // one instruction instead of two conversions in, one multiplication
        // and a conversion out and back (a folded norm's g * x, once a row
        // of a GEMV).
        if (std::optional<std::string> h = f16_product(a)) return primary("kiln_f16_to_f32(" + *h + ")");
        return primary(call("kiln_round_f16", a));
      case bf16: use_bf16_ = true; return primary(call("kiln_round_bf16", a));
      case i8: return unary_op("(int)(signed char)" + operand(a, kPrimary));
      case u8: return unary_op("(int)(unsigned char)" + operand(a, kPrimary));
      case f32: case i32: case boolean: return expr(a);
    }
    fail(k_, "unknown dtype");
  }

  const Kernel& k_;
  GpuNest nest_;
  std::string body_;
  int indent_ = 1;
  std::vector<std::pair<std::string, std::string>> scope_;  // loop variables in scope: IR name, C name
  int fresh_ = 0;
  // Loads read by vector_loads(): the array of their elements, and the loop
  // variable that picks one.
  struct VectorElement {
    std::string array, loop;
    Expr element;        // the element iteration `loop` takes; null: the loop variable itself
    std::string pieces;  // the registers holding the pieces (16-byte words)
  };
  std::map<const ExprNode*, VectorElement> vector_element_;
  // Dequantizations computed before their loop by packed_dequant(): the
  // array of their pairs and the loop variable that picks one.
  struct PackedDequant {
    std::string array, loop;
    bool natural = false;  // word i holds elements (2i, 2i + 1)
  };
  std::map<const ExprNode*, PackedDequant> packed_dequant_;
  bool use_f16_ = false, use_bf16_ = false, use_div_ = false, use_cast_ = false, use_mma_ = false, use_sel_ = false;
  bool use_dequant_ = false, use_small_i2f_ = false, use_small_i2f_sub_ = false;
  std::string wgmma_helpers_;  // the kernel's wgmma instruction, for its tile's width and layouts
  std::vector<CudaTensorMap> maps_;  // the tensor maps it takes, in argument order

  // --- Tensor cores: a kernel with the schedule's array_tile ---
  //
  // The per-thread code is `for i in BM { for j in BN { acc = 0; for r in K {
  // acc += A[..i..r] * B[..j..r] }; epilogue } }` under gpu_block loops: one
  // block computes the BM x BN tile with 8 warps (2 x 4), each warp a WM x WN
  // part of it in m16n8k16 mma.sync steps, f32 accumulators in registers.
  // The reduction goes in steps of BK: each step's A and B tiles are copied
  // into shared memory (16-byte cp.async where the index proves 8 elements
  // contiguous and aligned, element by element otherwise), one step ahead of
  // the multiplication (two stages), and read with ldmatrix. Then each thread
  // runs the kernel's epilogue for each accumulator it holds.

  enum class Layout { KMajor, TileMajor, Elements };  // which index runs contiguous in shared memory

  struct TileOperand {
    Expr index;            // the load's index
    int buffer = -1;
    std::string tile_var;  // the tile loop it moves with (A: rows, B: columns)
    int64_t tile = 0;      // that loop's extent (BM or BN)
    Layout layout = Layout::Elements;
    Expr base;             // KMajor: index of 8 elements at (tile_var, chunk); TileMajor: at (chunk, r)
    int64_t pitch = 0;      // 16-bit elements a row of its tile in shared memory
    Expr value;             // the operand (a load, or an expression whose value is exact in `dtype`)
    DType dtype = f16;      // what shared memory holds
  };

  static constexpr const char* kChunk = "kiln.chunk";  // names of the analysis; never IR names
  static constexpr const char* kLane = "kiln.lane";

  [[noreturn]] void not_tile(const std::string& why) {
    fail(k_, "array_tile: not a contraction tensor cores take (" + why + ")");
  }

  // `index` with loop `v` (extent `n`) split into chunks of 8, simplified with
  // the bounds of the block loops and `other` (extent `other_n`): the base of
  // 8 contiguous elements whose start is a multiple of 8, or null.
  Expr chunk_base(const Expr& index, const std::string& v, int64_t n, const std::string& other, int64_t other_n,
                  int64_t chunk = 8) {
    if (n % chunk) return nullptr;
    Expr split = substitute(index, {{v, var(kChunk) * idx(chunk) + var(kLane)}});
    Stmt body = store(0, split, const_f32(0));
    body = for_loop(kLane, idx(chunk), LoopKind::Serial, {body});
    body = for_loop(kChunk, idx(n / chunk), LoopKind::Serial, {body});
    body = for_loop(other, idx(other_n), LoopKind::Serial, {body});
    for (auto it = nest_.loops.rbegin(); it != nest_.loops.rend(); ++it)
      body = for_loop(it->stmt->var, it->stmt->extent, LoopKind::Serial, {body});
    Kernel probe = k_;
    probe.body = block({body});
    Stmt s = simplify_indices(probe).body;
    while (s->kind != StmtKind::Store) s = s->body[0];
    Expr base = offset_base(s->index, kLane);
    return base && multiple_of(base, chunk) && !uses_var(base, kLane) ? base : nullptr;
  }

  // An operand that is not a 16-bit load (an 8-bit weight, a dequantized
  // one) is evaluated and stored as f16/bf16 element by element on its way
  // into shared memory.
  TileOperand tile_operand(const Expr& operand, const std::string& tile_var, int64_t tile, const std::string& r,
                           int64_t depth, int64_t bk, DType dt) {
    bool raw = operand->kind == ExprKind::Load;
    TileOperand o{raw ? operand->args[0] : nullptr, raw ? operand->buffer : -1, tile_var, tile, Layout::Elements,
                  nullptr, 0, operand, dt};
    if (raw && (o.base = chunk_base(o.index, r, depth, tile_var, tile))) {
      o.layout = Layout::KMajor;
    } else if (raw && (o.base = chunk_base(o.index, tile_var, tile, r, depth))) {
      o.layout = Layout::TileMajor;
    }
    // Rows padded by 16 bytes: ldmatrix's 8 rows then fall in distinct banks.
    o.pitch = (o.layout == Layout::TileMajor ? tile : bk) + 8;
    return o;
  }

  // `const long long` locals for IR variables, in a C block of their own.
  void open_vars(const std::vector<std::pair<std::string, std::string>>& vars) {
    line("{");
    ++indent_;
    for (const auto& [name, value] : vars) line("const long long " + declare(name) + " = " + value + ";");
  }
  void close_vars(size_t n) {
    scope_.resize(scope_.size() - n);
    --indent_;
    line("}");
  }

  // Copies the operand's BK-deep tile at reduction offset kiln_k0 into stage
  // kiln_stage of `smem`.
  void copy_tile(const TileOperand& o, const std::string& smem, int64_t stage, const std::string& r, int64_t bk) {
    const std::string b = buffer_name(o.buffer), pitch = std::to_string(o.pitch);
    std::string dst = smem + " + kiln_stage * " + std::to_string(stage);
    if (o.layout == Layout::Elements) {
      int64_t per = o.tile * bk / kMmaThreads;
      line("#pragma unroll");
      line("for (int kiln_p = 0; kiln_p < " + std::to_string(per) + "; ++kiln_p) {");
      ++indent_;
      line("const int kiln_e = kiln_tid + kiln_p * " + std::to_string(kMmaThreads) + ";");
      open_vars({{o.tile_var, "kiln_e / " + std::to_string(bk)}, {r, "kiln_k0 + kiln_e % " + std::to_string(bk)}});
      std::string value = o.value->kind == ExprKind::Load ? b + "[" + full(o.index) + "]" : to_storage(o.dtype, o.value);
      line("(" + dst + ")[(kiln_e / " + std::to_string(bk) + ") * " + pitch + " + kiln_e % " + std::to_string(bk) + "] = " +
           value + ";");
      close_vars(2);
      --indent_;
      return line("}");
    }
    bool k_major = o.layout == Layout::KMajor;
    int64_t per_row = (k_major ? bk : o.tile) / 8, per = o.tile * bk / 8 / kMmaThreads;
    std::string row = "kiln_c / " + std::to_string(per_row), col = "kiln_c % " + std::to_string(per_row);
    line("#pragma unroll");
    line("for (int kiln_p = 0; kiln_p < " + std::to_string(per) + "; ++kiln_p) {");
    ++indent_;
    line("const int kiln_c = kiln_tid + kiln_p * " + std::to_string(kMmaThreads) + ";");
    if (k_major) open_vars({{o.tile_var, row}, {kChunk, "kiln_k0 / 8 + " + col}});
    else open_vars({{r, "kiln_k0 + " + row}, {kChunk, col}});
    line("kiln_cp_async16(" + dst + " + (" + row + ") * " + pitch + " + (" + col + ") * 8, " + b + " + (" + full(o.base) +
         "));");
    close_vars(2);
    --indent_;
    line("}");
  }

  // Every tile's last part: for each accumulator a thread holds (the
  // unrolled loops `loops`, variable and extent), the output point (i, j)
  // it is for, its value into the kernel's accumulator buffer, the epilogue.
  // With `pairs` (tensor-core tiles, sm_80 and up), the last loop's even
  // value x and x + 1 are columns j and j + 1 with j even: where the
  // epilogue only stores 16-bit values at base + j, base even (paired_stores),
  // both accumulators' epilogues are computed first and stored as one 32-bit
  // word (f16: one cvt.rn.f16x2.f32 for both), half the epilogue's
  // conversions and store instructions.
  void emit_accumulators(const std::vector<std::pair<std::string, int64_t>>& loops, const std::string& i,
                         const std::string& i_value, const std::string& j, const std::string& j_value,
                         const std::string& acc, const std::string& value, const std::vector<Stmt>& epilogue,
                         bool pairs = false) {
    std::vector<const StmtNode*> stores;
    pairs = pairs && loops.back().second % 2 == 0 && paired_stores(epilogue, j, &stores);
    for (size_t x = 0; x < loops.size(); ++x) {
      const auto& [v, extent] = loops[x];
      const bool half = pairs && x + 1 == loops.size();
      const std::string u = half ? v + "2" : v;
      line("#pragma unroll");
      line("for (int " + u + " = 0; " + u + " < " + std::to_string(half ? extent / 2 : extent) + "; ++" + u + ") {");
      ++indent_;
    }
    if (!pairs) {
      open_vars({{i, i_value}, {j, j_value}});
      line(acc + "[0] = " + value + ";");
      emit_stmts(epilogue);
      close_vars(2);
    } else {
      const std::string& v = loops.back().first;
      const auto pair_value = [&](size_t s, int h) { return "kiln_pv" + std::to_string(s) + (h ? "_hi" : "_lo"); };
      for (size_t s = 0; s < stores.size(); ++s)
        line("float " + pair_value(s, 0) + ", " + pair_value(s, 1) + ";  // " + comment_text(buffer(stores[s]->buffer).name));
      for (int h = 0; h < 3; ++h) {  // columns j, j + 1, then the stores at j
        line("{");
        ++indent_;
        line("const int " + v + " = 2 * " + v + "2" + (h == 1 ? " + 1" : "") + ";");
        open_vars({{i, i_value}, {j, j_value}});
        if (h < 2) line(acc + "[0] = " + value + ";");
        for (size_t s = 0; s < stores.size(); ++s) {
          const StmtNode& st = *stores[s];
          if (h < 2) {
            line(pair_value(s, h) + " = " + full(stored_value(buffer(st.buffer).dtype, st.value)) + ";");
            continue;
          }
          const bool bf = buffer(st.buffer).dtype == bf16;
          (bf ? use_bf16_ : use_f16_) = true;
          const std::string word = bf ? "(unsigned)kiln_f32_to_bf16(" + pair_value(s, 0) + ") | (unsigned)kiln_f32_to_bf16(" +
                                            pair_value(s, 1) + ") << 16"
                                      : "kiln_f32x2_to_f16x2(" + pair_value(s, 0) + ", " + pair_value(s, 1) + ")";
          line("*reinterpret_cast<unsigned*>(" + buffer_name(st.buffer) + " + (" + full(st.index) + ")) = " + word + ";");
        }
        close_vars(2);
        --indent_;
        line("}");
      }
    }
    for (size_t x = 0; x < loops.size(); ++x) {
      --indent_;
      line("}");
    }
  }

  // Whether an epilogue (its stores, into `stores`) may be stored two
  // columns at once: it only stores, each store a 16-bit global buffer at
  // base + j with base even, and loads none of the buffers it stores (so
  // computing both columns' values before storing either changes nothing).
  bool paired_stores(const std::vector<Stmt>& epilogue, const std::string& j, std::vector<const StmtNode*>* stores) {
    std::set<int> stored;
    bool ok = true;
    std::function<void(const std::vector<Stmt>&)> walk = [&](const std::vector<Stmt>& body) {
      for (const Stmt& s : body) {
        if (s->kind == StmtKind::Block) {
          walk(s->body);
          continue;
        }
        if (s->kind != StmtKind::Store) {
          ok = false;
          continue;
        }
        const BufferDecl& b = buffer(s->buffer);
        Expr base = offset_base(s->index, j);
        ok = ok && (b.dtype == f16 || b.dtype == bf16) && b.scope == MemScope::Global && base && multiple_of(base, 2);
        stored.insert(s->buffer);
        stores->push_back(s.get());
      }
    };
    walk(epilogue);
    for (const StmtNode* s : *stores)
      for (int b : stored) ok = ok && !loads_buffer(s->value, b) && !loads_buffer(s->index, b);
    return ok && !stores->empty();
  }

  // A tile's stage count and the shared memory its stages take.
  void check_stages(int64_t stages, int64_t bytes) {
    if (stages < 2 || stages > 8) not_tile("stages must be in 2..8");
    if (bytes > kMaxSharedBytes)
      not_tile(std::to_string(stages) + " stages of tiles need " + std::to_string(bytes) + " bytes of shared memory (" +
               std::to_string(kMaxSharedBytes) + " at most)");
  }

  // The copy pipeline of both tiles, around a `kiln_load(stage, k0)` lambda
  // already emitted: steps 0 .. stages - 2 in flight first (a cp.async group
  // each, empty past the end, so that waiting for all but stages - 2 groups
  // waits for step kt).
  void pipeline_prologue(int64_t stages, int64_t depth, int64_t bk) {
    const std::string steps = std::to_string(depth / bk) + "LL", ahead = std::to_string(stages - 1);
    line("#pragma unroll");
    line("for (int kiln_s = 0; kiln_s < " + ahead + "; ++kiln_s) {");
    line("  if (kiln_s < " + steps + ") kiln_load(kiln_s, kiln_s * " + std::to_string(bk) + "LL);");
    line("  kiln_cp_async_commit();");
    line("}");
    line("int kiln_read = 0, kiln_write = " + ahead + ";");
  }

  // Opens the loop over the reduction's steps (the caller closes it): wait
  // for step kt, then start the copy of step kt + stages - 1 into the stage
  // step kt - 1 used. kiln_read is still step kt's stage.
  void pipeline_step(int64_t stages, int64_t depth, int64_t bk) {
    const std::string steps = std::to_string(depth / bk) + "LL", ahead = std::to_string(stages - 1);
    line("for (long long kiln_kt = 0; kiln_kt < " + steps + "; ++kiln_kt) {");
    ++indent_;
    line("kiln_cp_async_wait<" + std::to_string(stages - 2) + ">();");
    line("__syncthreads();  // step kt is in; every thread is done with step kt - 1, whose stage is written next");
    line("if (kiln_kt + " + ahead + " < " + steps + ") kiln_load(kiln_write, (kiln_kt + " + ahead + ") * " +
         std::to_string(bk) + "LL);");
    line("kiln_cp_async_commit();");
    line("kiln_write = kiln_write + 1 == " + std::to_string(stages) + " ? 0 : kiln_write + 1;");
  }

  // --- SIMT tiles: an array_tile on f32 operands ---
  //
  // The same block tile and pipeline as the tensor cores' (cp.async copies
  // of each BK-deep step, stages - 1 steps ahead), multiplied on the CUDA
  // cores: 256 threads (16 x 16) a block, each BM / 16 x BN / 16 outputs in
  // registers, at rows (g * 64 + ty * 4 + e) and columns (g * 64 + tx * 4 +
  // e), so that a thread's operands for one step of the reduction are whole
  // 16-byte words of shared memory, where each operand's stage is BK rows of
  // its tile's side (padded by 4 elements). An operand whose tile side is
  // contiguous comes by 16-byte copies; any other element by element
  // (transposed on the way).
  void emit_simt_copy(const Expr& operand, const std::string& tile_var, int64_t tile, const std::string& r,
                      int64_t depth, int64_t bk, const std::string& smem, int64_t stage) {
    const std::string b = buffer_name(operand->buffer), pitch = std::to_string(tile + 4);
    const Expr& index = operand->args[0];
    std::string dst = smem + " + kiln_stage * " + std::to_string(stage);
    auto n = [](int64_t v) { return std::to_string(v); };
    if (Expr base = chunk_base(index, tile_var, tile, r, depth, 4)) {
      // The tile's 16-byte words, a thread each in turn (the last turn maybe partial).
      int64_t per_row = tile / 4, words = tile * bk / 4, per = (words + kMmaThreads - 1) / kMmaThreads;
      line("#pragma unroll");
      line("for (int kiln_p = 0; kiln_p < " + n(per) + "; ++kiln_p) {");
      ++indent_;
      line("const int kiln_c = kiln_tid + kiln_p * " + n(kMmaThreads) + ";");
      if (words % kMmaThreads) line("if (kiln_c >= " + n(words) + ") break;");
      open_vars({{r, "kiln_k0 + kiln_c / " + n(per_row)}, {kChunk, "kiln_c % " + n(per_row)}});
      line("kiln_cp_async16(" + dst + " + (kiln_c / " + n(per_row) + ") * " + pitch + " + (kiln_c % " + n(per_row) +
           ") * 4, " + b + " + (" + full(base) + "));");
      close_vars(2);
      --indent_;
      return line("}");
    }
    // Element by element: consecutive threads take consecutive elements of
    // the reduction where it is contiguous in memory, else of the tile's side.
    bool k_fastest = chunk_base(index, r, depth, tile_var, tile, 4) != nullptr;
    std::string side = k_fastest ? "kiln_e / " + n(bk) : "kiln_e % " + n(tile);
    std::string step = k_fastest ? "kiln_e % " + n(bk) : "kiln_e / " + n(tile);
    line("#pragma unroll");
    line("for (int kiln_p = 0; kiln_p < " + n(tile * bk / kMmaThreads) + "; ++kiln_p) {");
    ++indent_;
    line("const int kiln_e = kiln_tid + kiln_p * " + n(kMmaThreads) + ";");
    open_vars({{tile_var, side}, {r, "kiln_k0 + " + step}});
    line("kiln_cp_async4(" + dst + " + (" + step + ") * " + pitch + " + " + side + ", " + b + " + (" + full(index) + "));");
    close_vars(2);
    --indent_;
    line("}");
  }

  void emit_simt_tile(const HalfProduct& p, const Expr& a, const Expr& b, const std::string& r, const std::string& i,
                      const std::string& j, int64_t bm, int64_t bn, int64_t bk, int64_t depth,
                      const std::vector<Stmt>& epilogue) {
    const ArrayTile& at = k_.array_tile;
    if (bm % 64 || bn % 64 || bm > 128 || bn > 128 || bk < 4 || bk % 4 || depth % bk || bm * bk % kMmaThreads ||
        bn * bk % kMmaThreads)
      not_tile("f32 tile " + std::to_string(bm) + " x " + std::to_string(bk) + " x " + std::to_string(bn) +
               " over a reduction of " + std::to_string(depth) +
               ": rows and columns 64 or 128, a depth that is a multiple of 4 dividing the reduction, and each tile at least 256 elements");
    const int64_t stages = tile_stages(at), stage_a = simt_stage_elements(bm, bk), stage_b = simt_stage_elements(bn, bk);
    check_stages(stages, simt_shared_bytes(at));
    use_mma_ = true;  // the cp.async helpers
    const int64_t tm = bm / 16, tn = bn / 16;
    auto n = [](int64_t v) { return std::to_string(v); };
    line("// CUDA cores: " + n(bm) + " x " + n(bn) + " outputs a block of 16 x 16 threads (each " + n(tm) + " x " + n(tn) +
         "), the reduction in steps of " + n(bk));
    line("extern __shared__ __align__(16) float kiln_ftiles[];  // " + n(stages) + " stages of A, then of B");
    line("float* const kiln_as = kiln_ftiles;");
    line("float* const kiln_bs = kiln_ftiles + " + n(stages * stage_a) + ";");
    line("const int kiln_tid = threadIdx.x, kiln_tx = kiln_tid % 16, kiln_ty = kiln_tid / 16;");
    line("float kiln_acc[" + n(tm) + "][" + n(tn) + "];");
    line("#pragma unroll");
    line("for (int kiln_x = 0; kiln_x < " + n(tm * tn) + "; ++kiln_x) (&kiln_acc[0][0])[kiln_x] = 0.0f;");
    line("auto kiln_load = [&](int kiln_stage, long long kiln_k0) {");
    ++indent_;
    emit_simt_copy(a, i, bm, r, depth, bk, "kiln_as", stage_a);
    emit_simt_copy(b, j, bn, r, depth, bk, "kiln_bs", stage_b);
    --indent_;
    line("};");
    pipeline_prologue(stages, depth, bk);
    pipeline_step(stages, depth, bk);
    line("const float* const kiln_at = kiln_as + kiln_read * " + n(stage_a) + " + kiln_ty * 4;");
    line("const float* const kiln_bt = kiln_bs + kiln_read * " + n(stage_b) + " + kiln_tx * 4;");
    line("kiln_read = kiln_read + 1 == " + n(stages) + " ? 0 : kiln_read + 1;");
    line("#pragma unroll");
    line("for (int kiln_kk = 0; kiln_kk < " + n(bk) + "; ++kiln_kk) {");
    ++indent_;
    line("float kiln_a[" + n(tm) + "], kiln_b[" + n(tn) + "];");
    line("#pragma unroll");
    line("for (int kiln_g = 0; kiln_g < " + n(tm / 4) + "; ++kiln_g)");
    line("  *reinterpret_cast<float4*>(kiln_a + kiln_g * 4) = *reinterpret_cast<const float4*>(kiln_at + kiln_kk * " +
         n(bm + 4) + " + kiln_g * 64);");
    line("#pragma unroll");
    line("for (int kiln_g = 0; kiln_g < " + n(tn / 4) + "; ++kiln_g)");
    line("  *reinterpret_cast<float4*>(kiln_b + kiln_g * 4) = *reinterpret_cast<const float4*>(kiln_bt + kiln_kk * " +
         n(bn + 4) + " + kiln_g * 64);");
    line("#pragma unroll");
    line("for (int kiln_i = 0; kiln_i < " + n(tm) + "; ++kiln_i)");
    line("  #pragma unroll");
    line("  for (int kiln_j = 0; kiln_j < " + n(tn) + "; ++kiln_j) kiln_acc[kiln_i][kiln_j] += kiln_a[kiln_i] * kiln_b[kiln_j];");
    --indent_;
    line("}");
    --indent_;
    line("}");
    emit_accumulators({{"kiln_i", tm}, {"kiln_j", tn}}, i, "(kiln_i / 4) * 64 + kiln_ty * 4 + kiln_i % 4", j,
                      "(kiln_j / 4) * 64 + kiln_tx * 4 + kiln_j % 4", buffer_name(p.acc), "kiln_acc[kiln_i][kiln_j]",
                      epilogue);
  }

  // --- Warpgroup tiles (Hopper): an array_tile ... wgmma on f16/bf16 ---
  //
  // Two warpgroups of 128 threads, each BM / 2 rows of the block's BM x BN
  // tile, multiply in wgmma.mma_async m64nBNk16 steps whose operands the
  // tensor cores read from shared memory themselves (matrix descriptors), f32
  // accumulators in registers. Each 64-deep step of the reduction is copied
  // into shared memory by cp.async (stages - 1 steps ahead) in the 128-byte
  // swizzled layouts wgmma reads. An operand contiguous along the reduction
  // (K-major) has a 128-byte row (64 elements of the reduction) per element of
  // its tile's side, whose 16-byte words are permuted by the row's index mod 8,
  // and a region of such rows per 64 of the step's BK; one contiguous along
  // its tile's side (MN-major) has 64 of the side's elements a row, a row per
  // element of the reduction, 8 rows (1024 bytes) an atom, the BK / 8 atoms of
  // a 64-wide block together. Element-by-element operands take the K-major
  // layout.

  // The copy of the operand's 64-deep step at reduction offset kiln_k0 into
  // the stage at byte pointer `dst`.
  void copy_swizzled(const TileOperand& o, const std::string& dst, const std::string& r, int64_t bk) {
    auto n = [](int64_t v) { return std::to_string(v); };
    const std::string b = buffer_name(o.buffer);
    const int64_t t = o.tile, region = t * 128;  // K-major: the bytes of each 64 of the reduction
    line("#pragma unroll");
    if (o.layout == Layout::Elements) {
      line("for (int kiln_p = 0; kiln_p < " + n(t * bk / kMmaThreads) + "; ++kiln_p) {");
      ++indent_;
      line("const int kiln_e = kiln_tid + kiln_p * " + n(kMmaThreads) + ", kiln_row = kiln_e / " + n(bk) +
           ", kiln_kk = kiln_e % " + n(bk) + ";");
      open_vars({{o.tile_var, "kiln_row"}, {r, "kiln_k0 + kiln_kk"}});
      std::string value = o.value->kind == ExprKind::Load ? b + "[" + full(o.index) + "]" : to_storage(o.dtype, o.value);
      line("*reinterpret_cast<unsigned short*>(" + dst + " + (kiln_kk / 64) * " + n(region) +
           " + kiln_row * 128 + ((((kiln_kk % 64) / 8) ^ (kiln_row % 8)) * 16) + (kiln_kk % 8) * 2) = " + value + ";");
      close_vars(2);
      --indent_;
      return line("}");
    }
    line("for (int kiln_p = 0; kiln_p < " + n(t * bk / 8 / kMmaThreads) + "; ++kiln_p) {");
    ++indent_;
    line("const int kiln_c = kiln_tid + kiln_p * " + n(kMmaThreads) + ";");
    if (o.layout == Layout::KMajor) {
      // BK / 8 words a row: the tile's side c / (BK / 8), the reduction's word c % (BK / 8).
      line("const int kiln_row = kiln_c / " + n(bk / 8) + ", kiln_w = kiln_c % " + n(bk / 8) + ";");
      open_vars({{o.tile_var, "kiln_row"}, {kChunk, "kiln_k0 / 8 + kiln_w"}});
      line("kiln_cp_async16(" + dst + " + (kiln_w / 8) * " + n(region) +
           " + kiln_row * 128 + (((kiln_w % 8) ^ (kiln_row % 8)) * 16), " + b + " + (" + full(o.base) + "));");
    } else {
      // t / 8 words a row of the reduction: the row c / (t / 8), the side's word c % (t / 8).
      line("const int kiln_row = kiln_c / " + n(t / 8) + ", kiln_w = kiln_c % " + n(t / 8) + ";");
      open_vars({{r, "kiln_k0 + kiln_row"}, {kChunk, "kiln_w"}});
      line("kiln_cp_async16(" + dst + " + (kiln_w / 8) * " + n(bk * 128) +
           " + kiln_row * 128 + (((kiln_w % 8) ^ (kiln_row % 8)) * 16), " + b + " + (" + full(o.base) + "));");
    }
    close_vars(2);
    --indent_;
    line("}");
  }

  // The kernel's wgmma instruction: m64nNk16 into N / 2 f32 accumulators,
  // operands from descriptors, transposed (MN-major) or not.
  std::string wgmma_helper(int64_t bn, bool bf, bool trans_a, bool trans_b) {
    const int64_t regs = bn / 2;
    const char* t = bf ? "bf16" : "f16";
    std::string list, outs;
    for (int64_t x = 0; x < regs; ++x) {
      list += (x ? ", %" : "%") + std::to_string(x);
      outs += std::string(x ? ", " : "") + (x % 8 == 0 && x ? "\n        " : "") + "\"+f\"(d[" + std::to_string(x) + "])";
    }
    std::string a = "%" + std::to_string(regs), b = "%" + std::to_string(regs + 1), one = "%" + std::to_string(regs + 2);
    return "__device__ __forceinline__ void kiln_wgmma(float* d, unsigned long long a, unsigned long long b) {\n"
           "  asm volatile(\"{\\n.reg .pred p;\\nsetp.ne.b32 p, " + one + ", 0;\\n\"\n"
           "      \"wgmma.mma_async.sync.aligned.m64n" + std::to_string(bn) + "k16.f32." + t + "." + t + " {" + list +
           "}, " + a + ", " + b + ", p, 1, 1, " + (trans_a ? "1" : "0") + ", " + (trans_b ? "1" : "0") + ";\\n}\\n\"\n"
           "      : " + outs + "\n      : \"l\"(a), \"l\"(b), \"r\"(1));\n}\n";
  }

  // What the multiplying warpgroups of both kinds of warpgroup tile share:
  // the tile, its operands' layouts, the bytes of A's and of a whole stage,
  // and of a 64-row block of A (8192 K-major, BK * 128 MN-major).
  struct WgmmaTile {
    int64_t bm = 0, bn = 0, bk = 0, mw = 0, stage_a = 0, stage = 0, a_block = 0;
    bool trans_a = false, trans_b = false;
  };
  static WgmmaTile wgmma_tile(int64_t bm, int64_t bn, int64_t bk, bool trans_a, bool trans_b) {
    return {bm, bn, bk, bm / 128, bm * bk * 2, (bm + bn) * bk * 2, trans_a ? bk * 128 : 8192, trans_a, trans_b};
  }

  void wgmma_accumulators(const WgmmaTile& t) {
    line("float kiln_acc[" + std::to_string(t.mw) + "][" + std::to_string(t.bn / 2) + "];");
    line("#pragma unroll");
    line("for (int kiln_x = 0; kiln_x < " + std::to_string(t.mw * t.bn / 2) + "; ++kiln_x) (&kiln_acc[0][0])[kiln_x] = 0.0f;");
  }
  void wgmma_hold(const WgmmaTile& t) {
    line("#pragma unroll");
    line("for (int kiln_x = 0; kiln_x < " + std::to_string(t.mw * t.bn / 2) +
         "; ++kiln_x) kiln_wgmma_hold((&kiln_acc[0][0])[kiln_x]);");
  }

  // Descriptors of stage 0: this warpgroup's rows of A, all of B; leading
  // byte offsets only matter MN-major (the next 64-wide block), stride
  // offsets are the next 8 rows or elements of the reduction.
  void wgmma_descriptors(const WgmmaTile& t) {
    auto n = [](int64_t v) { return std::to_string(v); };
    line("const unsigned long long kiln_da = kiln_wgmma_desc(kiln_s0 + kiln_wg * " + n(t.mw * t.a_block) + ", " +
         (t.trans_a ? n(t.bk * 128) : "16") + ", 1024);");
    line("const unsigned long long kiln_db = kiln_wgmma_desc(kiln_s0 + " + n(t.stage_a) + ", " +
         (t.trans_b ? n(t.bk * 128) : "16") + ", 1024);");
  }

  // One step's multiplies from the stage `stage_index` names, committed as
  // a group. A k16 step s moves a K-major descriptor by 32 bytes within a
  // 64-deep region (and a region every 4 steps), an MN-major one by two atoms.
  void wgmma_multiply(const WgmmaTile& t, const std::string& stage_index) {
    auto n = [](int64_t v) { return std::to_string(v); };
    auto step = [&](bool trans, int64_t side) {
      return trans ? "kiln_s * 2048" : "(kiln_s / 4) * " + n(side * 128) + " + (kiln_s % 4) * 32";
    };
    line("const unsigned long long kiln_off = (unsigned long long)(" + stage_index + " * " + n(t.stage) + ") >> 4;");
    wgmma_hold(t);
    line("kiln_wgmma_fence();");
    line("#pragma unroll");
    line("for (int kiln_s = 0; kiln_s < " + n(t.bk / 16) + "; ++kiln_s) {");
    line("  #pragma unroll");
    line("  for (int kiln_m = 0; kiln_m < " + n(t.mw) + "; ++kiln_m)");
    line("    kiln_wgmma(kiln_acc[kiln_m], kiln_da + kiln_off + ((kiln_m * " + n(t.a_block) + " + " +
         step(t.trans_a, t.bm) + ") >> 4), kiln_db + kiln_off + ((" + step(t.trans_b, t.bn) + ") >> 4));");
    line("}");
    line("kiln_wgmma_commit();");
  }

  // Accumulator x of m64 block m: row 16 (warp in group) + lane / 4 (+ 8
  // for x % 4 >= 2), column 8 (x / 4) + 2 (lane % 4) + x % 2.
  void wgmma_out(const WgmmaTile& t, const HalfProduct& p, const std::string& i, const std::string& j,
                 const std::vector<Stmt>& epilogue) {
    auto n = [](int64_t v) { return std::to_string(v); };
    emit_accumulators({{"kiln_m", t.mw}, {"kiln_x", t.bn / 2}}, i,
                      "kiln_wg * " + n(t.bm / 2) + " + kiln_m * 64 + kiln_wq * 16 + kiln_lane / 4 + ((kiln_x % 4) / 2) * 8",
                      j, "(kiln_x / 4) * 8 + (kiln_lane % 4) * 2 + kiln_x % 2", buffer_name(p.acc),
                      "kiln_acc[kiln_m][kiln_x]", epilogue, /*pairs=*/true);
  }

  // --- Warpgroup tiles fed by the Tensor Memory Accelerator (wgmma tma) ---
  //
  // The same tile, stages and swizzled layouts, but a third warpgroup (the
  // first 128 threads) copies: one thread issues each stage's boxes once
  // both multiplying warpgroups are done with it (an `empty` mbarrier of 2
  // arrivals), and they wait for its bytes to land (a `full` mbarrier), so
  // neither side waits on a whole block's barrier and one step's multiplies
  // stay in flight while the next are issued. An operand qualifies where it
  // is a raw 16-bit load whose index is affine in the tile's row (or column)
  // and the reduction, one of them contiguous, the other a row pitch of a
  // multiple of 16 bytes, plus an offset of the block indices alone whose
  // rows never wrap (the box must not cross a row's end).

  // The coefficient of `v` in the index `e` where e is affine in v (a sum of
  // v times constants and terms without v), or nullopt.
  static std::optional<int64_t> coefficient(const Expr& e, const std::string& v) {
    if (!uses_var(e, v)) return 0;
    if (e->kind == ExprKind::Var) return 1;
    if (e->kind != ExprKind::Binary) return std::nullopt;
    const Expr &x = e->args[0], &y = e->args[1];
    auto cx = coefficient(x, v), cy = coefficient(y, v);
    switch (e->binop) {
      case BinOp::Add: return cx && cy ? std::optional<int64_t>(*cx + *cy) : std::nullopt;
      case BinOp::Sub: return cx && cy ? std::optional<int64_t>(*cx - *cy) : std::nullopt;
      case BinOp::Mul:
        if (x->kind == ExprKind::Const && cy) return x->ival * *cy;
        if (y->kind == ExprKind::Const && cx) return y->ival * *cx;
        return std::nullopt;
      default: return std::nullopt;
    }
  }

  struct TmaOperand {
    int64_t pitch = 0;   // elements a row of the map
    Expr offset;         // the index at the tile's origin: a function of the block indices
    CudaTensorMap map;
  };

  std::optional<TmaOperand> tma_operand(const TileOperand& o, const std::string& r, int64_t depth, int64_t bk) {
    if (o.layout == Layout::Elements || o.buffer < 0 || o.value->kind != ExprKind::Load) return std::nullopt;
    DType bt = buffer(o.buffer).dtype;
    if (bt != f16 && bt != bf16) return std::nullopt;
    const bool k_major = o.layout == Layout::KMajor;
    auto ct = coefficient(o.index, o.tile_var), ck = coefficient(o.index, r);
    if (!ct || !ck || (k_major ? *ck : *ct) != 1) return std::nullopt;
    const int64_t pitch = k_major ? *ct : *ck;
    if (pitch <= 0 || pitch * 2 % 16 || pitch >= (int64_t(1) << 32)) return std::nullopt;
    TmaOperand t{pitch, substitute(o.index, {{o.tile_var, idx(0)}, {r, idx(0)}}), {}};
    // Every block's offset: its rows must not wrap, and the map's rows are
    // as many as the last block reads.
    std::vector<std::pair<std::string, int64_t>> blocks;
    int64_t combos = 1;
    for (const GpuLoop& l : nest_.loops) {
      if (l.stmt->loop != LoopKind::GpuBlock || l.stmt->extent->kind != ExprKind::Const) return std::nullopt;
      blocks.emplace_back(l.stmt->var, l.stmt->extent->ival);
      combos *= std::max<int64_t>(1, l.stmt->extent->ival);
      if (combos > (1 << 16)) return std::nullopt;
    }
    const int64_t along = k_major ? depth : o.tile, across = k_major ? o.tile : depth;
    int64_t rows = 0;
    std::map<std::string, int64_t> vars;
    for (int64_t c = 0; c < combos; ++c) {
      int64_t rest = c;
      for (const auto& [name, extent] : blocks) {
        vars[name] = rest % extent;
        rest /= extent;
      }
      int64_t off;
      try {
        off = evaluate_index(t.offset, vars);
      } catch (const Error&) {
        return std::nullopt;  // a symbolic dim or another variable in it
      }
      if (off < 0 || off % pitch + along > pitch) return std::nullopt;
      rows = std::max(rows, off / pitch + across);
    }
    if (rows >= (int64_t(1) << 32)) return std::nullopt;
    const std::vector<int> globals = k_.global_buffers();
    int arg = int(std::find(globals.begin(), globals.end(), o.buffer) - globals.begin());
    t.map = {arg, pitch, rows, k_major ? o.tile : bk};
    return t;
  }

  // The thread that copies: the boxes of one operand's stage at `dst` (a
  // shared address), the step's reduction offset kiln_k0.
  void tma_copies(const TileOperand& o, int map, const std::string& dst, const std::string& in, const std::string& out,
                  int64_t bk) {
    auto n = [](int64_t v) { return std::to_string(v); };
    const std::string m = "kiln_tma" + n(map), bar = "kiln_bars + 8 * kiln_st";
    if (o.layout == Layout::KMajor) {
      for (int64_t h = 0; h < bk / 64; ++h)  // a box per 64 of the reduction: the tile's rows, 128 bytes each
        line("kiln_tma2d(" + dst + " + " + n(h * o.tile * 128) + ", " + m + ", " + in + " + kiln_k0 + " + n(64 * h) +
             ", " + out + ", " + bar + ");");
    } else {
      for (int64_t h = 0; h < o.tile / 64; ++h)  // a box per 64 of the tile's side: the step's rows of the reduction
        line("kiln_tma2d(" + dst + " + " + n(h * bk * 128) + ", " + m + ", " + in + " + " + n(64 * h) + ", " + out +
             " + kiln_k0, " + bar + ");");
    }
  }

  void emit_warpgroup_tma(const TileOperand& ta, const TileOperand& tb, const TmaOperand& ma, const TmaOperand& mb,
                          const std::string& i, const std::string& j, int64_t bm, int64_t bn, int64_t bk,
                          int64_t depth, bool trans_a, const std::vector<Stmt>& epilogue, const HalfProduct& p) {
    auto n = [](int64_t v) { return std::to_string(v); };
    const int64_t stages = tile_stages(k_.array_tile);
    const WgmmaTile t = wgmma_tile(bm, bn, bk, trans_a, tb.layout == Layout::TileMajor);
    const int64_t stage_a = t.stage_a, stage = t.stage;
    maps_ = {ma.map, mb.map};
    const std::string steps = n(depth / bk), S = n(stages);
    line("// tensor cores (wgmma): " + n(bm) + " x " + n(bn) + " outputs a block of 2 warpgroups (each " + n(bm / 2) +
         " x " + n(bn) + "), the reduction in steps of " + n(bk) + ", copied by the Tensor Memory Accelerator");
    line("extern __shared__ __align__(1024) unsigned char kiln_wraw[];");
    line("unsigned char* const kiln_ws = kiln_wraw + ((1024u - (kiln_smem(kiln_wraw) & 1023u)) & 1023u);  // " + S +
         " stages of (A, B)");
    line("__shared__ __align__(8) unsigned long long kiln_full[" + S + "], kiln_empty[" + S +
         "];  // a stage landed; both warpgroups are done with it");
    line("const int kiln_tid = threadIdx.x, kiln_lane = kiln_tid % 32, kiln_wg = kiln_tid / 128 - 1, kiln_wq = (kiln_tid / 32) % 4;");
    line("const unsigned kiln_s0 = kiln_smem(kiln_ws), kiln_bars = kiln_smem(kiln_full), kiln_ebars = kiln_smem(kiln_empty);");
    line("if (kiln_tid == 0) {");
    line("  for (int kiln_s = 0; kiln_s < " + S + "; ++kiln_s) {");
    line("    kiln_mbar_init(kiln_bars + 8 * kiln_s, 1);");
    line("    kiln_mbar_init(kiln_ebars + 8 * kiln_s, 2);");
    line("  }");
    line("  kiln_fence_mbar_init();");
    line("}");
    line("__syncthreads();");
    line("if (kiln_wg < 0) {  // the copying warpgroup");
    ++indent_;
    line("kiln_setmaxnreg_dec<40>();");
    line("if (kiln_tid == 0) {");
    ++indent_;
    line("const long long kiln_oa = " + full(ma.offset) + ", kiln_ob = " + full(mb.offset) + ";");
    line("const int kiln_ax = int(kiln_oa % " + n(ma.pitch) + "LL), kiln_ay = int(kiln_oa / " + n(ma.pitch) + "LL);");
    line("const int kiln_bx = int(kiln_ob % " + n(mb.pitch) + "LL), kiln_by = int(kiln_ob / " + n(mb.pitch) + "LL);");
    line("for (int kiln_kt = 0; kiln_kt < " + steps + "; ++kiln_kt) {");
    ++indent_;
    line("const int kiln_st = kiln_kt % " + S + ", kiln_k0 = kiln_kt * " + n(bk) + ";");
    line("kiln_mbar_wait(kiln_ebars + 8 * kiln_st, ((kiln_kt / " + S + ") & 1) ^ 1);  // free (at once the first time)");
    line("kiln_mbar_expect(kiln_bars + 8 * kiln_st, " + n(stage) + ");");
    line("const unsigned kiln_sa = kiln_s0 + kiln_st * " + n(stage) + ", kiln_sb = kiln_sa + " + n(stage_a) + ";");
    tma_copies(ta, 0, "kiln_sa", "kiln_ax", "kiln_ay", bk);
    tma_copies(tb, 1, "kiln_sb", "kiln_bx", "kiln_by", bk);
    --indent_;
    line("}");
    --indent_;
    line("}");
    --indent_;
    line("} else {  // the multiplying warpgroups, kiln_wg 0 and 1");
    ++indent_;
    line("kiln_setmaxnreg_inc<232>();");
    wgmma_accumulators(t);
    wgmma_descriptors(t);
    // Every step but the last keeps its multiplies in flight; the last one
    // waits for them right after issuing them. (A wait for all after the
    // loop instead was moved by ptxas below the epilogue's first reads of
    // the accumulators: SASS of session 15.)
    auto step = [&](const std::string& kt) {
      line("const int kiln_st = " + kt + " % " + S + ";");
      line("kiln_mbar_wait(kiln_bars + 8 * kiln_st, (" + kt + " / " + S + ") & 1);  // step kt landed");
      wgmma_multiply(t, "kiln_st");
    };
    line("for (int kiln_kt = 0; kiln_kt < " + n(depth / bk - 1) + "; ++kiln_kt) {");
    ++indent_;
    step("kiln_kt");
    line("kiln_wgmma_wait<1>();  // step kt - 1's multiplies are done: its stage may be copied into again");
    wgmma_hold(t);
    line("if (kiln_kt > 0 && kiln_tid % 128 == 0) kiln_mbar_arrive(kiln_ebars + 8 * ((kiln_kt + " + n(stages - 1) +
         ") % " + S + "));");
    --indent_;
    line("}");
    line("{  // the last step");
    ++indent_;
    step(n(depth / bk - 1));
    line("kiln_wgmma_wait<0>();");
    wgmma_hold(t);
    --indent_;
    line("}");
    wgmma_out(t, p, i, j, epilogue);
    --indent_;
    line("}");
  }

  void emit_warpgroup_tile(const HalfProduct& p, const std::string& r, const std::string& i, const std::string& j,
                           int64_t bm, int64_t bn, int64_t bk, int64_t depth, const std::vector<Stmt>& epilogue) {
    auto n = [](int64_t v) { return std::to_string(v); };
    const int64_t mw = bm / 128;  // m64 blocks a warpgroup
    if ((bk != 64 && bk != 128) || depth % bk || (bm != 128 && bm != 256) || bn % 64 || bn > 256 || mw * bn / 2 > 128)
      not_tile("wgmma tile " + n(bm) + " x " + n(bk) + " x " + n(bn) + " over a reduction of " + n(depth) +
               ": rows 128 or 256, columns a multiple of 64 up to 256 (128 with 256 rows), depth 64 or 128 dividing the reduction");
    const ArrayTile& at = k_.array_tile;
    TileOperand ta = tile_operand(p.a, i, bm, r, depth, bk, p.dtype), tb = tile_operand(p.b, j, bn, r, depth, bk, p.dtype);
    const int64_t stages = tile_stages(at);
    check_stages(stages, warpgroup_shared_bytes(at));
    use_mma_ = true;  // the cp.async helpers
    const bool trans_a = ta.layout == Layout::TileMajor, trans_b = tb.layout == Layout::TileMajor;
    wgmma_helpers_ = wgmma_helper(bn, p.dtype == bf16, trans_a, trans_b);
    if (at.tma) {
      std::optional<TmaOperand> ma = tma_operand(ta, r, depth, bk), mb = tma_operand(tb, r, depth, bk);
      if (ma && mb) return emit_warpgroup_tma(ta, tb, *ma, *mb, i, j, bm, bn, bk, depth, trans_a, epilogue, p);
    }
    const WgmmaTile t = wgmma_tile(bm, bn, bk, trans_a, trans_b);
    line("// tensor cores (wgmma): " + n(bm) + " x " + n(bn) + " outputs a block of 2 warpgroups (each " + n(bm / 2) +
         " x " + n(bn) + "), the reduction in steps of " + n(bk));
    line("extern __shared__ __align__(1024) unsigned char kiln_wraw[];");
    line("unsigned char* const kiln_ws = kiln_wraw + ((1024u - (kiln_smem(kiln_wraw) & 1023u)) & 1023u);  // " + n(stages) +
         " stages of (A, B)");
    line("const int kiln_tid = threadIdx.x, kiln_lane = kiln_tid % 32, kiln_wg = kiln_tid / 128, kiln_wq = (kiln_tid / 32) % 4;");
    wgmma_accumulators(t);
    line("auto kiln_load = [&](int kiln_stage, long long kiln_k0) {");
    ++indent_;
    line("unsigned char* const kiln_sa = kiln_ws + kiln_stage * " + n(t.stage) + ";");
    line("unsigned char* const kiln_sb = kiln_sa + " + n(t.stage_a) + ";");
    copy_swizzled(ta, "kiln_sa", r, bk);
    copy_swizzled(tb, "kiln_sb", r, bk);
    --indent_;
    line("};");
    pipeline_prologue(stages, depth, bk);
    line("const unsigned kiln_s0 = kiln_smem(kiln_ws);");
    wgmma_descriptors(t);
    const std::string steps = n(depth / bk) + "LL", ahead = n(stages - 1);
    line("for (long long kiln_kt = 0; kiln_kt < " + steps + "; ++kiln_kt) {");
    ++indent_;
    line("kiln_cp_async_wait<" + n(stages - 2) + ">();");
    line("kiln_fence_async_shared();  // this thread's copies, seen by the tensor cores");
    line("__syncthreads();  // step kt is in; every warpgroup is done with step kt - 1, whose stage is written next");
    wgmma_multiply(t, "kiln_read");
    line("if (kiln_kt + " + ahead + " < " + steps + ") kiln_load(kiln_write, (kiln_kt + " + ahead + ") * " + n(bk) + "LL);");
    line("kiln_cp_async_commit();");
    line("kiln_wgmma_wait<0>();");
    wgmma_hold(t);
    line("kiln_read = kiln_read + 1 == " + n(stages) + " ? 0 : kiln_read + 1;");
    line("kiln_write = kiln_write + 1 == " + n(stages) + " ? 0 : kiln_write + 1;");
    --indent_;
    line("}");
    wgmma_out(t, p, i, j, epilogue);
  }

  void emit_tensor_core_tile() {
    const ArrayTile& at = k_.array_tile;
    TileBody t = tile_body(
        k_, nest_,
        [](const Kernel& k, const Stmt& loop) {
          std::optional<HalfProduct> p = half_product(k, loop);
          return p ? p : f32_product(k, loop);
        },
        [&](const std::string& why) { not_tile(why); });
    const HalfProduct* p = &t.product;
    const Expr &a = p->a, &b = p->b;
    const std::string &r = t.r, &i = t.i, &j = t.j;
    const int64_t bm = t.rows, bn = t.cols, depth = t.depth, bk = at.k;
    const std::vector<Stmt>& epilogue = t.epilogue;
    if (p->dtype == f32) {
      if (at.warpgroup) not_tile("wgmma tiles take f16 or bf16 operands");
      return emit_simt_tile(*p, a, b, r, i, j, bm, bn, bk, depth, epilogue);
    }
    if (at.warpgroup) return emit_warpgroup_tile(*p, r, i, j, bm, bn, bk, depth, epilogue);
    if (bm % 32 || bn % 64 || bk % 16 || bk < 16 || depth % bk || bm * bk % (8 * kMmaThreads) ||
        bn * bk % (8 * kMmaThreads))
      not_tile("tile " + std::to_string(bm) + " x " + std::to_string(bk) + " x " + std::to_string(bn) +
               " over a reduction of " + std::to_string(depth) +
               ": rows a multiple of 32, columns of 64, depth of 16 dividing the reduction, and each tile at least 2048 elements");
    TileOperand ta = tile_operand(a, i, bm, r, depth, bk, p->dtype), tb = tile_operand(b, j, bn, r, depth, bk, p->dtype);
    const int64_t stages = tile_stages(at), stage_a = tile_stage_elements(bm, bk), stage_b = tile_stage_elements(bn, bk);
    check_stages(stages, tile_shared_bytes(at));
    use_mma_ = true;
    const bool bf = p->dtype == bf16;
    const int64_t wm = bm / 2, wn = bn / 4, mi = wm / 16, ni = wn / 8;
    auto n = [](int64_t v) { return std::to_string(v); };
    line("// tensor cores: " + n(bm) + " x " + n(bn) + " outputs a block of 8 warps (each " + n(wm) + " x " + n(wn) +
         "), the reduction in steps of " + n(bk));
    line("extern __shared__ __align__(16) unsigned short kiln_tiles[];  // " + n(stages) + " stages of A, then of B");
    line("unsigned short* const kiln_as = kiln_tiles;");
    line("unsigned short* const kiln_bs = kiln_tiles + " + n(stages * stage_a) + ";");
    line("const int kiln_tid = threadIdx.x, kiln_lane = kiln_tid % 32, kiln_warp = kiln_tid / 32;");
    line("const int kiln_wm = (kiln_warp / 4) * " + n(wm) + ", kiln_wn = (kiln_warp % 4) * " + n(wn) + ";");
    line("float kiln_acc[" + n(mi) + "][" + n(ni) + "][4];");
    line("#pragma unroll");
    line("for (int kiln_x = 0; kiln_x < " + n(mi * ni * 4) + "; ++kiln_x) (&kiln_acc[0][0][0])[kiln_x] = 0.0f;");
    line("auto kiln_load = [&](int kiln_stage, long long kiln_k0) {");
    ++indent_;
    copy_tile(ta, "kiln_as", stage_a, r, bk);
    copy_tile(tb, "kiln_bs", stage_b, r, bk);
    --indent_;
    line("};");
    pipeline_prologue(stages, depth, bk);
    // Each lane's ldmatrix row address in the first stage (a shared-memory
    // byte address); the unrolled loops below add constants to it. Lane l
    // gives row l % 8 of matrix l / 8.
    line("const int kiln_q = kiln_lane / 8, kiln_qr = kiln_lane % 8;");
    const std::string pa = n(ta.pitch), pb = n(tb.pitch);
    if (ta.layout == Layout::TileMajor)
      line("const unsigned kiln_a_lane = kiln_smem(kiln_as) + 2u * unsigned(((kiln_q / 2) * 8 + kiln_qr) * " + pa +
           " + kiln_wm + (kiln_q % 2) * 8);");
    else
      line("const unsigned kiln_a_lane = kiln_smem(kiln_as) + 2u * unsigned((kiln_wm + (kiln_q % 2) * 8 + kiln_qr) * " + pa +
           " + (kiln_q / 2) * 8);");
    if (tb.layout == Layout::TileMajor)
      line("const unsigned kiln_b_lane = kiln_smem(kiln_bs) + 2u * unsigned(((kiln_q % 2) * 8 + kiln_qr) * " + pb +
           " + kiln_wn + (kiln_q / 2) * 8);");
    else
      line("const unsigned kiln_b_lane = kiln_smem(kiln_bs) + 2u * unsigned((kiln_wn + (kiln_q / 2) * 8 + kiln_qr) * " + pb +
           " + (kiln_q % 2) * 8);");
    pipeline_step(stages, depth, bk);
    line("const unsigned kiln_at = kiln_a_lane + kiln_read * " + n(2 * stage_a) + "u;");
    line("const unsigned kiln_bt = kiln_b_lane + kiln_read * " + n(2 * stage_b) + "u;");
    line("kiln_read = kiln_read + 1 == " + n(stages) + " ? 0 : kiln_read + 1;");
    line("#pragma unroll");
    line("for (int kiln_kk = 0; kiln_kk < " + n(bk) + "; kiln_kk += 16) {");
    ++indent_;
    line("unsigned kiln_a[" + n(mi) + "][4], kiln_b[" + n(ni) + "][2];");
    // A fragments: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    line("#pragma unroll");
    line("for (int kiln_i = 0; kiln_i < " + n(mi) + "; ++kiln_i) {");
    if (ta.layout == Layout::TileMajor)
      line("  kiln_ldmatrix_x4_trans(kiln_a[kiln_i], kiln_at + 2u * unsigned(kiln_kk * " + pa + " + kiln_i * 16));");
    else
      line("  kiln_ldmatrix_x4(kiln_a[kiln_i], kiln_at + 2u * unsigned(kiln_i * 16 * " + pa + " + kiln_kk));");
    line("}");
    // B fragments, two n8 tiles a load: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
    line("#pragma unroll");
    line("for (int kiln_j = 0; kiln_j < " + n(ni) + "; kiln_j += 2) {");
    if (tb.layout == Layout::TileMajor)
      line("  kiln_ldmatrix_x4_trans_pair(kiln_b[kiln_j], kiln_b[kiln_j + 1], kiln_bt + 2u * unsigned(kiln_kk * " + pb +
           " + kiln_j * 8));");
    else
      line("  kiln_ldmatrix_x4_pair(kiln_b[kiln_j], kiln_b[kiln_j + 1], kiln_bt + 2u * unsigned(kiln_j * 8 * " + pb +
           " + kiln_kk));");
    line("}");
    line("#pragma unroll");
    line("for (int kiln_i = 0; kiln_i < " + n(mi) + "; ++kiln_i)");
    line("  #pragma unroll");
    line("  for (int kiln_j = 0; kiln_j < " + n(ni) + "; ++kiln_j)");
    line(std::string("    kiln_mma_") + (bf ? "bf16" : "f16") + "(kiln_acc[kiln_i][kiln_j], kiln_a[kiln_i], kiln_b[kiln_j]);");
    --indent_;
    line("}");
    --indent_;
    line("}");
    // Accumulator e of (kiln_i, kiln_j): row lane/4 (+8 for e >= 2), column 2 (lane % 4) + e % 2.
    emit_accumulators({{"kiln_i", mi}, {"kiln_j", ni}, {"kiln_e", 4}}, i,
                      "kiln_wm + kiln_i * 16 + kiln_lane / 4 + (kiln_e / 2) * 8", j,
                      "kiln_wn + kiln_j * 8 + (kiln_lane % 4) * 2 + kiln_e % 2", buffer_name(p->acc),
                      "kiln_acc[kiln_i][kiln_j][kiln_e]", epilogue, /*pairs=*/true);
  }
};

}  // namespace

std::string cuda_entry_name(const Kernel& k) {
  std::string s = k.name.empty() ? "kernel" : k.name;
  for (char& c : s)
    if (!is_ascii_alnum(c)) c = '_';
  return is_safe_name(s) ? s : "kernel_" + s;
}

std::vector<CudaTensorMap> cuda_tensor_maps(const Kernel& k) {
  if (!k.array_tile.warpgroup || !k.array_tile.tma) return {};
  Kernel simplified = simplify_indices(k);
  Emitter e(simplified);
  e.emit(cuda_entry_name(k));
  return e.tensor_maps();
}

GpuGrid cuda_grid(const Kernel& k) { return cuda_grid(k, cuda_tensor_maps(k)); }

GpuGrid cuda_grid(const Kernel& k, const std::vector<CudaTensorMap>& maps) {
  GpuGrid g = gpu_grid(k, kBackend);
  if (k.array_tile.any()) {
    g.threads = {idx(maps.empty() ? Emitter::kMmaThreads : 384), idx(1), idx(1)};
    bool simt = false;
    visit(k.body, [&](const Stmt& s) { simt |= f32_product(k, s).has_value(); });
    g.dynamic_shared_bytes = simt ? simt_shared_bytes(k.array_tile)
                             : k.array_tile.warpgroup ? warpgroup_shared_bytes(k.array_tile)
                                                      : tile_shared_bytes(k.array_tile);
  }
  return g;
}

std::string cuda_emit_switches() {
  Switches s = switches();
  return std::string("preload ") + (s.preload ? "on" : "off") + ", factor " + (s.factor ? "on" : "off") +
         ", mma gemv " + (s.mma_gemv ? "on" : "off");
}

// Index arithmetic is simplified with the loops' bounds first (a q4 weight's
// flat group view leaves divisions that the bounds make exact), then
// invariant factors leave the unrolled sums (factor_sums) unless
// KILN_CUDA_FACTOR=0.
std::string emit_cuda(const Kernel& k, const std::string& entry_name) {
  Kernel simplified = simplify_indices(k);
  if (switches().factor) simplified = factor_sums(simplified);
  return Emitter(simplified).emit(entry_name);
}

}  // namespace kiln
