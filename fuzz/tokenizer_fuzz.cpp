// libFuzzer target: the input is tried as a tokenizer.json (which must load or
// throw kiln::Error, and if it loads, encode and decode must work or throw
// kiln::Error), as text for two fixed tokenizers (byte-level BPE must round-trip
// every valid UTF-8 string; invalid UTF-8 must throw kiln::Error), and as ids to
// decode and stream. Anything else is a crash.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

// fuzz/CMakeLists.txt compiles one source per target, so the tokenizer's
// sources are compiled into this one.
#include "frontend/tokenizer/bpe.cpp"
#include "frontend/tokenizer/decode.cpp"
#include "frontend/tokenizer/encode.cpp"
#include "frontend/tokenizer/from_json.cpp"
#include "frontend/tokenizer/from_vocab.cpp"
#include "frontend/tokenizer/regex.cpp"
#include "frontend/tokenizer/tokenizer.cpp"

namespace {

using kiln::Tokenizer;

template <class F>
void either(F&& f) {
  try {
    f();
  } catch (const kiln::Error&) {
  }
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Byte-level BPE over all 256 bytes, a few merges and two added tokens.
Tokenizer byte_level() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[kiln::byte_to_unicode(uint8_t(b))] = b;
  std::vector<std::string> merges = {"Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "Ġ Ġ", "ĠĠ ĠĠ"};
  for (const std::string& m : merges) {
    std::string joined = m.substr(0, m.find(' ')) + m.substr(m.find(' ') + 1);
    if (!vocab.contains(joined)) vocab[joined] = vocab.size();
  }
  size_t n = vocab.size();
  nlohmann::json j = {
      {"added_tokens",
       {{{"id", n}, {"content", "<|endoftext|>"}, {"special", true}},
        {{"id", n + 1}, {"content", "<tool>"}, {"special", false}}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", std::string(kiln::kLlama3Pattern)}}}, {"behavior", "Isolated"}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
  };
  return Tokenizer::from_json(j.dump());
}

// SentencePiece BPE with byte fallback, as a GGUF "llama" vocabulary.
Tokenizer sentencepiece() {
  kiln::VocabSpec spec;
  spec.model = "llama";
  spec.tokens = {"<unk>", "<s>", "</s>"};
  spec.token_types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    spec.tokens.push_back(name);
    spec.token_types.push_back(6);
  }
  spec.scores.assign(spec.tokens.size(), 0);
  float score = 0;
  for (const char* t : {"▁", "e", "t", "a", "▁t", "he", "▁the", "in", "er", "ä", "中"}) {
    spec.tokens.push_back(t);
    spec.token_types.push_back(1);
    spec.scores.push_back(score -= 1);
  }
  spec.unk_id = 0;
  spec.bos_id = 1;
  spec.eos_id = 2;
  return Tokenizer::from_vocab(spec);
}

void exercise(const Tokenizer& tok, std::string_view text, const std::vector<int32_t>& raw_ids) {
  either([&] {
    std::vector<int32_t> ids = tok.encode(text, tok.bos_id() >= 0);
    std::string once = tok.decode(ids);
    Tokenizer::Stream stream(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    check(streamed + stream.flush() == once);
  });
  either([&] { tok.decode(raw_ids, true); });
  Tokenizer::Stream stream(tok);
  for (int32_t id : raw_ids) either([&] { stream.push(id); });
  stream.flush();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer bytes = byte_level();
  static const Tokenizer spm = sentencepiece();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<int32_t> ids(std::min<size_t>(size / 4, 256));  // a Stream of garbage is quadratic
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  for (int32_t& id : ids) id %= 1024;  // mostly in range, sometimes negative

  bool valid = kiln::utf8::is_valid(input);
  try {
    std::vector<int32_t> encoded = bytes.encode(input);
    check(valid);
    check(bytes.decode(encoded) == input);
  } catch (const kiln::Error&) {
    check(!valid);
  }
  exercise(bytes, input, ids);
  exercise(spm, input, ids);

  try {
    Tokenizer tok = Tokenizer::from_json(input);
    exercise(tok, "Hello world! Grüße, 世界 🎉 <s> 123\n\n  x", ids);
  } catch (const kiln::Error&) {
  }
  return 0;
}
