// `kiln quantize` and `kiln prune`: a language model's weights rewritten into
// a checkpoint folder that load_llm() reads back (docs/quantization.md).
#pragma once

#include <string>

namespace kiln {

// Reads IN (checkpoint folder or GGUF file), writes OUT with every matrix in
// `scheme` (q8, q4, q4z; dense dequantizes).
int cmd_quantize(const std::string& in, const std::string& out, const std::string& scheme);

// Reads IN, zeroes weights of the linear layers by magnitude (`sparsity` per
// output row, or `pattern` "2:4"), writes OUT in the same dense format.
int cmd_prune(const std::string& in, const std::string& out, double sparsity, const std::string& pattern);

}  // namespace kiln
