#include "codegen/emit/llvm/emit_llvm.h"

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

#include <llvm/IR/Constants.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>

#include "codegen/emit/llvm/math.h"
#include "codegen/ir_util.h"
#include "codegen/simplify_indices.h"
#include "kiln/error.h"

namespace kiln {

namespace {

[[noreturn]] void fail(const Kernel& k, const std::string& what) {
  throw Error("cpu backend: kernel '" + k.name + "': " + what);
}

const std::vector<Stmt>& top_level(const Kernel& k) {
  if (!k.body || k.body->kind != StmtKind::Block) fail(k, "the kernel body must be a block");
  return k.body->body;
}

bool is_parallel(const Stmt& s) { return s->kind == StmtKind::For && s->loop == LoopKind::Parallel; }

void reject_parallel(const Kernel& k, const std::vector<Stmt>& stmts) {
  for (const Stmt& s : stmts) {
    if (!s) fail(k, "missing statement");
    if (is_parallel(s))
      fail(k, "parallel loop '" + s->var +
                  "' is nested inside another statement; only a top-level parallel loop is supported");
    reject_parallel(k, s->body);
  }
}

// The scheduler never asks for more; larger loops are a bug upstream.
constexpr int64_t kMaxUnroll = 1024;
constexpr int64_t kMaxLanes = 64;

bool uses(const Expr& e, const std::string& v) {
  if (!e) return false;
  if (e->kind == ExprKind::Var && e->name == v) return true;
  for (const Expr& a : e->args)
    if (uses(a, v)) return true;
  return false;
}

// The coefficient c of `v` in an i64 index c*v + (terms free of v), modulo 2^64
// like the index arithmetic itself; nullopt when the index is not of that form.
std::optional<uint64_t> coefficient(const Expr& e, const std::string& v) {
  if (!uses(e, v)) return 0;
  if (e->type != ValType::i64) return std::nullopt;
  if (e->kind == ExprKind::Var) return 1;
  if (e->kind != ExprKind::Binary) return std::nullopt;
  std::optional<uint64_t> a = coefficient(e->args[0], v), b = coefficient(e->args[1], v);
  if (!a || !b) return std::nullopt;
  switch (e->binop) {
    case BinOp::Add: return *a + *b;
    case BinOp::Sub: return *a - *b;
    case BinOp::Mul:
      if (e->args[0]->kind == ExprKind::Const) return uint64_t(e->args[0]->ival) * *b;
      if (e->args[1]->kind == ExprKind::Const) return *a * uint64_t(e->args[1]->ival);
      return std::nullopt;
    default: return std::nullopt;
  }
}

// How the lanes of a vectorized loop reach a buffer: all at one element (or
// outside a vectorized loop), at consecutive elements, or anywhere.
enum class Access { Uniform, Contiguous, Scattered };

// Emits the body of one kernel into an internal function whose global buffer
// arguments are noalias, and a public wrapper with the kernel ABI that unpacks
// the argument arrays and calls it (O3 inlines it; the noalias facts survive as
// scoped alias metadata).
//
// Unrolled loops are emitted once per iteration with a constant variable, and
// vectorized loops once in vector mode: a value that depends on the loop
// variable is a <lanes x T> vector, any other stays scalar and is splat where it
// meets a vector. The scheduler relies on this exact code (accumulators at
// constant offsets become registers), so nothing is left to loop metadata.
class Emitter {
 public:
  Emitter(const Kernel& k, llvm::Module& m)
      : k_(k), ctx_(m.getContext()), m_(m), b_(m.getContext()),
        parallel_(top_level_parallel_loop(k)) {}

  void emit(const std::string& symbol) {
    llvm::Function* body = emit_body(symbol + ".body");
    emit_wrapper(symbol, body);
  }

 private:
  llvm::Type* f32_ty() { return b_.getFloatTy(); }
  llvm::Type* i64_ty() { return b_.getInt64Ty(); }

  llvm::Type* value_type(ValType t) {
    switch (t) {
      case ValType::f32: return b_.getFloatTy();
      case ValType::i32: return b_.getInt32Ty();
      case ValType::i64: return b_.getInt64Ty();
      case ValType::b1: return b_.getInt1Ty();
    }
    fail(k_, "unknown value type");
  }

