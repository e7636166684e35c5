// Ids to text: `tokenizers`' decoder chain (each step maps a list of token
// strings to a new list), and the incremental Stream over it.
#include "frontend/tokenizer/tokenizer_impl.h"
#include "frontend/tokenizer/utf8.h"
#include "kiln/error.h"

namespace kiln {

namespace {

using Tokens = std::vector<std::string>;

std::string join(const Tokens& tokens) {
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

// Maps each token's characters back to bytes; a token with a character outside
// the table (an added token such as "<|im start|>") keeps its own bytes.
Tokens byte_level(const Tokens& tokens) {
  std::string bytes;
  for (const std::string& t : tokens) {
    std::string mapped;
    bool all_mapped = true;
    for (size_t i = 0, n; i < t.size() && all_mapped; i += n) {
      n = utf8::valid_length(t, i);  // a GGUF vocabulary's tokens need not be UTF-8
      int b = n ? byte_from_unicode(utf8::decode(t, i)) : -1;
      all_mapped = b >= 0;
      mapped += char(b);
    }
    bytes += all_mapped ? mapped : t;
  }
  return {utf8::lossy(bytes)};
}

Tokens metaspace(const Tokens& tokens, const DecoderStep& step) {
  Tokens out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    bool first = i == 0 && step.prepend_scheme != PrependScheme::Never;
    std::string t;
    for (size_t pos = 0; pos < tokens[i].size();) {
      if (tokens[i].compare(pos, step.content.size(), step.content) == 0) {
        if (!first) t += ' ';
        pos += step.content.size();
      } else {
        t += tokens[i][pos++];
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

// Runs of <0xXX> tokens become their bytes when those are valid UTF-8, else
// one U+FFFD per byte.
Tokens byte_fallback(const Tokens& tokens) {
  Tokens out;
  std::string run;
  size_t run_tokens = 0;
  auto flush = [&] {
    if (run_tokens == 0) return;
    if (utf8::is_valid(run)) {
      out.push_back(run);
    } else {
      for (size_t i = 0; i < run_tokens; ++i) out.emplace_back(utf8::kReplacement);
    }
    run.clear();
    run_tokens = 0;
  };
  for (const std::string& t : tokens) {
    if (int b = byte_token_value(t); b >= 0) {
      run += char(b);
      ++run_tokens;
      continue;
    }
    flush();
    out.push_back(t);
  }
  flush();
  return out;
}

Tokens strip(const Tokens& tokens, const DecoderStep& step) {
  Tokens out;
  const std::string& c = step.content;
  for (const std::string& t : tokens) {
    size_t begin = 0, end = t.size();
    for (int i = 0; i < step.start && end - begin >= c.size() && t.compare(begin, c.size(), c) == 0; ++i)
      begin += c.size();
    for (int i = 0; i < step.stop && end - begin >= c.size() && t.compare(end - c.size(), c.size(), c) == 0; ++i)
      end -= c.size();
    out.push_back(t.substr(begin, end - begin));
  }
  return out;
}

Tokens replace(const Tokens& tokens, const DecoderStep& step) {
  Tokens out;
  for (const std::string& t : tokens) {
    if (!step.pattern->is_literal() && !utf8::is_valid(t)) {  // a regex needs UTF-8
      out.push_back(t);
      continue;
    }
    std::string r;
    size_t last = 0;
    for (auto [b, e] : step.pattern->find_all(t)) {
      r.append(t, last, b - last);
      r += step.content;
      last = e;
    }
    r.append(t, last, std::string::npos);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return decode_part(ids, skip_special, true);
}

std::string Tokenizer::decode_part(std::span<const int32_t> ids, bool skip_special, bool text_start) const {
  const Impl& impl = *impl_;
  Tokens tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= int32_t(impl.id_to_token.size()) || !impl.used[id])
      throw Error(
          "tokenizer: cannot decode id " + std::to_string(id) + ": the vocabulary has " +
          std::to_string(impl.id_to_token.size()) + " ids" +
          (id >= 0 && id < int32_t(impl.id_to_token.size()) ? " and none of them is " + std::to_string(id) : ""));
    if (skip_special && impl.special[id]) continue;
    tokens.push_back(impl.id_to_token[id]);
  }
  if (impl.decoders.empty()) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  bool fused = false;  // after Fuse the one token is the whole text
  for (const DecoderStep& step : impl.decoders) {
    switch (step.kind) {
      case DecoderStep::ByteLevel:
        tokens = byte_level(tokens);
        break;
      case DecoderStep::Metaspace:
        tokens = metaspace(tokens, step);
        break;
      case DecoderStep::Replace:
        tokens = replace(tokens, step);
        break;
      case DecoderStep::ByteFallback:
        tokens = byte_fallback(tokens);
        break;
      case DecoderStep::Fuse:
        tokens = {join(tokens)};
        fused = true;
        break;
      case DecoderStep::Strip: {
        DecoderStep s = step;
        if (fused && !text_start) s.start = 0;
        tokens = strip(tokens, s);
        break;
      }
    }
  }
  return utf8::lossy(join(tokens));
}

Tokenizer::Stream::Stream(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

// As `tokenizers`' DecodeStream: decode the window (the ids of the last emitted
// piece as context, then the new ones), emit what grew past the context's own
// text, and wait while the text ends in U+FFFD (a character whose bytes have
// not all come yet). Unlike DecodeStream, text held back is never taken as
// context, so a character split over several byte tokens comes out whole; and
// a run of <0xXX> tokens is held until it ends, because ByteFallback turns the
// whole run into U+FFFDs when any byte in it is invalid.
std::string Tokenizer::Stream::push(int32_t id) {
  const Impl& impl = *tokenizer_->impl_;
  if (id < 0 || id >= int32_t(impl.id_to_token.size()) || !impl.used[id]) {
    tokenizer_->decode({&id, 1});  // throws the message decode() gives
  }
  window_.push_back(id);
  if (impl.in_byte_run(id)) return "";  // decoding now would be wasted work
  std::string text = tokenizer_->decode_part(window_, skip_special_, from_start_);
  if (text.size() <= prefix_.size() || text.ends_with(utf8::kReplacement) || !text.starts_with(prefix_)) return "";
  std::string fresh = text.substr(prefix_.size());
  size_t keep = window_.size() - prefix_count_;
  window_.erase(window_.begin(), window_.begin() + prefix_count_);
  // Once ids are dropped the window no longer starts the text: the text's
  // start (Strip after Fuse) was dealt with in what came out before.
  from_start_ = from_start_ && prefix_count_ == 0;
  prefix_ = tokenizer_->decode_part(window_, skip_special_, from_start_);
  prefix_count_ = keep;
  return fresh;
}

std::string Tokenizer::Stream::flush() {
  std::string text = tokenizer_->decode_part(window_, skip_special_, from_start_);
  std::string rest = text.size() > prefix_.size() && text.starts_with(prefix_) ? text.substr(prefix_.size()) : "";
  window_.clear();
  prefix_.clear();
  prefix_count_ = 0;
  from_start_ = true;
  return rest;
}

}  // namespace kiln
