// Text to ids: split out added tokens, normalize, pre-tokenize, BPE each word.
#include <algorithm>
#include <array>

#include "frontend/tokenizer/tokenizer_impl.h"
#include "frontend/tokenizer/utf8.h"
#include "kiln/error.h"

namespace kiln {

namespace {

// GPT-2's table: printable bytes stand for themselves, the others for U+0100 on.
struct ByteTable {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_unicode;

  ByteTable() {
    from_unicode.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t c = printable ? char32_t(b) : char32_t(next++);
      utf8::append(to_unicode[b], c);
      from_unicode[c] = int16_t(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

void replace_all(std::string& s, const Regex& pattern, std::string_view content) {
  auto matches = pattern.find_all(s);
  if (matches.empty()) return;
  std::string out;
  size_t last = 0;
  for (auto [b, e] : matches) {
    out.append(s, last, b - last);
    out.append(content);
    last = e;
  }
  out.append(s, last, std::string::npos);
  s = std::move(out);
}

void normalize(const std::vector<NormalizerStep>& steps, TextPiece& piece) {
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Prepend:
        if (piece.text.empty()) break;
        piece.text.insert(0, step.prepend);
        break;
      case NormalizerStep::Replace:
        replace_all(piece.text, *step.pattern, step.content);
        break;
      case NormalizerStep::NFC:
        break;  // not applied: see tokenizer.h
    }
  }
}

// `tokenizers`' SplitDelimiterBehavior over the matches of one piece.
void split_piece(const TextPiece& piece, const PreTokenizerStep& step, std::vector<TextPiece>& out) {
  struct Part {
    size_t begin, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t last = 0;
  for (auto [b, e] : step.pattern->find_all(piece.text)) {
    if (b > last) parts.push_back({last, b, step.invert});
    parts.push_back({b, e, !step.invert});
    last = e;
  }
  if (last < piece.text.size()) parts.push_back({last, piece.text.size(), step.invert});

  std::vector<std::pair<size_t, size_t>> ranges;
  bool previous_match = false;
  switch (step.behavior) {
    case SplitBehavior::Removed:
      for (const Part& p : parts)
        if (!p.match) ranges.emplace_back(p.begin, p.end);
      break;
    case SplitBehavior::Isolated:
      for (const Part& p : parts) ranges.emplace_back(p.begin, p.end);
      break;
    case SplitBehavior::MergedWithPrevious:
      for (const Part& p : parts) {
        if (p.match && !previous_match && !ranges.empty())
          ranges.back().second = p.end;
        else
          ranges.emplace_back(p.begin, p.end);
        previous_match = p.match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto p = parts.rbegin(); p != parts.rend(); ++p) {
        if (p->match && !previous_match && !ranges.empty())
          ranges.back().first = p->begin;
        else
          ranges.emplace_back(p->begin, p->end);
        previous_match = p->match;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
    case SplitBehavior::Contiguous:
      for (const Part& p : parts) {
        if (p.match == previous_match && !ranges.empty())
          ranges.back().second = p.end;
        else
          ranges.emplace_back(p.begin, p.end);
        previous_match = p.match;
      }
      break;
  }
  for (auto [b, e] : ranges) {
    if (b == e) continue;
    out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
  }
}

void pre_tokenize_step(const PreTokenizerStep& step, std::vector<TextPiece>& pieces) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size());
  for (TextPiece& piece : pieces) {
    switch (step.kind) {
      case PreTokenizerStep::Split:
        split_piece(piece, step, out);
        break;
      case PreTokenizerStep::ByteLevel: {
        if (step.add_prefix_space && !piece.text.starts_with(' ')) piece.text.insert(0, " ");
        std::vector<TextPiece> words;
        if (step.pattern)
          split_piece(piece, step, words);
        else
          words.push_back(std::move(piece));
        const ByteTable& table = byte_table();
        for (TextPiece& w : words) {
          std::string mapped;
          mapped.reserve(w.text.size() * 2);
          for (char b : w.text) mapped += table.to_unicode[uint8_t(b)];
          w.text = std::move(mapped);
          out.push_back(std::move(w));
        }
        break;
      }
      case PreTokenizerStep::Metaspace: {
        std::string text;
        text.reserve(piece.text.size() + step.replacement.size());
        for (char c : piece.text) {
          if (c == ' ')
            text += step.replacement;
          else
            text += c;
        }
        bool prepend = step.prepend_scheme == PrependScheme::Always ||
                       (step.prepend_scheme == PrependScheme::First && piece.at_start);
        if (prepend && !text.starts_with(step.replacement)) text.insert(0, step.replacement);
        if (!step.split) {
          out.push_back({std::move(text), piece.at_start});
          break;
        }
        // Split before each replacement character (MergedWithNext).
        size_t begin = 0;
        for (size_t pos = text.find(step.replacement, 1); pos != std::string::npos;
             pos = text.find(step.replacement, pos + 1)) {
          out.push_back({text.substr(begin, pos - begin), piece.at_start && begin == 0});
          begin = pos;
        }
        if (begin < text.size()) out.push_back({text.substr(begin), piece.at_start && begin == 0});
        break;
      }
    }
  }
  pieces = std::move(out);
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_table().to_unicode[b]; }

int byte_from_unicode(char32_t c) { return c < 512 ? byte_table().from_unicode[c] : -1; }

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  if (!utf8::is_valid(text)) throw Error("tokenizer: text to encode is not valid UTF-8");
  std::vector<int32_t> ids;
  if (add_bos) {
    if (bos_id_ < 0) throw Error("tokenizer: add_bos asked for, but this tokenizer has no BOS token");
    ids.push_back(bos_id_);
  }
  const Impl& impl = *impl_;

  auto encode_text = [&](size_t begin, size_t end) {
    if (begin >= end) return;
    std::vector<TextPiece> pieces{{std::string(text.substr(begin, end - begin)), begin == 0}};
    normalize(impl.normalizers, pieces[0]);
    for (const PreTokenizerStep& step : impl.pre_tokenizers) pre_tokenize_step(step, pieces);
    for (const TextPiece& piece : pieces) impl.model.encode_word(piece.text, ids);
  };

  // Added tokens, leftmost-longest; lstrip/rstrip take the whitespace beside them.
  size_t text_begin = 0;
  for (size_t i = 0; i < text.size() && !impl.trie.empty();) {
    int32_t node = 0, found = -1;
    size_t found_end = 0;
    for (size_t k = i; k < text.size(); ++k) {
      int32_t child = -1;
      for (auto [byte, index] : impl.trie[node].next)
        if (byte == uint8_t(text[k])) child = index;
      if (child < 0) break;
      node = child;
      if (impl.trie[node].token >= 0) {
        found = impl.trie[node].token;
        found_end = k + 1;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    const AddedToken& token = impl.added[found];
    size_t begin = i, end = found_end;
    if (token.lstrip) {
      while (begin > text_begin) {
        size_t p = begin - 1;
        while (p > text_begin && (uint8_t(text[p]) & 0xC0) == 0x80) --p;
        if (!utf8::is_whitespace(utf8::decode(text, p))) break;
        begin = p;
      }
    }
    if (token.rstrip) {
      while (end < text.size() && utf8::is_whitespace(utf8::decode(text, end))) end += utf8::char_length(text, end);
    }
    encode_text(text_begin, begin);
    ids.push_back(token.id);
    text_begin = i = end;
  }
  encode_text(text_begin, text.size());
  return ids;
}

}  // namespace kiln
