#include "codegen/simplify_indices.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <map>
#include <optional>
#include <vector>

namespace kiln {

namespace {

// A closed interval; bounds that are not known are nullopt.
struct Range {
  std::optional<int64_t> lo, hi;
};

// A sum of coeff * atom terms plus a constant, every coefficient positive.
struct Linear {
  std::vector<std::pair<int64_t, Expr>> terms;
  int64_t constant = 0;
};

constexpr int64_t kBig = int64_t(1) << 40;  // bounds past this are not trusted (overflow)

bool is_const(const Expr& e, int64_t* v) {
  if (e->kind != ExprKind::Const || e->type != ValType::i64) return false;
  *v = e->ival;
  return true;
}

class Simplifier {
 public:
  Stmt stmt(const Stmt& s) {
    switch (s->kind) {
      case StmtKind::For: {
        int64_t n;
        Expr extent = expr(s->extent);
        auto saved = extent_.find(s->var) != extent_.end() ? std::optional<Range>(extent_[s->var]) : std::nullopt;
        Range r{0, std::nullopt};
        if (is_const(extent, &n) && n >= 1 && n < kBig) r.hi = n - 1;
        extent_[s->var] = r;
        std::vector<Stmt> body;
        for (const Stmt& b : s->body) body.push_back(stmt(b));
        if (saved) extent_[s->var] = *saved;
        else extent_.erase(s->var);
        return for_loop(s->var, extent, s->loop, std::move(body));
      }
      case StmtKind::Store: return store(s->buffer, expr(s->index), expr(s->value));
      case StmtKind::Block: {
        std::vector<Stmt> body;
        for (const Stmt& b : s->body) body.push_back(stmt(b));
        return block(std::move(body));
      }
      case StmtKind::If: {
        std::vector<Stmt> body;
        for (const Stmt& b : s->body) body.push_back(stmt(b));
        return if_then(expr(s->cond), std::move(body));
      }
      case StmtKind::AllReduce: return s;
    }
    return s;
  }

  Expr expr(const Expr& e) {
    if (e->args.empty()) return e;
    std::vector<Expr> args;
    bool changed = false;
    for (const Expr& a : e->args) {
      args.push_back(expr(a));
      changed |= args.back() != a;
    }
    int64_t d;
    if (e->kind == ExprKind::Binary && e->type == ValType::i64 && is_const(args[1], &d) && d > 0) {
      if (e->binop == BinOp::Div) return divide(args[0], d);
      if (e->binop == BinOp::Mod) return remainder(args[0], d);
    }
    if (!changed) return e;
    auto n = std::make_shared<ExprNode>(*e);
    n->args = std::move(args);
    return n;
  }

 private:
  Range range(const Expr& e) {
    int64_t c;
    if (is_const(e, &c)) return {c, c};
    if (e->type != ValType::i64) return {};
    if (e->kind == ExprKind::Var) {
      auto it = extent_.find(e->name);
      return it == extent_.end() ? Range{} : it->second;
    }
    if (e->kind != ExprKind::Binary) return {};
    Range a = range(e->args[0]), b = range(e->args[1]);
    auto fits = [](int64_t v) { return v > -kBig && v < kBig; };
    switch (e->binop) {
      case BinOp::Add: {
        Range r;
        if (a.lo && b.lo && fits(*a.lo) && fits(*b.lo)) r.lo = *a.lo + *b.lo;
        if (a.hi && b.hi && fits(*a.hi) && fits(*b.hi)) r.hi = *a.hi + *b.hi;
        return r;
      }
      case BinOp::Mul: {
        if (!a.lo || !b.lo || *a.lo < 0 || *b.lo < 0 || !fits(*a.lo) || !fits(*b.lo)) return {};
        Range r{*a.lo * *b.lo, std::nullopt};
        if (a.hi && b.hi && *a.hi < kBig && *b.hi < kBig && (*b.hi == 0 || *a.hi <= kBig / *b.hi)) r.hi = *a.hi * *b.hi;
        return r;
      }
      case BinOp::Div:
        if (!is_const(e->args[1], &c) || c <= 0 || !a.lo || *a.lo < 0) return {};
        return {*a.lo / c, a.hi ? std::optional<int64_t>(*a.hi / c) : std::nullopt};
      case BinOp::Mod:
        if (!is_const(e->args[1], &c) || c <= 0 || !a.lo || *a.lo < 0) return {};
        return {0, a.hi ? std::min(*a.hi, c - 1) : c - 1};
      default: return {};
    }
  }