  llvm::Type* storage_type(DType t) {
    switch (t) {
      case f32: return b_.getFloatTy();
      case f16: return b_.getHalfTy();
      case bf16: return b_.getInt16Ty();
      case i32: return b_.getInt32Ty();
      case i8: case u8: case boolean: return b_.getInt8Ty();
    }
    fail(k_, "unknown dtype");
  }

  llvm::Function* emit_body(const std::string& name) {
    std::vector<llvm::Type*> args;
    for (size_t i = 0; i < k_.global_buffers().size(); ++i) args.push_back(b_.getPtrTy());
    args.insert(args.end(), k_.params.size() + 2, i64_ty());  // params, begin, end
    auto* type = llvm::FunctionType::get(b_.getVoidTy(), args, false);
    fn_ = llvm::Function::Create(type, llvm::Function::InternalLinkage, name, m_);
    fn_->addFnAttr(llvm::Attribute::AlwaysInline);
    fn_->addFnAttr(llvm::Attribute::NoUnwind);
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn_));

    buffers_.assign(k_.buffers.size(), nullptr);
    unsigned arg = 0;
    for (int i : k_.global_buffers()) {
      fn_->addParamAttr(arg, llvm::Attribute::NoAlias);
      fn_->addParamAttr(arg, llvm::Attribute::NoCapture);
      buffers_[i] = fn_->getArg(arg++);
      buffers_[i]->setName(k_.buffers[i].name);
    }
    for (const std::string& p : k_.params) {
      params_[p] = fn_->getArg(arg++);
      params_[p]->setName(p);
    }
    begin_ = fn_->getArg(arg++);
    begin_->setName("begin");
    end_ = fn_->getArg(arg);
    end_->setName("end");

    declare_locals();
    emit_stmts(k_.body->body);
    b_.CreateRetVoid();
    return fn_;
  }

