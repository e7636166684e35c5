#include "codegen/emit/glsl/emit_glsl.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <optional>
#include <limits>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "codegen/emit/glsl/glsl_library.h"
#include "codegen/simplify_indices.h"
#include "codegen/emit/gpu_nest.h"
#include "codegen/emit/vector_loads.h"
#include "codegen/ir_util.h"
#include "kiln/error.h"

namespace kiln {

namespace {

constexpr const char* kBackend = "glsl";

[[noreturn]] void fail(const Kernel& k, const std::string& what) {
  throw Error(std::string(kBackend) + ": kernel '" + k.name + "': " + what);
}

constexpr int64_t kTileThreads = 256;        // an f32 tile's workgroup (16 x 16 invocations)
constexpr int64_t kTileSharedBytes = 32768;  // what an f32 tile may take of shared memory

// The workgroup size is fixed in the shader: the gpu_thread loops' extents
// must be positive constants (an f32 tile's is kTileThreads).
std::array<int64_t, 3> workgroup_size(const Kernel& k, const GpuNest& nest) {
  std::array<int64_t, 3> size{1, 1, 1};
  if (k.array_tile.any()) return {kTileThreads, 1, 1};
  for (const GpuLoop& l : nest.loops) {
    if (l.stmt->loop != LoopKind::GpuThread) continue;
    const Expr& e = l.stmt->extent;
    if (e->kind != ExprKind::Const || e->ival <= 0)
      fail(k, "gpu_thread loop '" + l.stmt->var +
                  "' must have a positive constant extent (the workgroup size is fixed in the shader)");
    size[l.axis] = e->ival;
  }
  return size;
}

std::string glsl_type(ValType t) {
  switch (t) {
    case ValType::f32: return "float";
    case ValType::i32: return "int";
    case ValType::i64: return "int64_t";
    case ValType::b1: return "bool";
  }
  return "?";
}

// Comments hold free text (kernel names); keep them on one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// GLSL identifiers for IR names: the name itself where GLSL allows it, and
// unique across everything a shader declares.
class Names {
 public:
  std::string unique(const std::string& want) {
    std::string base = safe(want), name = base;
    for (int n = 2; taken_.count(name); ++n) name = base + std::to_string(n);
    taken_.insert(name);
    return name;
  }

  void reserve(const std::string& name) { taken_.insert(name); }

  // The same IR name always maps to the same identifier (nested loops may
  // reuse a name and shadow it, as in the IR).
  const std::string& of(const std::string& ir) {
    auto it = map_.find(ir);
    if (it == map_.end()) it = map_.emplace(ir, unique(ir)).first;
    return it->second;
  }

 private:
  static std::string safe(const std::string& want) {
    std::string s;
    for (char c : want) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      if (c != '_' || s.empty() || s.back() != '_') s += c;  // "__" is reserved
    }
    bool digit = !s.empty() && std::isdigit(static_cast<unsigned char>(s[0]));
    return s.empty() || digit || glsl_reserved(s) ? "v_" + s : s;
  }

