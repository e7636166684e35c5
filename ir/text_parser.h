// Shared pieces of the graph and kernel text forms (ir/graph_text.cpp,
// ir/kernel_text.cpp): number formatting, a tokenizer and a token cursor whose
// errors all say "line L, col C" and what was expected. Internal to kiln_ir.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln::text {

// Deepest nesting a parser accepts (statements, calls, parentheses, expression
// trees), so that hostile input cannot exhaust the stack.
inline constexpr int kMaxDepth = 256;

// Shortest text that reads back as exactly `v`: "1.5", "1e+300", "inf", "-nan".
std::string format_double(double v);
std::string format_float(float v);

enum class Tok : uint8_t { Ident, Number, String, Punct, End };

struct Token {
  Tok kind = Tok::End;
  std::string text;    // the identifier, punctuation, digits, or decoded string
  std::string suffix;  // Number: letters right after the digits ("f" in "1.5f")
  int line = 1, col = 1;
};

class Parser {
 public:
  // `format` names the text form in error messages ("graph", "kernel").
  Parser(std::string_view text, std::string format);

 protected:
  const Token& peek(size_t ahead = 0) const;
  // Whether the token `ahead` is the punctuation or identifier `word`.
  bool peek_is(std::string_view word, size_t ahead = 0) const;
  Token next();
  bool accept(std::string_view word);
  void expect(std::string_view word);
  std::string expect_ident(std::string_view what);
  std::string expect_string(std::string_view what);
  int64_t expect_int(std::string_view what);    // an optional '-', then digits
  double expect_double(std::string_view what);  // also inf and nan
  DType expect_dtype();
  void expect_end();

  // `t`'s text read as T (int64_t, float or double), negated when `negative`;
  // fails on junk or overflow.
  template <class T>
  T number(const Token& t, bool negative) const;

  // Parses `item (',' item)*` up to `close`, which it consumes; may be empty.
  template <class F>
  void comma_list(std::string_view close, F&& item) {
    if (accept(close)) return;
    do item(); while (accept(","));
    if (!accept(close)) expected("',' or '" + std::string(close) + "'");
  }

  [[noreturn]] void fail(const Token& at, const std::string& message) const;
  [[noreturn]] void expected(const std::string& what) const;  // at peek()

  // Runs f, putting `at`'s position on a kiln::Error it throws (the IR's own
  // checks, which know nothing of the text).
  template <class F>
  auto at(const Token& t, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const Error& e) {
      fail(t, e.what());
    }
  }

  // One level of nesting for its lifetime; fails past kMaxDepth.
  class Nest {
   public:
    explicit Nest(Parser& p);
    ~Nest() { --p_.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    Parser& p_;
  };

 private:
  void tokenize(std::string_view s);

  std::string format_;
  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace kiln::text