  void emit_wrapper(const std::string& symbol, llvm::Function* body) {
    llvm::Type* ptr = b_.getPtrTy();
    auto* type = llvm::FunctionType::get(b_.getVoidTy(), {ptr, ptr, i64_ty(), i64_ty()}, false);
    auto* fn = llvm::Function::Create(type, llvm::Function::ExternalLinkage, symbol, m_);
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    llvm::Value* bufs = fn->getArg(0);
    llvm::Value* params = fn->getArg(1);
    bufs->setName("bufs");
    params->setName("params");
    fn->getArg(2)->setName("begin");
    fn->getArg(3)->setName("end");
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn));

    std::vector<llvm::Value*> args;
    for (size_t i = 0; i < k_.global_buffers().size(); ++i)
      args.push_back(b_.CreateLoad(ptr, b_.CreateConstInBoundsGEP1_64(ptr, bufs, i)));
    for (size_t j = 0; j < k_.params.size(); ++j)
      args.push_back(b_.CreateLoad(i64_ty(), b_.CreateConstInBoundsGEP1_64(i64_ty(), params, j)));
    args.push_back(fn->getArg(2));
    args.push_back(fn->getArg(3));
    b_.CreateCall(body, args);
    b_.CreateRetVoid();
  }

  // Allocas in the entry block: each call (each thread) gets its own copy, and
  // mem2reg/SROA can turn small ones into registers.
  void declare_locals() {
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const BufferDecl& buf = k_.buffers[i];
      if (buf.scope == MemScope::Shared)
        fail(k_, "shared buffer '" + buf.name + "' is not supported on the cpu backend");
      if (buf.scope != MemScope::Local) continue;
      if (buf.size < 0) fail(k_, "local buffer '" + buf.name + "' has a negative size");
      auto* type = llvm::ArrayType::get(storage_type(buf.dtype), buf.size);
      llvm::AllocaInst* alloca = b_.CreateAlloca(type, nullptr, buf.name);
      alloca->setAlignment(llvm::Align(dtype_size(buf.dtype)));
      buffers_[i] = alloca;
    }
  }

  // --- Statements ---

  void emit_stmts(const std::vector<Stmt>& stmts) {
    for (const Stmt& s : stmts) emit_stmt(*s);
  }

  void emit_stmt(const StmtNode& s) {
    switch (s.kind) {
      case StmtKind::For: return emit_for(s);
      case StmtKind::Store: return emit_store(s);
      case StmtKind::Block: return emit_stmts(s.body);
      case StmtKind::If: return emit_if(s);
      case StmtKind::AllReduce:
        fail(k_, "allreduce over '" + s.var + "' needs a GPU thread loop; the cpu backend has none");
    }
    fail(k_, "unknown statement kind");
  }

  void emit_for(const StmtNode& s) {
    if (s.loop == LoopKind::GpuBlock || s.loop == LoopKind::GpuThread)
      fail(k_, "loop '" + s.var + "' of kind " + std::string(loopkind_name(s.loop)) +
                   " is not supported on the cpu backend");
    if (params_.count(s.var)) fail(k_, "loop variable '" + s.var + "' has the name of a parameter");
    if (vector_loop_)
      fail(k_, "loop '" + s.var + "' is inside vectorized loop '" + vector_loop_->var +
                   "'; a vectorized loop must be innermost");
    if (&s == parallel_) return emit_loop(s, begin_, end_);
    if (s.loop == LoopKind::Unrolled) return emit_unrolled(s);
    if (s.loop == LoopKind::Vectorized) return emit_vectorized(s);
    llvm::Value* extent = emit(s.extent);
    emit_loop(s, b_.getInt64(0), extent);
  }

  int64_t constant_extent(const StmtNode& s, int64_t max) {
    std::string loop = std::string(loopkind_name(s.loop)) + " loop '" + s.var + "'";
    if (!s.extent || s.extent->kind != ExprKind::Const || s.extent->type != ValType::i64)
      fail(k_, loop + " needs a constant extent");
    if (s.extent->ival > max)
      fail(k_, loop + " has extent " + std::to_string(s.extent->ival) + ", more than " + std::to_string(max));
    return s.extent->ival;
  }

  void emit_unrolled(const StmtNode& s) {
    int64_t extent = constant_extent(s, kMaxUnroll);
    for (int64_t i = 0; i < extent; ++i) {
      loop_vars_.emplace_back(s.var, b_.getInt64(i));
      emit_stmts(s.body);
      loop_vars_.pop_back();
    }
  }

  // The loop variable is the vector <0, 1, ..., lanes-1>.
  void emit_vectorized(const StmtNode& s) {
    int64_t lanes = constant_extent(s, kMaxLanes);
    if (lanes <= 0) return;
    std::vector<uint64_t> iota(lanes);
    std::iota(iota.begin(), iota.end(), 0);
    loop_vars_.emplace_back(s.var, llvm::ConstantDataVector::get(ctx_, iota));
    vector_loop_ = &s;
    lanes_ = unsigned(lanes);
    emit_stmts(s.body);
    vector_loop_ = nullptr;
    loop_vars_.pop_back();
  }

  // for (i = lo; i < hi; ++i) as preheader -> header (phi) -> body -> latch,
  // the shape LLVM's loop passes expect.
  void emit_loop(const StmtNode& s, llvm::Value* lo, llvm::Value* hi) {
    llvm::BasicBlock* preheader = b_.GetInsertBlock();
    auto* header = llvm::BasicBlock::Create(ctx_, s.var + ".header", fn_);
    auto* body = llvm::BasicBlock::Create(ctx_, s.var + ".body", fn_);
    auto* latch = llvm::BasicBlock::Create(ctx_, s.var + ".latch", fn_);
    auto* exit = llvm::BasicBlock::Create(ctx_, s.var + ".exit", fn_);
    b_.CreateBr(header);

    b_.SetInsertPoint(header);
    llvm::PHINode* iv = b_.CreatePHI(i64_ty(), 2, s.var);
    iv->addIncoming(lo, preheader);
    b_.CreateCondBr(b_.CreateICmpSLT(iv, hi), body, exit);

    b_.SetInsertPoint(body);
    loop_vars_.emplace_back(s.var, iv);
    loops_.push_back(&s);
    emit_stmts(s.body);
    loops_.pop_back();
    loop_vars_.pop_back();
    b_.CreateBr(latch);

    b_.SetInsertPoint(latch);
    // iv < hi, so iv + 1 cannot overflow.
    llvm::Value* next = b_.CreateAdd(iv, b_.getInt64(1), s.var + ".next", false, true);
    iv->addIncoming(next, latch);
    b_.CreateBr(header);

    b_.SetInsertPoint(exit);
  }

  void emit_if(const StmtNode& s) {
    if (vector_loop_) fail(k_, "an if inside vectorized loop '" + vector_loop_->var + "'");
    llvm::Value* cond = emit(s.cond);
    auto* then = llvm::BasicBlock::Create(ctx_, "then", fn_);
    auto* merge = llvm::BasicBlock::Create(ctx_, "endif", fn_);
    b_.CreateCondBr(cond, then, merge);
    b_.SetInsertPoint(then);
    emit_stmts(s.body);
    b_.CreateBr(merge);
    b_.SetInsertPoint(merge);
  }

  void emit_store(const StmtNode& s) {
    const BufferDecl& buf = buffer(s.buffer);
    llvm::Value* value = emit(s.value);
    if (s.value->type != valtype_of(buf.dtype))
      fail(k_, "a store of " + std::string(valtype_name(s.value->type)) + " to " +
                   std::string(dtype_name(buf.dtype)) + " buffer '" + buf.name + "'");
    Access access = access_of(s.index);
    if (vector_loop_ && access == Access::Uniform)
      fail(k_, "the store to '" + buf.name + "' does not depend on vectorized loop '" + vector_loop_->var +
                   "' (a loop-carried dependence)");
    llvm::Value* stored = to_storage(buf.dtype, access == Access::Uniform ? value : widen(value));
    llvm::Align align(dtype_size(buf.dtype));
    if (access == Access::Scattered)
      b_.CreateMaskedScatter(stored, element(s.buffer, s.index), align);
    else
      b_.CreateAlignedStore(stored, first_element(s.buffer, s.index), align);
  }

  // --- Memory ---

  const BufferDecl& buffer(int i) {
    if (i < 0 || i >= int(k_.buffers.size())) fail(k_, "buffer index " + std::to_string(i) + " out of range");
    return k_.buffers[i];
  }

  // A pointer, or in vector mode a vector of pointers, to buffer i at `index`.
  llvm::Value* element(int i, const Expr& index) {
    llvm::Type* type = storage_type(buffer(i).dtype);
    llvm::Value* offset = emit(index);
    return b_.CreateInBoundsGEP(type, buffers_[i], vector_loop_ ? widen(offset) : offset);
  }

  // The element that lane 0 of the vectorized loop (if any) reaches: the
  // address of a uniform or contiguous access.
  llvm::Value* first_element(int i, const Expr& index) {
    if (!vector_loop_) return element(i, index);
    loop_vars_.emplace_back(vector_loop_->var, b_.getInt64(0));
    llvm::Value* ptr = b_.CreateInBoundsGEP(storage_type(buffer(i).dtype), buffers_[i], emit(index));
    loop_vars_.pop_back();
    return ptr;
  }

  // Software prefetch of a stream that jumps: a contiguous vector load that
  // an outer loop moves by a stride of at least kPrefetchMinStride bytes (a
  // GEMV's weight rows, a head's rows of a KV cache 3 KB apart), which the
  // hardware's prefetchers follow badly, also asks for the lines it will read
  // about kPrefetchAhead bytes of its stream later (stories110M q8 decode on
  // the 2-core VM, 5 runs each: 81-114 tok/s without, 100-104 at 1 KB
  // ahead, 92-129 at 2 KB, 116-145 at 4 KB, 120-163 at 6 KB; f32 44-49
  // without, 47-59 at 4 KB). The loop is the enclosing
  // one with the most iterations whose variable moves the index (a symbolic
  // extent counts as the most), unless it is the innermost loop around the
  // load. Addresses past the buffer are harmless (x86 prefetches do not fault;
  // the GEP is not inbounds).
  static constexpr int64_t kPrefetchMinStride = 256, kPrefetchAhead = 4096;
  void prefetch_ahead(int i, const Expr& index) {
    const BufferDecl& buf = buffer(i);
    if (buf.scope != MemScope::Global || buf.output || loops_.empty()) return;
    const StmtNode* best = nullptr;
    int64_t best_extent = 0, stride = 0;
    for (const StmtNode* l : loops_) {
      std::optional<uint64_t> c = coefficient(index, l->var);
      if (!c || *c == 0 || int64_t(*c) < 0) continue;
      int64_t extent = l->extent->kind == ExprKind::Const ? l->extent->ival : std::numeric_limits<int64_t>::max();
      if (extent > best_extent) best = l, best_extent = extent, stride = int64_t(*c) * dtype_size(buf.dtype);
    }
    if (!best || best == loops_.back() || stride < kPrefetchMinStride) return;
    // What the load reads of its stream each iteration of `best`: its vector,
    // times the constant loops inside `best` that move it. A GEMV's row is all
    // of the stride; a KV cache's head row (256 bytes of a 3 KB stride) is a
    // twelfth, so it looks more iterations ahead.
    int64_t read = int64_t(lanes_) * dtype_size(buf.dtype);
    bool inside = false;
    for (const StmtNode* l : loops_) {
      if (inside && l->extent->kind == ExprKind::Const && coefficient(index, l->var).value_or(0) != 0)
        read *= l->extent->ival;
      inside |= l == best;
    }
    read = std::clamp<int64_t>(read, 1, stride);
    int64_t ahead = std::min<int64_t>(std::max<int64_t>((kPrefetchAhead + read - 1) / read, 1), 64);
    Expr later = substitute(index, {{best->var, binary(BinOp::Add, var(best->var), idx(ahead))}});
    loop_vars_.emplace_back(vector_loop_->var, b_.getInt64(0));
    llvm::Value* ptr = b_.CreateGEP(storage_type(buf.dtype), buffers_[i], emit(later));
    loop_vars_.pop_back();
    int64_t bytes = int64_t(lanes_) * dtype_size(buf.dtype);
    llvm::Function* prefetch = llvm::Intrinsic::getDeclaration(&m_, llvm::Intrinsic::prefetch, {ptr->getType()});
    for (int64_t at = 0; at < bytes; at += 64) {
      llvm::Value* line = b_.CreateGEP(b_.getInt8Ty(), ptr, b_.getInt64(at));
      b_.CreateCall(prefetch, {line, b_.getInt32(0), b_.getInt32(3), b_.getInt32(1)});  // read, keep, data
    }
  }

  Access access_of(const Expr& index) {
    if (!vector_loop_) return Access::Uniform;
    std::optional<uint64_t> c = coefficient(index, vector_loop_->var);
    if (c == 0u) return Access::Uniform;
    return c == 1u ? Access::Contiguous : Access::Scattered;
  }

  // --- Vector mode ---

  // `elem`, or a vector of it as wide as `like` is.
  llvm::Type* shaped(llvm::Type* elem, llvm::Value* like) {
    if (auto* v = llvm::dyn_cast<llvm::VectorType>(like->getType()))
      return llvm::VectorType::get(elem, v->getElementCount());
    return elem;
  }

  bool is_vector(llvm::Value* v) { return v->getType()->isVectorTy(); }

  llvm::Value* widen(llvm::Value* v) { return is_vector(v) ? v : b_.CreateVectorSplat(lanes_, v); }

  // Splats the scalars among `vs` when any of them is a vector.
  void match(std::initializer_list<llvm::Value**> vs) {
    bool any = false;
    for (llvm::Value** v : vs) any |= is_vector(*v);
    if (any)
      for (llvm::Value** v : vs) *v = widen(*v);
  }

  // Storage dtype -> compute type.
  llvm::Value* to_compute(DType t, llvm::Value* v) {
    llvm::Type* float_ty = shaped(f32_ty(), v);
    llvm::Type* int_ty = shaped(b_.getInt32Ty(), v);
    switch (t) {
      case f32: case i32: return v;
      case f16: return b_.CreateFPExt(v, float_ty);
      case bf16: return b_.CreateBitCast(b_.CreateShl(b_.CreateZExt(v, int_ty), 16), float_ty);
      case i8: return b_.CreateSExt(v, int_ty);
      case u8: return b_.CreateZExt(v, int_ty);
      case boolean: return b_.CreateICmpNE(v, llvm::ConstantInt::get(v->getType(), 0));
    }
    fail(k_, "unknown dtype");
  }

  // Compute type -> storage dtype, rounding to nearest even.
  llvm::Value* to_storage(DType t, llvm::Value* v) {
    switch (t) {
      case f32: case i32: return v;
      case f16: return b_.CreateFPTrunc(v, shaped(b_.getHalfTy(), v));
      case bf16: return b_.CreateTrunc(bf16_bits(v), shaped(b_.getInt16Ty(), v));
      case i8: case u8: return b_.CreateTrunc(v, shaped(b_.getInt8Ty(), v));
      case boolean: return b_.CreateZExt(v, shaped(b_.getInt8Ty(), v));
    }
    fail(k_, "unknown dtype");
  }

  // The bf16 bits of an f32 in the low half of an i32, exactly as
  // f32_to_bf16_bits (ir/dtype.cpp) computes them.
  llvm::Value* bf16_bits(llvm::Value* f) {
    llvm::Value* x = b_.CreateBitCast(f, shaped(b_.getInt32Ty(), f));
    llvm::Value* high = b_.CreateLShr(x, 16);
    llvm::Value* quiet_nan = b_.CreateOr(high, 0x40);
    llvm::Value* bias = b_.CreateAdd(b_.CreateAnd(high, 1), llvm::ConstantInt::get(x->getType(), 0x7fff));
    llvm::Value* rounded = b_.CreateLShr(b_.CreateAdd(x, bias), 16);
    return b_.CreateSelect(b_.CreateFCmpUNO(f, f), quiet_nan, rounded);
  }

  // --- Expressions ---

  llvm::Value* emit(const Expr& e) {
    if (!e) fail(k_, "missing expression");
    switch (e->kind) {
      case ExprKind::Const: return emit_const(*e);
      case ExprKind::Var: return emit_var(*e);
      case ExprKind::Load: return emit_load(*e);
      case ExprKind::Unary: return emit_unary(*e);
      case ExprKind::Binary: return emit_binary(*e);
      case ExprKind::Select: return emit_select(*e);
      case ExprKind::Cast: return emit_cast(*e);
      case ExprKind::Round: return emit_round(e->round_to, emit(e->args[0]));
    }
    fail(k_, "unknown expression kind");
  }

  llvm::Value* emit_const(const ExprNode& e) {
    switch (e.type) {
      case ValType::f32: return llvm::ConstantFP::get(f32_ty(), static_cast<float>(e.fval));
      case ValType::b1: return b_.getInt1(e.ival != 0);
      default: return llvm::ConstantInt::getSigned(value_type(e.type), e.ival);
    }
  }

  llvm::Value* emit_var(const ExprNode& e) {
    if (auto it = params_.find(e.name); it != params_.end()) return it->second;
    for (auto it = loop_vars_.rbegin(); it != loop_vars_.rend(); ++it)
      if (it->first == e.name) return it->second;
    fail(k_, "variable '" + e.name + "' is neither a parameter nor an enclosing loop variable");
  }

  llvm::Value* emit_load(const ExprNode& e) {
    const BufferDecl& buf = buffer(e.buffer);
    if (e.type != valtype_of(buf.dtype))
      fail(k_, "a load of " + std::string(valtype_name(e.type)) + " from " +
                   std::string(dtype_name(buf.dtype)) + " buffer '" + buf.name + "'");
    return to_compute(buf.dtype, load_storage(e.buffer, e.args[0]));
  }

  // A scalar load, a contiguous vector load or a gather, as the index allows.
  llvm::Value* load_storage(int i, const Expr& index) {
    llvm::Type* type = storage_type(buffer(i).dtype);
    llvm::Align align(dtype_size(buffer(i).dtype));
    switch (access_of(index)) {
      case Access::Uniform: return b_.CreateAlignedLoad(type, first_element(i, index), align);
      case Access::Contiguous:
        prefetch_ahead(i, index);
        return b_.CreateAlignedLoad(llvm::FixedVectorType::get(type, lanes_), first_element(i, index), align);
      case Access::Scattered:
        return b_.CreateMaskedGather(llvm::FixedVectorType::get(type, lanes_), element(i, index), align);
    }
    fail(k_, "unknown access");
  }

  llvm::Value* emit_unary(const ExprNode& e) {
    llvm::Value* a = emit(e.args[0]);
    switch (e.unop) {
      case UnOp::Neg: return e.type == ValType::f32 ? b_.CreateFNeg(a) : b_.CreateNeg(a);
      // Inline polynomials (math.h): the intrinsics would be scalar libm calls.
      case UnOp::Exp2: return emit_exp2(b_, a);
      case UnOp::Log2: return emit_log2(b_, a);
      case UnOp::Sqrt: return b_.CreateUnaryIntrinsic(llvm::Intrinsic::sqrt, a);
      case UnOp::Sin: return emit_sin(b_, a);
      case UnOp::Recip: return b_.CreateFDiv(llvm::ConstantFP::get(a->getType(), 1.0), a);
      case UnOp::Not: return b_.CreateNot(a);
    }
    fail(k_, "unknown unary op");
  }

  llvm::Value* emit_binary(const ExprNode& e) {
    llvm::Value* a = emit(e.args[0]);
    llvm::Value* b = emit(e.args[1]);
    match({&a, &b});
    switch (e.args[0]->type) {
      case ValType::f32: return emit_float_binary(e.binop, a, b);
      case ValType::b1: return emit_bool_binary(e.binop, a, b);
      default: return emit_int_binary(e.binop, a, b);
    }
  }

  llvm::Value* emit_float_binary(BinOp op, llvm::Value* a, llvm::Value* b) {
    if (op == BinOp::CmpLt) return b_.CreateFCmpOLT(a, b);
    if (op == BinOp::CmpEq) return b_.CreateFCmpOEQ(a, b);
    // reassoc lets reductions vectorize; no nnan/ninf, so NaN and inf stay exact.
    llvm::IRBuilderBase::FastMathFlagGuard guard(b_);
    llvm::FastMathFlags fmf;
    fmf.setAllowReassoc();
    fmf.setAllowContract();
    b_.setFastMathFlags(fmf);
    switch (op) {
      case BinOp::Add: return b_.CreateFAdd(a, b);
      case BinOp::Sub: return b_.CreateFSub(a, b);
      case BinOp::Mul: return b_.CreateFMul(a, b);
      case BinOp::Div: return b_.CreateFDiv(a, b);
      case BinOp::Max: return b_.CreateMaxNum(a, b);
      case BinOp::Min: return b_.CreateMinNum(a, b);
      default: fail(k_, std::string(binop_name(op)) + " does not take f32");
    }
  }

  // Wrapping arithmetic; Div and Mod never divide by 0 or overflow INT_MIN / -1
  // (both trap on x86): those divisors are replaced by 1 and fixed up after.
  llvm::Value* emit_int_binary(BinOp op, llvm::Value* a, llvm::Value* b) {
    switch (op) {
      case BinOp::Add: return b_.CreateAdd(a, b);
      case BinOp::Sub: return b_.CreateSub(a, b);
      case BinOp::Mul: return b_.CreateMul(a, b);
      case BinOp::Div: case BinOp::Mod: {
        llvm::Value* zero = llvm::ConstantInt::get(a->getType(), 0);
        llvm::Value* is_zero = b_.CreateICmpEQ(b, zero);
        llvm::Value* is_minus_one = b_.CreateICmpEQ(b, llvm::ConstantInt::getSigned(a->getType(), -1));
        llvm::Value* safe = b_.CreateSelect(b_.CreateOr(is_zero, is_minus_one),
                                            llvm::ConstantInt::get(a->getType(), 1), b);
        if (op == BinOp::Mod) return b_.CreateSRem(a, safe);  // x % 1 == 0
        llvm::Value* q = b_.CreateSelect(is_minus_one, b_.CreateNeg(a), b_.CreateSDiv(a, safe));
        return b_.CreateSelect(is_zero, zero, q);
      }
      case BinOp::Max: return b_.CreateBinaryIntrinsic(llvm::Intrinsic::smax, a, b);
      case BinOp::Min: return b_.CreateBinaryIntrinsic(llvm::Intrinsic::smin, a, b);
      case BinOp::CmpLt: return b_.CreateICmpSLT(a, b);
      case BinOp::CmpEq: return b_.CreateICmpEQ(a, b);
      default: fail(k_, std::string(binop_name(op)) + " does not take integers");
    }
  }

  // false < true, so Max is Or and Min is And.
  llvm::Value* emit_bool_binary(BinOp op, llvm::Value* a, llvm::Value* b) {
    switch (op) {
      case BinOp::CmpEq: return b_.CreateICmpEQ(a, b);
      case BinOp::CmpLt: return b_.CreateICmpULT(a, b);
      case BinOp::Max: case BinOp::Or: return b_.CreateOr(a, b);
      case BinOp::Min: case BinOp::And: return b_.CreateAnd(a, b);
      default: fail(k_, std::string(binop_name(op)) + " does not take bool");
    }
  }

  llvm::Value* emit_select(const ExprNode& e) {
    llvm::Value* cond = emit(e.args[0]);
    llvm::Value* a = emit(e.args[1]);
    llvm::Value* b = emit(e.args[2]);
    match({&cond, &a, &b});
    return b_.CreateSelect(cond, a, b);
  }

  llvm::Value* emit_cast(const ExprNode& e) {
    llvm::Value* v = emit(e.args[0]);
    ValType from = e.args[0]->type, to = e.type;
    llvm::Type* type = shaped(value_type(to), v);
    auto is_int = [](ValType t) { return t == ValType::i32 || t == ValType::i64; };
    if (from == to) return v;
    if (is_int(from) && is_int(to)) return b_.CreateSExtOrTrunc(v, type);
    if (from == ValType::f32 && is_int(to))  // saturating, NaN -> 0
      return b_.CreateIntrinsic(llvm::Intrinsic::fptosi_sat, {type, v->getType()}, {v});
    if (is_int(from) && to == ValType::f32) return b_.CreateSIToFP(v, type);
    if (from == ValType::b1) return to == ValType::f32 ? b_.CreateUIToFP(v, type) : b_.CreateZExt(v, type);
    if (from == ValType::f32) return b_.CreateFCmpUNE(v, llvm::ConstantFP::get(v->getType(), 0.0));
    return b_.CreateICmpNE(v, llvm::ConstantInt::get(v->getType(), 0));
  }

  // The nearest value of `to`, kept in the compute type.
  llvm::Value* emit_round(DType to, llvm::Value* v) {
    switch (to) {
      case f16: return b_.CreateFPExt(b_.CreateFPTrunc(v, shaped(b_.getHalfTy(), v)), v->getType());
      case bf16: return b_.CreateBitCast(b_.CreateShl(bf16_bits(v), 16), v->getType());
      case i8: return b_.CreateSExt(b_.CreateTrunc(v, shaped(b_.getInt8Ty(), v)), v->getType());
      case u8: return b_.CreateZExt(b_.CreateTrunc(v, shaped(b_.getInt8Ty(), v)), v->getType());
      case f32: case i32: case boolean: return v;
    }
    fail(k_, "unknown dtype");
  }

  const Kernel& k_;
  llvm::LLVMContext& ctx_;
  llvm::Module& m_;
  llvm::IRBuilder<> b_;
  const StmtNode* parallel_;
  llvm::Function* fn_ = nullptr;
  llvm::Value* begin_ = nullptr;
  llvm::Value* end_ = nullptr;
  std::vector<llvm::Value*> buffers_;  // per Kernel::buffers entry: argument or alloca
  std::map<std::string, llvm::Value*> params_;
  std::vector<std::pair<std::string, llvm::Value*>> loop_vars_;  // innermost last
  std::vector<const StmtNode*> loops_;  // the serial and parallel loops around the code being emitted, innermost last
  const StmtNode* vector_loop_ = nullptr;  // the vectorized loop being emitted
  unsigned lanes_ = 0;                     // its extent
};

}  // namespace

const StmtNode* top_level_parallel_loop(const Kernel& k) {
  const std::vector<Stmt>& top = top_level(k);
  const StmtNode* parallel = nullptr;
  for (const Stmt& s : top) {
    if (!s) fail(k, "missing statement");
    if (is_parallel(s)) {
      if (top.size() != 1)
        fail(k, "parallel loop '" + s->var + "' must be the only top-level statement of the kernel");
      parallel = s.get();
    }
    reject_parallel(k, s->body);
  }
  return parallel;
}

std::unique_ptr<llvm::Module> emit_llvm(const Kernel& k, const std::string& symbol,
                                        llvm::LLVMContext& ctx) {
  auto m = std::make_unique<llvm::Module>(k.name, ctx);
  Kernel simplified = simplify_indices(k);
  Emitter(simplified, *m).emit(symbol);
  return m;
}

}  // namespace kiln