  std::set<std::string> taken_;
  std::map<std::string, std::string> map_;
};

// An expression's text and its precedence (0 binds tightest), so that only the
// parentheses GLSL needs are printed.
struct Code {
  std::string text;
  int prec = 0;
};

enum Prec { kPrimary = 0, kUnary = 1, kMul = 2, kAdd = 3, kShift = 4, kRel = 5, kEq = 6, kBitAnd = 7,
            kLogAnd = 10, kLogOr = 12, kTernary = 13 };

std::string operand(const Code& c, int prec) { return c.prec > prec ? "(" + c.text + ")" : c.text; }
// Right operands of left-associative operators keep the IR's grouping.
std::string right_operand(const Code& c, int prec) { return c.prec >= prec ? "(" + c.text + ")" : c.text; }

Code infix(const Code& a, const char* op, const Code& b, int prec) {
  return {operand(a, prec) + " " + op + " " + right_operand(b, prec), prec};
}

Code call(const std::string& f, const std::vector<Code>& args) {
  std::string s = f + "(";
  for (size_t i = 0; i < args.size(); ++i) s += (i ? ", " : "") + args[i].text;
  return {s + ")", kPrimary};
}

std::string float_literal(double v) {
  float f = static_cast<float>(v);
  if (std::isnan(f)) return "uintBitsToFloat(0x7fc00000u)";
  if (std::isinf(f)) return f > 0 ? "uintBitsToFloat(0x7f800000u)" : "uintBitsToFloat(0xff800000u)";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", f);
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

Code int_literal(ValType t, int64_t v) {
  if (t == ValType::b1) return {v ? "true" : "false", kPrimary};
  const char* suffix = t == ValType::i64 ? "l" : "";
  if (t == ValType::i32) v = static_cast<int32_t>(v);
  int64_t min = t == ValType::i64 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int32_t>::min();
  if (v == min)  // its magnitude is not a literal of the type
    return {"(" + std::to_string(v + 1) + suffix + " - 1" + suffix + ")", kPrimary};
  return {std::to_string(v) + suffix, v < 0 ? kUnary : kPrimary};
}

// The kernel with its i64 values (loop variables, params, index arithmetic)
// as i32 (GlslOptions::index32); null where an i64 constant does not fit 32
// bits or a float is cast to i64 (which saturates at 64 bits). Casts between
// i32 and i64 vanish; bools cast to i32.
struct Narrower {
  std::map<const ExprNode*, Expr> done;
  bool fits = true;

  Expr expr(const Expr& e) {
    if (!e) return e;
    auto it = done.find(e.get());
    if (it != done.end()) return it->second;
    auto n = std::make_shared<ExprNode>(*e);
    for (Expr& a : n->args) a = expr(a);
    if (n->type == ValType::i64) {
      n->type = ValType::i32;
      if (n->kind == ExprKind::Const &&
          (n->ival < std::numeric_limits<int32_t>::min() || n->ival > std::numeric_limits<int32_t>::max()))
        fits = false;
    }
    Expr out = n;
    if (n->kind == ExprKind::Cast && e->type == ValType::i64) {
      // A float saturates at 64 bits: that is not 32 bits' saturation.
      if (e->args[0]->type == ValType::f32) fits = false;
      if (n->args[0]->type == n->type) out = n->args[0];
    }
    return done[e.get()] = out;
  }

  Stmt stmt(const Stmt& s) {
    auto n = std::make_shared<StmtNode>(*s);
    // A bound loop's extent is the launch's (the host evaluates it in 64 bits).
    bool bound = s->kind == StmtKind::For && (s->loop == LoopKind::GpuBlock || s->loop == LoopKind::GpuThread);
    if (!bound) n->extent = expr(s->extent);
    n->index = expr(s->index);
    n->value = expr(s->value);
    n->cond = expr(s->cond);
    for (Stmt& b : n->body) b = stmt(b);
    return n;
  }
};

std::optional<Kernel> narrow_indices(const Kernel& k) {
  Narrower n;
  Kernel out = k;
  out.body = n.stmt(k.body);
  if (!n.fits) return std::nullopt;
  return out;
}

// How a buffer lives in the shader.
struct BufferInfo {
  std::string array;            // the storage block instance or the array
  std::string block;            // the storage block's name
  std::string load, store;      // accessor functions
  int binding = -1;             // global buffers
  bool loaded = false, stored = false;
  std::string pieces;           // a uvec4 view of the same binding, for vector loads ("": none)
};

class Emitter {
 public:
  Emitter(const Kernel& k, const GlslOptions& options)
      : k_(k), opt_(options), nest_(find_gpu_nest(k, kBackend)), groups_(gpu_grid(nest_).blocks),
        size_(workgroup_size(k, nest_)), ix_(options.index32 ? "int" : "int64_t"),
        index_type_(options.index32 ? ValType::i32 : ValType::i64) {}

  std::string emit() {
    name_everything();
    // Each part records what the parts printed before it need.
    std::string body = main_body();
    std::string access = accessors();
    return header() + buffer_declarations() + tile_shared_ + allreduce_scratch() + helpers() + access +
           "\nvoid main() {\n" + body + "}\n";
  }

 private:
  // --- Names ---

  void name_everything() {
    for (const std::string& p : k_.params) names_.of(p);
    collect_loop_vars(k_.body);
    // The accessors' own names; the buffers they reach must not shadow them.
    for (const char* local : {"i", "v", "shift"}) names_.reserve(local);
    for (ValType t : nest_.allreduce_types) scratch_[t] = names_.unique("allreduce_" + std::string(valtype_name(t)));
    step_ = names_.unique("allreduce_step");
    buffers_.resize(k_.buffers.size());
    int binding = 0;
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const BufferDecl& b = k_.buffers[i];
      if (b.scope == MemScope::Global) {
        buffers_[i].binding = binding++;
        buffers_[i].block = names_.unique("Buf" + std::to_string(buffers_[i].binding));
      }
      buffers_[i].array = names_.unique(b.name);
      buffers_[i].load = names_.unique("load_" + b.name);
      buffers_[i].store = names_.unique("store_" + b.name);
    }
  }

  void collect_loop_vars(const Stmt& s) {
    if (!s) return;
    if (s->kind == StmtKind::For) {
      for (const std::string& p : k_.params)
        if (p == s->var) fail(k_, "loop variable '" + s->var + "' has the name of a parameter");
      names_.of(s->var);
    }
    for (const Stmt& c : s->body) collect_loop_vars(c);
  }

  // --- The shader around main() ---

  bool small_storage(int bytes) const {
    for (const BufferDecl& b : k_.buffers)
      if (b.scope == MemScope::Global && dtype_size(b.dtype) == bytes) return true;
    return false;
  }

  std::string header() {
    std::string s = "#version 450\n#extension GL_ARB_gpu_shader_int64 : require\n";
    if (opt_.storage16 && small_storage(2)) s += "#extension GL_EXT_shader_16bit_storage : require\n";
    if (opt_.storage8 && small_storage(1)) s += "#extension GL_EXT_shader_8bit_storage : require\n";
    if (unrolled_) s += "#extension GL_EXT_control_flow_attributes : require\n";
    if (subgroups_) s += "#extension GL_KHR_shader_subgroup_arithmetic : require\n";
    if (clustered_) s += "#extension GL_KHR_shader_subgroup_clustered : require\n";
    if (opt_.denorm_preserve || opt_.nan_preserve) s += "#extension GL_EXT_spirv_intrinsics : require\n";
    if (opt_.denorm_preserve) {
      s += "// f32 subnormals are kept: execution mode DenormPreserve (4459) for 32 bits.\n";
      s += "spirv_execution_mode(extensions = [\"SPV_KHR_float_controls\"], capabilities = [4464], 4459, 32);\n";
    }
    if (opt_.nan_preserve) {
      s += "// NaN, infinities and signed zeros are kept: SignedZeroInfNanPreserve (4461) for 32 bits.\n";
      s += "spirv_execution_mode(extensions = [\"SPV_KHR_float_controls\"], capabilities = [4466], 4461, 32);\n";
    }
    s += "\n// kiln kernel '" + one_line(k_.name) + "': workgroups (x, y, z) = (";
    for (int i = 0; i < 3; ++i) s += (i ? ", " : "") + print(groups_[i], k_);
    s += ") of " + std::to_string(size_[0]) + " x " + std::to_string(size_[1]) + " x " + std::to_string(size_[2]) +
         " invocations\n";
    s += "layout(local_size_x = " + std::to_string(size_[0]) + ", local_size_y = " + std::to_string(size_[1]) +
         ", local_size_z = " + std::to_string(size_[2]) + ") in;\n";
    if (!k_.params.empty()) {
      s += "layout(push_constant) uniform Params {";
      for (const std::string& p : k_.params) s += " int64_t " + names_.of(p) + ";";
      s += " } pc;\n";
    }
    return s;
  }

  // The element type of a global buffer's array: 8/16-bit elements are packed
  // four or two to a uint without the storage extensions.
  std::string element_type(DType t) const {
    switch (dtype_size(t)) {
      case 1: return opt_.storage8 ? "uint8_t" : "uint";
      case 2: return opt_.storage16 ? "uint16_t" : "uint";
      default: return t == f32 ? "float" : "int";
    }
  }

  bool packed(DType t) const {
    return (dtype_size(t) == 1 && !opt_.storage8) || (dtype_size(t) == 2 && !opt_.storage16);
  }

  std::string buffer_declarations() {
    std::string s;
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const BufferDecl& b = k_.buffers[i];
      const BufferInfo& info = buffers_[i];
      std::string type = glsl_type(valtype_of(b.dtype));
      std::string size = std::to_string(std::max<int64_t>(b.size, 1));  // GLSL has no empty arrays
      std::string what = std::string(dtype_name(b.dtype)) + " " + std::string(memscope_name(b.scope));
      if (b.scope == MemScope::Local) {
        s += type + " " + info.array + "[" + size + "];  // " + what + "\n";
      } else if (b.scope == MemScope::Shared) {
        s += "shared " + type + " " + info.array + "[" + size + "];  // " + what + "\n";
      } else {
        std::string binding = std::to_string(info.binding);
        s += "layout(std430, binding = " + binding + ") restrict " + (info.stored ? "" : "readonly ") +
             "buffer " + info.block + " { " + element_type(b.dtype) + " data[]; } " + info.array + ";  // " +
             what + (b.output ? " output" : "") + "\n";
        if (!info.pieces.empty())
          s += "layout(std430, binding = " + binding + ") restrict readonly buffer " + info.block +
               "_pieces { uvec4 data[]; } " + info.pieces + ";  // the same, 16 bytes an element\n";
      }
    }
    return s;
  }

