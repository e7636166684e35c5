#include "ir/text_parser.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <type_traits>

namespace kiln::text {

namespace {

// ASCII only: std::isalpha and friends depend on the locale and take no negative chars.
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_punct(char c) { return c != '\0' && std::strchr("()[]{}<>,:=%+-*/", c) != nullptr; }

template <class T>
std::string format_shortest(T v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string describe(const Token& t) {
  if (t.kind == Tok::End) return "end of input";
  std::string s = t.kind == Tok::String ? '"' + t.text + '"' : t.text + t.suffix;
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  return "'" + s + "'";
}

std::string describe_char(char c) {
  if (c >= ' ' && c <= '~') return std::string("'") + c + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned char>(c));
  return std::string("byte ") + buf;
}

[[noreturn]] void fail_at(const std::string& format, int line, int col, const std::string& message) {
  throw Error(format + " text: line " + std::to_string(line) + ", col " + std::to_string(col) + ": " + message);
}

}  // namespace

std::string format_double(double v) { return format_shortest(v); }
std::string format_float(float v) { return format_shortest(v); }

Parser::Parser(std::string_view text, std::string format) : format_(std::move(format)) { tokenize(text); }

void Parser::tokenize(std::string_view s) {
  size_t i = 0;
  int line = 1, col = 1;
  auto step = [&] {
    if (s[i++] == '\n') ++line, col = 1;
    else ++col;
  };
  auto skip_word = [&] {
    while (i < s.size() && (is_alpha(s[i]) || is_digit(s[i]))) step();
  };
  auto skip_digits = [&] {
    while (i < s.size() && is_digit(s[i])) step();
  };
  for (;;) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) step();
    Token t;
    t.line = line;
    t.col = col;
    size_t start = i;
    if (i == s.size()) {
      toks_.push_back(std::move(t));
      return;
    }
    char c = s[i];
    if (is_alpha(c)) {
      t.kind = Tok::Ident;
      skip_word();
      t.text = s.substr(start, i - start);
    } else if (is_digit(c)) {
      t.kind = Tok::Number;
      skip_digits();
      if (i + 1 < s.size() && s[i] == '.' && is_digit(s[i + 1])) step(), skip_digits();
      if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
        if (j < s.size() && is_digit(s[j])) {
          while (i < j) step();
          skip_digits();
        }
      }
      t.text = s.substr(start, i - start);
      size_t suffix = i;
      skip_word();
      t.suffix = s.substr(suffix, i - suffix);
    } else if (c == '"') {
      t.kind = Tok::String;
      step();
      for (;;) {
        if (i == s.size()) fail_at(format_, t.line, t.col, "unterminated string");
        if (s[i] == '"') break;
        if (s[i] == '\\' && (i + 1 == s.size() || (s[i + 1] != '"' && s[i + 1] != '\\')))
          fail_at(format_, line, col, "expected '\\\"' or '\\\\' (the only escapes) after a backslash");
        if (s[i] == '\\') step();
        t.text += s[i];
        step();
      }
      step();
    } else if (is_punct(c)) {
      t.kind = Tok::Punct;
      t.text = std::string(1, c);
      step();
    } else {
      fail_at(format_, line, col, "unexpected " + describe_char(c));
    }
    toks_.push_back(std::move(t));
  }
}

const Token& Parser::peek(size_t ahead) const { return toks_[std::min(pos_ + ahead, toks_.size() - 1)]; }

bool Parser::peek_is(std::string_view word, size_t ahead) const {
  const Token& t = peek(ahead);
  return (t.kind == Tok::Punct || t.kind == Tok::Ident) && t.text == word;
}

Token Parser::next() {
  Token t = peek();
  if (pos_ + 1 < toks_.size()) ++pos_;
  return t;
}

bool Parser::accept(std::string_view word) {
  if (!peek_is(word)) return false;
  next();
  return true;
}

void Parser::expect(std::string_view word) {
  if (!accept(word)) expected("'" + std::string(word) + "'");
}

std::string Parser::expect_ident(std::string_view what) {
  if (peek().kind != Tok::Ident) expected(std::string(what));
  return next().text;
}

std::string Parser::expect_string(std::string_view what) {
  if (peek().kind != Tok::String) expected(std::string(what) + " (a quoted string)");
  return next().text;
}

int64_t Parser::expect_int(std::string_view what) {
  bool negative = accept("-");
  if (peek().kind != Tok::Number || !peek().suffix.empty()) expected(std::string(what) + " (an integer)");
  return number<int64_t>(next(), negative);
}

double Parser::expect_double(std::string_view what) {
  bool negative = accept("-");
  const Token& t = peek();
  bool special = t.kind == Tok::Ident && (t.text == "inf" || t.text == "nan");
  if (!special && (t.kind != Tok::Number || !t.suffix.empty())) expected(std::string(what) + " (a number)");
  return number<double>(next(), negative);
}

DType Parser::expect_dtype() {
  Token t = peek();
  std::string name = expect_ident("a dtype");
  return at(t, [&] { return parse_dtype(name); });
}

void Parser::expect_end() {
  if (peek().kind != Tok::End) expected("end of input");
}

template <class T>
T Parser::number(const Token& t, bool negative) const {
  std::string s = (negative ? "-" : "") + t.text;
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) fail(t, "number " + s + " is out of range");
  if (ec != std::errc() || end != s.data() + s.size())
    fail(t, std::string("expected ") + (std::is_integral_v<T> ? "an integer" : "a number") + ", got '" + s + "'");
  return v;
}

template int64_t Parser::number<int64_t>(const Token&, bool) const;
template float Parser::number<float>(const Token&, bool) const;
template double Parser::number<double>(const Token&, bool) const;

void Parser::fail(const Token& at, const std::string& message) const { fail_at(format_, at.line, at.col, message); }

void Parser::expected(const std::string& what) const { fail(peek(), "expected " + what + ", got " + describe(peek())); }

Parser::Nest::Nest(Parser& p) : p_(p) {
  if (++p_.depth_ > kMaxDepth) {
    --p_.depth_;
    p_.fail(p_.peek(), "nesting is deeper than " + std::to_string(kMaxDepth) + " levels");
  }
}

}  // namespace kiln::text