  // e as a sum of non-negative terms with positive coefficients, or nullopt.
  std::optional<Linear> linear(const Expr& e) {
    Linear out;
    if (!add_terms(e, 1, &out)) return std::nullopt;
    return out;
  }
  bool add_terms(const Expr& e, int64_t scale, Linear* out) {
    int64_t c;
    if (is_const(e, &c)) {
      if (c < 0) return false;
      out->constant += c * scale;
      return true;
    }
    if (e->kind == ExprKind::Binary && e->binop == BinOp::Add)
      return add_terms(e->args[0], scale, out) && add_terms(e->args[1], scale, out);
    if (e->kind == ExprKind::Binary && e->binop == BinOp::Mul) {
      if (is_const(e->args[1], &c) && c > 0 && c < kBig) return add_terms(e->args[0], scale * c, out);
      if (is_const(e->args[0], &c) && c > 0 && c < kBig) return add_terms(e->args[1], scale * c, out);
    }
    Range r = range(e);
    if (!r.lo || *r.lo < 0) return false;
    out->terms.push_back({scale, e});
    return true;
  }

  Expr sum(const std::vector<std::pair<int64_t, Expr>>& terms, int64_t constant, int64_t divide_by) {
    Expr s = idx(constant / divide_by);
    for (auto& [c, t] : terms) s = s + (c / divide_by == 1 ? t : t * idx(c / divide_by));
    return s;
  }

  // Upper bound of sum(terms) + constant, if known.
  std::optional<int64_t> max_of(const std::vector<std::pair<int64_t, Expr>>& terms, int64_t constant) {
    int64_t hi = constant;
    for (auto& [c, t] : terms) {
      Range r = range(t);
      if (!r.hi || *r.hi > kBig / c) return std::nullopt;
      hi += c * *r.hi;
    }
    return hi;
  }

  // The divisors of d worth trying as g, largest first: d, its gcd with each
  // coefficient, and 1.
  std::vector<int64_t> candidates(const Linear& l, int64_t d) {
    std::vector<int64_t> g{d, 1};
    for (auto& t : l.terms) g.push_back(std::gcd(t.first, d));
    std::sort(g.rbegin(), g.rend());
    g.erase(std::unique(g.begin(), g.end()), g.end());
    return g;
  }

  // Splits terms into multiples of g and a small rest: e = g * big + small with
  // 0 <= small < g, if the bounds show it.
  bool split(const Linear& l, int64_t g, std::vector<std::pair<int64_t, Expr>>* big,
             std::vector<std::pair<int64_t, Expr>>* small, int64_t* big_const, int64_t* small_const) {
    big->clear(), small->clear();
    for (auto& t : l.terms) (t.first % g == 0 ? big : small)->push_back(t);
    *big_const = l.constant / g * g;
    *small_const = l.constant % g;
    std::optional<int64_t> hi = max_of(*small, *small_const);
    return hi && *hi < g;
  }

  // For non-negative e: e / d = sum of (c / d) t over terms with d | c, plus
  // the rest / d; the rest, g * R1 + R2 with g | d and 0 <= R2 < g, divides
  // as R1 / (d / g).
  Expr divide(const Expr& e, int64_t d) {
    std::optional<Linear> l = linear(e);
    if (!l) return e / idx(d);
    for (int64_t g : candidates(*l, d)) {
      std::vector<std::pair<int64_t, Expr>> big, small;
      int64_t bc, sc;
      if (!split(*l, g, &big, &small, &bc, &sc)) continue;
      // e / d = (g * B) / d with B = sum(big) / g: exact multiples of d come out.
      std::vector<std::pair<int64_t, Expr>> whole, part;
      for (auto& t : big) (t.first % d == 0 ? whole : part).push_back(t);
      Expr out = sum(whole, bc / d * d, d);
      if (part.empty() && bc % d == 0) return out;
      if (g == 1 && whole.empty()) return e / idx(d);  // nothing learned
      return out + sum(part, bc % d, g) / idx(d / g);
    }
    return e / idx(d);
  }

  // For non-negative e: multiples of d drop out; what is left, g * R1 + R2 with
  // g | d and 0 <= R2 < g, is g * (R1 % (d / g)) + R2.
  Expr remainder(const Expr& e, int64_t d) {
    std::optional<Linear> l = linear(e);
    if (!l) return e % idx(d);
    Linear rest;
    for (auto& t : l->terms)
      if (t.first % d) rest.terms.push_back(t);
    rest.constant = l->constant % d;
    for (int64_t g : candidates(rest, d)) {
      std::vector<std::pair<int64_t, Expr>> big, small;
      int64_t bc, sc;
      if (!split(rest, g, &big, &small, &bc, &sc)) continue;
      Expr low = sum(small, sc, 1);
      if (big.empty() && bc == 0) return low;
      if (g == 1 && rest.terms.size() == l->terms.size() && rest.constant == l->constant) return e % idx(d);
      Expr high = g == d ? idx(0) : sum(big, bc, g) % idx(d / g);
      return high * idx(g) + low;
    }
    return e % idx(d);
  }

  std::map<std::string, Range> extent_;
};

}  // namespace

Kernel simplify_indices(const Kernel& k) {
  Kernel out = k;
  Simplifier s;
  out.body = s.stmt(k.body);
  return out;
}

}  // namespace kiln