  std::string allreduce_scratch() {
    std::string s;
    for (const auto& [t, name] : scratch_)
      s += "shared " + glsl_type(t) + " " + name + "[" + std::to_string(nest_.threads_per_block()) + "];  // for allreduce\n";
    return s;
  }

  std::string helpers() {
    std::string s;
    for (GlslHelper h : used_helpers_) s += glsl_helper_source(h);
    return s.empty() ? s : "\n" + s;
  }

  void use(GlslHelper h) {
    for (GlslHelper d : glsl_helper_deps(h)) use(d);
    used_helpers_.insert(h);
  }

  // --- Buffer accessors: load_x(i) and store_x(i, v) convert between the
  // storage dtype and the compute type, as emit_llvm.cpp does ---

  std::string accessors() {
    std::string s;
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const BufferDecl& b = k_.buffers[i];
      const BufferInfo& info = buffers_[i];
      std::string type = glsl_type(valtype_of(b.dtype));
      if (info.loaded)
        s += type + " " + info.load + "(" + ix_ + " i) { return " + load_text(b, info) + "; }\n";
      if (info.stored) s += "void " + info.store + "(" + ix_ + " i, " + type + " v) {" + store_text(b, info) + "}\n";
    }
    return s.empty() ? s : "\n" + s;
  }

  // The element's bits in the low bits of a uint.
  std::string bits_at(const BufferDecl& b, const std::string& array) const {
    if (!packed(b.dtype)) return "uint(" + array + ".data[uint(i)])";
    if (dtype_size(b.dtype) == 2) return "(" + array + ".data[uint(i >> 1)] >> (uint(i & " + lit(1) + ") * 16u)) & 0xffffu";
    return "(" + array + ".data[uint(i >> 2)] >> (uint(i & " + lit(3) + ") * 8u)) & 0xffu";
  }

  std::string load_text(const BufferDecl& b, const BufferInfo& info) {
    if (b.scope != MemScope::Global || b.dtype == f32 || b.dtype == i32)
      return info.array + (b.scope == MemScope::Global ? ".data" : "") + "[uint(i)]";
    return value_of_bits(b.dtype, bits_at(b, info.array));
  }

  // The compute value of a 8- or 16-bit element whose bits are the low bits
  // of the uint `bits`.
  std::string value_of_bits(DType t, const std::string& bits) {
    switch (t) {
      case f16: use(GlslHelper::F16Value); return "kiln_f16_value(" + bits + ")";
      case bf16: return "uintBitsToFloat((" + bits + ") << 16)";
      case i8: return "int((" + bits + ") << 24) >> 24";
      case u8: return "int(" + bits + ")";
      case boolean: return "(" + bits + ") != 0u";
      default: fail(k_, "unknown dtype");
    }
  }

  // The storage bits of `v` (the compute value) in a uint.
  std::string storage_bits(DType t) {
    switch (t) {
      case f16: use(GlslHelper::F16Bits); return "kiln_f16_bits(v)";
      case bf16: use(GlslHelper::Bf16Bits); return "kiln_bf16_bits(v)";
      case i8: case u8: return "uint(v) & 0xffu";
      case boolean: return "v ? 1u : 0u";
      default: fail(k_, "unknown dtype");
    }
  }

  std::string store_text(const BufferDecl& b, const BufferInfo& info) {
    if (b.scope != MemScope::Global) {
      Code v = round_code(b.dtype, {"v", kPrimary});
      return " " + info.array + "[uint(i)] = " + v.text + "; ";
    }
    std::string data = info.array + ".data";
    if (b.dtype == f32 || b.dtype == i32) return " " + data + "[uint(i)] = v; ";
    std::string bits = storage_bits(b.dtype);
    if (!packed(b.dtype))
      return " " + data + "[uint(i)] = " + element_type(b.dtype) + "(" + bits + "); ";
    // Clear then set this element's bits in the shared uint: other invocations
    // may be writing its neighbours.
    bool half = dtype_size(b.dtype) == 2;
    std::string word = data + (half ? "[uint(i >> 1)]" : "[uint(i >> 2)]");
    std::string shift = half ? "uint(i & " + lit(1) + ") * 16u" : "uint(i & " + lit(3) + ") * 8u";
    std::string mask = half ? "0xffffu" : "0xffu";
    return "\n  uint shift = " + shift + ";\n  atomicAnd(" + word + ", ~(" + mask + " << shift));\n  atomicOr(" +
           word + ", (" + bits + ") << shift);\n";
  }

  // --- main() ---

  std::string main_body() {
    indent_ = 1;
    for (const std::string& p : k_.params)
      line("const " + ix_ + " " + names_.of(p) + " = " + ix_ + "(pc." + names_.of(p) + ");");
    for (const GpuLoop& l : nest_.loops) {
      std::string id = l.stmt->loop == LoopKind::GpuBlock ? "gl_WorkGroupID." : "gl_LocalInvocationID.";
      bind(l.stmt, id + "xyz"[l.axis]);
    }
    if (k_.array_tile.any()) emit_simt_tile();
    else emit_stmts(*nest_.body);
    return out_;
  }

  // --- f32 tiles: a kernel with the schedule's array_tile ---
  //
  // As CUDA's SIMT tile (codegen/emit/cuda/emit_cuda.cpp): the per-thread
  // code `for i in BM { for j in BN { acc = 0; for r in K { acc += A[..i..r] *
  // B[..j..r] }; epilogue } }` under workgroup loops becomes one workgroup of
  // 16 x 16 invocations a BM x BN tile, each BM / 16 x BN / 16 outputs in
  // registers at rows (g * 64 + ty * 4 + e) and columns (g * 64 + tx * 4 +
  // e). The reduction goes in steps of BK through two stages of shared
  // memory (each BK rows of the tile's side, padded by 4 floats, read as
  // vec4s): the next step's elements are loaded into registers before the
  // current step is multiplied and stored after it, one barrier a step.

  [[noreturn]] void not_tile(const std::string& why) { fail(k_, "array_tile: not an f32 tile (" + why + ")"); }

  struct TileCopy {
    Expr operand;          // the load
    std::string tile_var;  // the tile loop it moves with
    int64_t tile = 0;      // that loop's extent
    bool k_fastest = false;  // consecutive invocations take consecutive steps of the reduction
    std::string regs, smem;  // the registers holding the next step, the shared array
  };

  // Invocation-local element p of a copy: (side, step) as GLSL uint expressions.
  std::pair<std::string, std::string> tile_element(const TileCopy& c, int64_t bk, int64_t p) {
    std::string e = "(kiln_tid + " + std::to_string(p * kTileThreads) + "u)";
    if (c.k_fastest) return {e + " / " + std::to_string(bk) + "u", e + " % " + std::to_string(bk) + "u"};
    return {e + " % " + std::to_string(c.tile) + "u", e + " / " + std::to_string(c.tile) + "u"};
  }

  // Loads the elements of the step at reduction offset `k0` into c.regs.
  void fetch(const TileCopy& c, const std::string& r, int64_t bk, const std::string& k0) {
    for (int64_t p = 0; p < c.tile * bk / kTileThreads; ++p) {
      auto [side, step] = tile_element(c, bk, p);
      line("{");
      ++indent_;
      line("const " + ix_ + " " + names_.of(c.tile_var) + " = " + ix_ + "(" + side + ");");
      line("const " + ix_ + " " + names_.of(r) + " = " + k0 + " + " + ix_ + "(" + step + ");");
      scope_.push_back(c.tile_var);
      scope_.push_back(r);
      begin_statement({c.operand});
      Code v = expr(c.operand);
      line(c.regs + "[" + std::to_string(p) + "] = " + v.text + ";");
      scope_.resize(scope_.size() - 2);
      --indent_;
      line("}");
    }
  }

  // Stores c.regs into stage `stage` (a uint expression) of c.smem.
  void put(const TileCopy& c, int64_t bk, const std::string& stage) {
    const std::string pitch = std::to_string(c.tile + 4), size = std::to_string(bk * (c.tile + 4));
    for (int64_t p = 0; p < c.tile * bk / kTileThreads; ++p) {
      auto [side, step] = tile_element(c, bk, p);
      std::string at = "(" + stage + ") * " + size + "u + (" + step + ") * " + pitch + "u + " + side;
      line("{ const uint kiln_at = " + at + "; " + c.smem + "[kiln_at >> 2][kiln_at & 3u] = " + c.regs + "[" +
           std::to_string(p) + "]; }");
    }
  }


  void emit_simt_tile() {
    const ArrayTile& at = k_.array_tile;
    if (at.warpgroup) not_tile("wgmma tiles are CUDA's");
    TileBody t = tile_body(k_, nest_, f32_product, [&](const std::string& why) { not_tile(why); });
    const HalfProduct* p = &t.product;
    const Expr &a = p->a, &b = p->b;
    const std::string &r = t.r, &i = t.i, &j = t.j;
    const int64_t bm = t.rows, bn = t.cols, depth = t.depth, bk = at.k;
    const std::vector<Stmt>& epilogue = t.epilogue;
    const int64_t shared_bytes = 4 * 2 * bk * (bm + 4 + bn + 4);
    if (bm % 64 || bn % 64 || bm > 128 || bn > 128 || bk < 4 || bk % 4 || depth % bk || bm * bk % kTileThreads ||
        bn * bk % kTileThreads || shared_bytes > kTileSharedBytes)
      not_tile("tile " + std::to_string(bm) + " x " + std::to_string(bk) + " x " + std::to_string(bn) +
               " over a reduction of " + std::to_string(depth) +
               ": rows and columns 64 or 128, a depth that is a multiple of 4 dividing the reduction, each tile at "
               "least 256 elements and both stages within " + std::to_string(kTileSharedBytes) + " bytes");
    unrolled_ = true;
    const int64_t tm = bm / 16, tn = bn / 16, steps = depth / bk;
    auto n = [](int64_t v) { return std::to_string(v); };
    TileCopy ca{a, i, bm, offset_base(a->args[0], r) != nullptr, names_.unique("kiln_next_a"), names_.unique("kiln_as")};
    TileCopy cb{b, j, bn, offset_base(b->args[0], r) != nullptr, names_.unique("kiln_next_b"), names_.unique("kiln_bs")};
    tile_shared_ = "shared vec4 " + ca.smem + "[" + n(2 * bk * (bm + 4) / 4) + "];  // 2 stages of A's tile\n" +
                   "shared vec4 " + cb.smem + "[" + n(2 * bk * (bn + 4) / 4) + "];  // 2 stages of B's tile\n";
    line("// " + n(bm) + " x " + n(bn) + " outputs a workgroup of 16 x 16 invocations (each " + n(tm) + " x " + n(tn) +
         "), the reduction in steps of " + n(bk));
    line("const uint kiln_tid = gl_LocalInvocationIndex, kiln_tx = kiln_tid % 16u, kiln_ty = kiln_tid / 16u;");
    line("float kiln_acc[" + n(tm * tn) + "];");
    line("[[unroll]] for (int kiln_x = 0; kiln_x < " + n(tm * tn) + "; ++kiln_x) kiln_acc[kiln_x] = 0.0;");
    line("float " + ca.regs + "[" + n(bm * bk / kTileThreads) + "], " + cb.regs + "[" + n(bn * bk / kTileThreads) + "];");
    fetch(ca, r, bk, lit(0));
    fetch(cb, r, bk, lit(0));
    put(ca, bk, "0u");
    put(cb, bk, "0u");
    line("memoryBarrierShared();");
    line("barrier();");
    line("for (int kiln_kt = 0; kiln_kt < " + n(steps) + "; ++kiln_kt) {");
    ++indent_;
    line("const uint kiln_cur = uint(kiln_kt) & 1u;");
    line("if (kiln_kt + 1 < " + n(steps) + ") {");
    ++indent_;
    fetch(ca, r, bk, ix_ + "(kiln_kt + 1) * " + lit(bk));
    fetch(cb, r, bk, ix_ + "(kiln_kt + 1) * " + lit(bk));
    --indent_;
    line("}");
    line("const uint kiln_a0 = kiln_cur * " + n(bk * (bm + 4) / 4) + "u + kiln_ty, kiln_b0 = kiln_cur * " +
         n(bk * (bn + 4) / 4) + "u + kiln_tx;");
    line("[[unroll]] for (uint kiln_kk = 0u; kiln_kk < " + n(bk) + "u; ++kiln_kk) {");
    ++indent_;
    line("vec4 kiln_a[" + n(tm / 4) + "], kiln_b[" + n(tn / 4) + "];");
    line("[[unroll]] for (uint kiln_g = 0u; kiln_g < " + n(tm / 4) + "u; ++kiln_g) kiln_a[kiln_g] = " + ca.smem +
         "[kiln_a0 + kiln_kk * " + n((bm + 4) / 4) + "u + kiln_g * 16u];");
    line("[[unroll]] for (uint kiln_g = 0u; kiln_g < " + n(tn / 4) + "u; ++kiln_g) kiln_b[kiln_g] = " + cb.smem +
         "[kiln_b0 + kiln_kk * " + n((bn + 4) / 4) + "u + kiln_g * 16u];");
    line("[[unroll]] for (uint kiln_i = 0u; kiln_i < " + n(tm) + "u; ++kiln_i)");
    line("  [[unroll]] for (uint kiln_j = 0u; kiln_j < " + n(tn) + "u; ++kiln_j)");
    line("    kiln_acc[kiln_i * " + n(tn) + "u + kiln_j] = fma(kiln_a[kiln_i >> 2][kiln_i & 3u], kiln_b[kiln_j >> 2][kiln_j & 3u], kiln_acc[kiln_i * " +
         n(tn) + "u + kiln_j]);");
    --indent_;
    line("}");
    line("if (kiln_kt + 1 < " + n(steps) + ") {");
    ++indent_;
    put(ca, bk, "kiln_cur ^ 1u");
    put(cb, bk, "kiln_cur ^ 1u");
    --indent_;
    line("}");
    line("memoryBarrierShared();");
    line("barrier();");
    --indent_;
    line("}");
    line("[[unroll]] for (int kiln_i = 0; kiln_i < " + n(tm) + "; ++kiln_i) {");
    ++indent_;
    line("[[unroll]] for (int kiln_j = 0; kiln_j < " + n(tn) + "; ++kiln_j) {");
    ++indent_;
    line("const " + ix_ + " " + names_.of(i) + " = " + ix_ + "((kiln_i / 4) * 64 + int(kiln_ty) * 4 + kiln_i % 4);");
    line("const " + ix_ + " " + names_.of(j) + " = " + ix_ + "((kiln_j / 4) * 64 + int(kiln_tx) * 4 + kiln_j % 4);");
    scope_.push_back(i);
    scope_.push_back(j);
    line(buffers_[size_t(p->acc)].array + "[0] = kiln_acc[kiln_i * " + n(tn) + " + kiln_j];");
    emit_stmts(epilogue);
    scope_.resize(scope_.size() - 2);
    --indent_;
    line("}");
    --indent_;
    line("}");
  }

  void bind(const StmtNode* loop, const std::string& builtin) {
    line("const " + ix_ + " " + names_.of(loop->var) + " = " + ix_ + "(" + builtin + ");  // " +
         std::string(loopkind_name(loop->loop)) + " loop");
    scope_.push_back(loop->var);
  }

  void line(const std::string& s) { out_ += std::string(2 * indent_, ' ') + s + "\n"; }

  // An index literal: 8l, or 8 with 32-bit indices.
  std::string lit(int64_t v) const { return std::to_string(v) + (opt_.index32 ? "" : "l"); }

  void emit_stmts(const std::vector<Stmt>& stmts) {
    for (const Stmt& s : stmts) emit_stmt(*s);
  }

  void emit_stmt(const StmtNode& s) {
    switch (s.kind) {
      case StmtKind::For: return emit_for(s);
      case StmtKind::Store: return emit_store(s);
      case StmtKind::Block: return emit_stmts(s.body);
      case StmtKind::If: return emit_if(s);
      case StmtKind::AllReduce: return emit_allreduce(s);
    }
    fail(k_, "unknown statement kind");
  }

  // A tree over shared memory: each round halves the threads that combine.
  // Threads combine with those of their own row (the same indices on the
  // other thread axes), `stride` apart in the block's linear order. Barriers
  // sit in uniform control flow; the last one lets the next allreduce reuse
  // the scratch.
  void emit_allreduce(const StmtNode& s) {
    if (subgroup_allreduce(s)) return;
    ValType t = valtype_of(buffer(s.buffer).dtype);
    const std::string &red = scratch_.at(t), &acc = buffers_[s.buffer].array;
    std::string me = "gl_LocalInvocationIndex", n = std::to_string(nest_.allreduce_threads) + "u";
    std::string c = std::string("gl_LocalInvocationID.") + "xyz"[nest_.allreduce_axis];
    int64_t stride = nest_.allreduce_stride();
    std::string first = stride == 1 && nest_.threads_per_block() == nest_.allreduce_threads
                            ? std::string("0")
                            : "(" + me + " - " + c + (stride == 1 ? "" : " * " + std::to_string(stride) + "u") + ")";
    std::string step = stride == 1 ? step_ : step_ + " * " + std::to_string(stride) + "u";
    int64_t half = 1;
    while (half * 2 < nest_.allreduce_threads) half *= 2;
    line("// allreduce " + one_line(buffer(s.buffer).name) + " " + std::string(binop_name(s.binop)));
    line(red + "[" + me + "] = " + acc + "[0];");
    line("memoryBarrierShared();");
    line("barrier();");
    line("for (uint " + step_ + " = " + std::to_string(half) + "u; " + step_ + " > 0u; " + step_ + " >>= 1u) {");
    ++indent_;
    Code mine = {red + "[" + me + "]", kPrimary}, other = {red + "[" + me + " + " + step + "]", kPrimary};
    line("if (" + c + " < " + step_ + " && " + c + " + " + step_ + " < " + n + ") " + mine.text + " = " +
         combine(s.binop, t, mine, other).text + ";");
    line("memoryBarrierShared();");
    line("barrier();");
    --indent_;
    line("}");
    line(acc + "[0] = " + red + "[" + first + "];");
    line("memoryBarrierShared();");
    line("barrier();");
  }

  // A sum over the whole x axis in blocks of whole subgroups (a GEMV's or an
  // attention score's row of 32 or 8 lanes, a norm's row of 256): the
  // subgroup adds its own invocations (clustered for rows shorter than a
  // subgroup); rows longer than a subgroup add their subgroups' sums through
  // shared memory, one barrier. Max and min keep the shared-memory tree (a
  // subgroup max's NaN handling is the driver's). False where it does not apply.
  bool subgroup_allreduce(const StmtNode& s) {
    int64_t sg = opt_.subgroup_size, n = nest_.allreduce_threads;
    auto pow2 = [](int64_t x) { return x > 0 && (x & (x - 1)) == 0; };
    if (sg <= 0 || s.binop != BinOp::Add || nest_.allreduce_axis != 0 || nest_.block_threads[0] != n || !pow2(sg) ||
        !pow2(n) || nest_.threads_per_block() % sg || (n < sg && !opt_.subgroup_clustered))
      return false;
    const std::string& acc = buffers_[s.buffer].array;
    std::string sgs = std::to_string(sg) + "u";
    subgroups_ = true;
    line("// allreduce " + one_line(buffer(s.buffer).name) + " add, by subgroup operations");
    if (n < sg) {
      clustered_ = true;
      line(acc + "[0] = subgroupClusteredAdd(" + acc + "[0], " + std::to_string(n) + "u);");
      return true;
    }
    line(acc + "[0] = subgroupAdd(" + acc + "[0]);");
    if (n == sg) return true;
    const std::string& red = scratch_.at(valtype_of(buffer(s.buffer).dtype));
    std::string first = names_.unique("row_first"), j = names_.unique("j"), parts = std::to_string(n / sg) + "u";
    line("if (gl_SubgroupInvocationID == 0u) " + red + "[gl_LocalInvocationIndex / " + sgs + "] = " + acc + "[0];");
    line("memoryBarrierShared();");
    line("barrier();");
    line("{");
    line("  const uint " + first + " = gl_LocalInvocationIndex / " + std::to_string(n) + "u * " + parts + ";");
    line("  " + acc + "[0] = " + red + "[" + first + "];");
    line("  for (uint " + j + " = 1u; " + j + " < " + parts + "; ++" + j + ") " + acc + "[0] = " + acc + "[0] + " + red +
         "[" + first + " + " + j + "];");
    line("}");
    line("memoryBarrierShared();");
    line("barrier();");
    return true;
  }

  // Max and min follow fmax/fmin (a NaN operand yields the other); ints wrap.
  Code combine(BinOp op, ValType t, const Code& a, const Code& b) {
    return t == ValType::f32 ? float_binary(op, a, b) : int_binary(op, a, b);
  }

  void emit_for(const StmtNode& s) {
    begin_statement({s.extent});
    Code extent = expr(s.extent, index_type_, "loop extent");
    const std::string& v = names_.of(s.var);
    // The IR evaluates the extent once, before the loop.
    if (s.extent->kind != ExprKind::Const && s.extent->kind != ExprKind::Var) {
      std::string end = names_.unique(v + "_end");
      line("const " + ix_ + " " + end + " = " + extent.text + ";");
      extent = {end, kPrimary};
    }
    std::vector<const ExprNode*> vectors = vector_loads(s);
    if (s.loop == LoopKind::Unrolled) {
      unrolled_ = true;
      line("[[unroll]]");
    }
    std::string kind = s.loop == LoopKind::Serial ? "" : "  // " + std::string(loopkind_name(s.loop));
    line("for (" + ix_ + " " + v + " = 0; " + v + " < " + extent.text + "; ++" + v + ") {" + kind);
    scope_.push_back(s.var);
    ++indent_;
    emit_stmts(s.body);
    --indent_;
    scope_.pop_back();
    line("}");
    for (const ExprNode* load : vectors) vector_element_.erase(load);
  }

  // The loads of an unrolled loop that read whole 16-byte pieces of a buffer
  // (find_vector_loads) are read before the loop as uvec4s through a second
  // view of the buffer's binding, and the body takes its element of them:
  // a thread of a GEMV has 16 bytes of its row in flight a load, not 2.
  // Returns the loads so read.
  std::vector<const ExprNode*> vector_loads(const StmtNode& loop) {
    std::vector<const ExprNode*> done;
    std::vector<std::string> arrays;  // per load: the array holding its pieces
    for (const VectorLoad& v : find_vector_loads(k_, loop, true)) {
      const BufferDecl& b = buffer(v.load->buffer);
      BufferInfo& info = buffers_[v.load->buffer];
      if (v.first == arrays.size()) {
        arrays.push_back(names_.unique("pieces"));
        if (info.pieces.empty()) info.pieces = names_.unique(b.name + "_pieces");
        begin_statement({v.base});
        Code base = index_code(v.base);
        int64_t count = v.bytes / 16, per_piece = 16 / dtype_size(b.dtype);
        line("uvec4 " + arrays.back() + "[" + std::to_string(count) + "];  // " + std::to_string(v.elems) +
             " elements of " + one_line(b.name));
        for (int64_t p = 0; p < count; ++p)
          line(arrays.back() + "[" + std::to_string(p) + "] = " + info.pieces + ".data[uint((" + base.text +
               ") / " + lit(per_piece) + ") + " + std::to_string(p) + "u];");
      } else {
        arrays.push_back(arrays[v.first]);
      }
      vector_element_[v.load] = {arrays.back(), loop.var, v.element};
      done.push_back(v.load);
    }
    return done;
  }

  // Element `j` (a uint) of the pieces `array` of a buffer of dtype t.
  std::string piece_element(DType t, const std::string& array, const std::string& j) {
    int64_t size = dtype_size(t), per_word = 4 / size;
    int word_shift = per_word == 1 ? 0 : per_word == 2 ? 1 : 2;
    std::string word = array + "[" + j + " >> " + std::to_string(word_shift + 2) + "u][(" + j + " >> " +
                       std::to_string(word_shift) + "u) & 3u]";
    if (t == f32) return "uintBitsToFloat(" + word + ")";
    if (t == i32) return "int(" + word + ")";
    std::string bits = "(" + word + " >> ((" + j + " & " + std::to_string(per_word - 1) + "u) * " +
                       std::to_string(8 * size) + "u)) & " + (size == 2 ? "0xffffu" : "0xffu");
    return value_of_bits(t, bits);
  }

  void emit_if(const StmtNode& s) {
    begin_statement({s.cond});
    Code cond = expr(s.cond, ValType::b1, "if condition");
    line("if (" + cond.text + ") {");
    ++indent_;
    emit_stmts(s.body);
    --indent_;
    line("}");
  }

  void emit_store(const StmtNode& s) {
    const BufferDecl& b = buffer(s.buffer);
    if (!s.value || s.value->type != valtype_of(b.dtype))
      fail(k_, "a store of " + std::string(s.value ? valtype_name(s.value->type) : "nothing") + " to " +
                   std::string(dtype_name(b.dtype)) + " buffer '" + b.name + "'");
    begin_statement({s.index, s.value});
    Code index = index_code(s.index);
    Code value = expr(s.value);
    buffers_[s.buffer].stored = true;
    line(buffers_[s.buffer].store + "(" + index.text + ", " + value.text + ");");
  }

  const BufferDecl& buffer(int i) {
    if (i < 0 || i >= int(k_.buffers.size())) fail(k_, "buffer index " + std::to_string(i) + " out of range");
    return k_.buffers[i];
  }

  Code index_code(const Expr& e) {
    if (!e || (e->type != ValType::i64 && e->type != ValType::i32)) fail(k_, "a buffer index must be an integer");
    return expr(e);
  }

  // --- Expressions. A subexpression used more than once in a statement is
  // computed once, into a const temporary declared before the statement ---

  void begin_statement(const std::vector<Expr>& roots) {
    uses_.clear();
    temps_.clear();
    for (const Expr& e : roots) count_uses(e);
  }

  void count_uses(const Expr& e) {
    if (!e) return;
    if (uses_[e.get()]++) return;
    for (const Expr& a : e->args) count_uses(a);
  }

  Code expr(const Expr& e, ValType want, const char* what) {
    if (!e || e->type != want)
      fail(k_, std::string("the ") + what + " must be " + std::string(valtype_name(want)));
    return expr(e);
  }

  Code expr(const Expr& e) {
    if (!e) fail(k_, "missing expression");
    bool leaf = e->kind == ExprKind::Const || e->kind == ExprKind::Var;
    if (leaf || uses_[e.get()] < 2) return compute(*e);
    auto it = temps_.find(e.get());
    if (it != temps_.end()) return {it->second, kPrimary};
    Code c = compute(*e);
    std::string t = names_.unique("t" + std::to_string(temps_made_++));
    line("const " + glsl_type(e->type) + " " + t + " = " + c.text + ";");
    temps_[e.get()] = t;
    return {t, kPrimary};
  }

  Code compute(const ExprNode& e) {
    switch (e.kind) {
      case ExprKind::Const:
        if (e.type == ValType::f32) {
          std::string s = float_literal(e.fval);
          return {s, s[0] == '-' ? kUnary : kPrimary};
        }
        return int_literal(e.type, e.ival);
      case ExprKind::Var: return variable(e);
      case ExprKind::Load: return load_code(e);
      case ExprKind::Unary: return unary_code(e);
      case ExprKind::Binary: return binary_code(e);
      case ExprKind::Select: {
        if (e.args.size() != 3 || !e.args[0] || e.args[0]->type != ValType::b1)
          fail(k_, "select takes a bool condition and two values");
        Code c = expr(e.args[0]), a = expr(e.args[1]), b = expr(e.args[2]);
        return {operand(c, kTernary - 1) + " ? " + operand(a, kTernary - 1) + " : " + operand(b, kTernary - 1),
                kTernary};
      }
      case ExprKind::Cast: return cast_code(e.type, arg(e, 0)->type, expr(arg(e, 0)));
      case ExprKind::Round: return round_code(e.round_to, expr(arg(e, 0)));
    }
    fail(k_, "unknown expression kind");
  }

  const Expr& arg(const ExprNode& e, size_t i) {
    if (i >= e.args.size() || !e.args[i]) fail(k_, "missing operand");
    return e.args[i];
  }

  Code variable(const ExprNode& e) {
    bool known = false;
    for (const std::string& p : k_.params) known |= p == e.name;
    for (const std::string& v : scope_) known |= v == e.name;
    if (!known) fail(k_, "variable '" + e.name + "' is neither a parameter nor an enclosing loop variable");
    return {names_.of(e.name), kPrimary};
  }

  Code load_code(const ExprNode& e) {
    const BufferDecl& b = buffer(e.buffer);
    if (e.type != valtype_of(b.dtype))
      fail(k_, "a load of " + std::string(valtype_name(e.type)) + " from " + std::string(dtype_name(b.dtype)) +
                   " buffer '" + b.name + "'");
    if (e.args.size() != 1) fail(k_, "a load takes one index");
    auto vec = vector_element_.find(&e);
    if (vec != vector_element_.end()) {
      Code j = vec->second.element ? index_code(vec->second.element) : Code{names_.of(vec->second.loop), kPrimary};
      return {"(" + piece_element(b.dtype, vec->second.array, "uint(" + j.text + ")") + ")", kPrimary};
    }
    buffers_[e.buffer].loaded = true;
    return call(buffers_[e.buffer].load, {index_code(e.args[0])});
  }

  Code unary_code(const ExprNode& e) {
    Code a = expr(arg(e, 0));
    ValType t = e.args[0]->type;
    auto math = [&](GlslHelper h, const char* f) {
      if (t != ValType::f32) fail(k_, std::string(unop_name(e.unop)) + " takes f32");
      use(h);
      return call(f, {a});
    };
    switch (e.unop) {
      case UnOp::Neg:
        if (t == ValType::b1) fail(k_, "neg does not take bool");
        return {"-" + right_operand(a, kUnary), kUnary};  // "-(-x)", never "--x"
      case UnOp::Exp2: return math(GlslHelper::Exp2, "kiln_exp2");
      case UnOp::Log2: return math(GlslHelper::Log2, "kiln_log2");
      case UnOp::Sqrt: return math(GlslHelper::Sqrt, "kiln_sqrt");
      case UnOp::Sin: return math(GlslHelper::Sin, "kiln_sin");
      case UnOp::Recip:
        if (t != ValType::f32) fail(k_, "recip takes f32");
        return infix({"1.0", kPrimary}, "/", a, kMul);
      case UnOp::Not: return {(t == ValType::b1 ? "!" : "~") + right_operand(a, kUnary), kUnary};
    }
    fail(k_, "unknown unary op");
  }

  Code binary_code(const ExprNode& e) {
    if (e.args.size() != 2 || !e.args[0] || !e.args[1] || e.args[0]->type != e.args[1]->type)
      fail(k_, std::string(binop_name(e.binop)) + " takes two operands of one type");
    Code a = expr(e.args[0]), b = expr(e.args[1]);
    switch (e.args[0]->type) {
      case ValType::f32: return float_binary(e.binop, a, b);
      case ValType::b1: return bool_binary(e.binop, a, b);
      default: return int_binary(e.binop, a, b);
    }
  }

  Code float_binary(BinOp op, const Code& a, const Code& b) {
    switch (op) {
      case BinOp::Add: return infix(a, "+", b, kAdd);
      case BinOp::Sub: return infix(a, "-", b, kAdd);
      case BinOp::Mul: return infix(a, "*", b, kMul);
      case BinOp::Div: return infix(a, "/", b, kMul);
      case BinOp::Max: use(GlslHelper::Max); return call("kiln_max", {a, b});
      case BinOp::Min: use(GlslHelper::Max); return call("kiln_min", {a, b});
      case BinOp::CmpLt: use(GlslHelper::Compare); return call("kiln_lt", {a, b});
      case BinOp::CmpEq: use(GlslHelper::Compare); return call("kiln_eq", {a, b});
      default: fail(k_, std::string(binop_name(op)) + " does not take f32");
    }
  }

  // GLSL integers wrap like the IR's; division goes through kiln_div/kiln_mod.
  Code int_binary(BinOp op, const Code& a, const Code& b) {
    switch (op) {
      case BinOp::Add: return infix(a, "+", b, kAdd);
      case BinOp::Sub: return infix(a, "-", b, kAdd);
      case BinOp::Mul: return infix(a, "*", b, kMul);
      case BinOp::Div: use(GlslHelper::DivMod); return call("kiln_div", {a, b});
      case BinOp::Mod: use(GlslHelper::DivMod); return call("kiln_mod", {a, b});
      case BinOp::Max: return call("max", {a, b});
      case BinOp::Min: return call("min", {a, b});
      case BinOp::CmpLt: return infix(a, "<", b, kRel);
      case BinOp::CmpEq: return infix(a, "==", b, kEq);
      default: fail(k_, std::string(binop_name(op)) + " does not take integers");
    }
  }

  // false < true, so Max is Or and Min is And.
  Code bool_binary(BinOp op, const Code& a, const Code& b) {
    switch (op) {
      case BinOp::CmpEq: return infix(a, "==", b, kEq);
      case BinOp::CmpLt: return {"!" + right_operand(a, kUnary) + " && " + right_operand(b, kLogAnd), kLogAnd};
      case BinOp::Max: case BinOp::Or: return infix(a, "||", b, kLogOr);
      case BinOp::Min: case BinOp::And: return infix(a, "&&", b, kLogAnd);
      default: fail(k_, std::string(binop_name(op)) + " does not take bool");
    }
  }

  Code cast_code(ValType to, ValType from, const Code& a) {
    auto is_int = [](ValType t) { return t == ValType::i32 || t == ValType::i64; };
    if (from == to) return a;
    if (from == ValType::i32 && to == ValType::i64) {
      use(GlslHelper::ToI64);
      return call("kiln_to_i64", {a});
    }
    if (is_int(from) && (is_int(to) || to == ValType::f32)) return call(glsl_type(to), {a});
    if (from == ValType::f32 && is_int(to)) {
      use(GlslHelper::ToInt);
      return call(to == ValType::i32 ? "kiln_to_i32" : "kiln_to_i64", {a});
    }
    if (from == ValType::b1) {
      const char* one = to == ValType::f32 ? "1.0" : to == ValType::i64 ? "1l" : "1";
      const char* zero = to == ValType::f32 ? "0.0" : to == ValType::i64 ? "0l" : "0";
      return {operand(a, kTernary - 1) + " ? " + one + " : " + zero, kTernary};
    }
    if (from == ValType::f32) {
      use(GlslHelper::ToBool);
      return call("kiln_to_bool", {a});
    }
    return infix(a, "!=", {from == ValType::i64 ? "0l" : "0", kPrimary}, kEq);
  }

  // The nearest value of `to`, kept in the compute type (f32 or i32).
  Code round_code(DType to, const Code& v) {
    switch (to) {
      case f16:
        use(GlslHelper::F16Bits);
        use(GlslHelper::F16Value);
        return {"kiln_f16_value(kiln_f16_bits(" + v.text + "))", kPrimary};
      case bf16:
        use(GlslHelper::Bf16Bits);
        return {"uintBitsToFloat(kiln_bf16_bits(" + v.text + ") << 16)", kPrimary};
      case i8: return infix(infix(v, "<<", {"24", kPrimary}, kShift), ">>", {"24", kPrimary}, kShift);
      case u8: return infix(v, "&", {"0xff", kPrimary}, kBitAnd);
      case f32: case i32: case boolean: return v;
    }
    fail(k_, "unknown dtype");
  }

  const Kernel& k_;
  GlslOptions opt_;
  GpuNest nest_;
  std::array<Expr, 3> groups_;   // workgroup counts x, y, z
  std::array<int64_t, 3> size_;  // the workgroup size
  std::string ix_;               // the GLSL type of indices: int or int64_t
  ValType index_type_;           // and the IR's
  Names names_;
  std::vector<BufferInfo> buffers_;
  std::set<GlslHelper> used_helpers_;
  // Loads read by vector_loads(): the array of their pieces, the loop whose
  // variable picks the element, and the element iteration takes (null: the
  // loop variable itself).
  struct VectorElement {
    std::string array, loop;
    Expr element;
  };
  std::map<const ExprNode*, VectorElement> vector_element_;
  std::map<ValType, std::string> scratch_;  // shared arrays for allreduce, per accumulator type
  std::string step_;                        // the allreduce tree's loop variable
  bool unrolled_ = false;
  bool subgroups_ = false, clustered_ = false;  // subgroup operations used
  std::string tile_shared_;                     // an f32 tile's shared arrays
  std::vector<std::string> scope_;  // IR names of the enclosing loop variables
  std::map<const ExprNode*, int> uses_;
  std::map<const ExprNode*, std::string> temps_;
  int temps_made_ = 0;
  std::string out_;
  int indent_ = 1;
};

}  // namespace

std::array<int64_t, 3> workgroup_size(const Kernel& k) { return workgroup_size(k, find_gpu_nest(k, kBackend)); }

// Index arithmetic is simplified with the loops' bounds first, as for CUDA.
std::string emit_glsl(const Kernel& k, const GlslOptions& options) {
  Kernel simplified = simplify_indices(k);
  std::optional<Kernel> narrow = options.index32 ? narrow_indices(simplified) : std::nullopt;
  GlslOptions o = options;
  o.index32 = narrow.has_value();
  return Emitter(narrow ? *narrow : simplified, o).emit();
}

bool uses_index32(const Kernel& k, const GlslOptions& options) {
  return options.index32 && narrow_indices(simplify_indices(k)).has_value();
}

}  // namespace kiln
