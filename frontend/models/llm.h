// Decoder-only language models built from kiln's primitive ops: the llama
// family (RMSNorm, RoPE, grouped-query attention, SwiGLU) and GPT-2 (LayerNorm,
// learned positions, GELU). One config describes a model's shape; the graphs
// are built from it, so any config runs with random weights and no download.
//
// Weights use Hugging Face's names and layouts (a linear layer's weight is
// [out, in]), so a safetensors checkpoint maps onto them one to one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kiln/graph.h"
#include "kiln/host_tensor.h"

namespace kiln {

struct LlmConfig {
  std::string name;
  std::string arch = "llama";  // "llama" or "gpt2"
  int64_t dim = 0;             // hidden size
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;  // < heads: grouped-query attention
  int64_t hidden = 0;    // MLP width
  int64_t vocab = 0;
  int64_t max_seq = 0;  // the KV cache's capacity
  double rope_theta = 10000;
  // Llama 3's rope scaling (off while rope_factor is 0): frequencies whose
  // wavelength exceeds rope_original_max / rope_low_freq are divided by
  // rope_factor, those under rope_original_max / rope_high_freq are kept, and
  // the band between is blended, as transformers does.
  double rope_factor = 0, rope_low_freq = 1, rope_high_freq = 4;
  int64_t rope_original_max = 8192;
  double norm_eps = 1e-5;
  bool tied_embeddings = false;  // the output head reuses the token embedding
  bool qkv_bias = false;         // Qwen2: biases on q, k and v

  int64_t head_dim() const { return dim / heads; }
  // Throws kiln::Error naming what is inconsistent.
  void validate() const;
};

// How a model's matrices (every 2-d weight) are stored. The graphs
// dequantize with ordinary IR ops, which fusion inlines into the consuming
// contraction (or gather), so no dequantized copy of a weight is ever stored.
//   q8:  "W" i8[out, in], "W.scale" f32[out]: w = q * scale[row]
//   q4:  GGUF Q4_0's block layout, split in two tensors: groups of 32 along
//        the input dim; "W" u8[out, in/2] holds each group's 16 bytes (element
//        j of a group in the low nibble of its byte j for j < 16, element j in
//        the high nibble of byte j - 16 for j >= 16), "W.scale" f16[out, in/32]:
//        w = (nibble - 8) * scale
//   q4z: q4 with a minimum per group (GGUF Q4_1's arithmetic), "W.min"
//        f16[out, in/32]: w = nibble * scale + min
//   s24: 2:4 sparse (at most 2 nonzeros in each group of 4 consecutive
//        inputs), compressed: "W" float[out, in/2] holds each group's 2 kept
//        weights in input order, "W.sel" u8[out, in/2] the position (0-3)
//        of each in its group. A decode step's GEMV reads only these (half
//        the values, a byte each); prefill rebuilds dense tiles from them.
//        Embedding tables stay dense (they are gathered, not multiplied).
// q4 and q4z take any in: a row of in % 32 != 0 inputs (the shipped
// support-teacher's down_proj: 688) ends in a partial group, stored as a
// whole one (ceil(in / 32) groups: "W" u8[out, ceil(in / 32) * 16], one scale
// each) whose elements past `in` are padding that nothing reads (the graph
// slices them off; quantize_q4 writes the nibble of 0). s24 needs in % 4 == 0
// (a kiln::Error names the matrix otherwise).
enum class WeightFormat { dense, q8, q4, q4z, s24 };
// The tensors beside a stored matrix "W": "W" + each of these.
inline constexpr const char* kWeightAuxSuffixes[] = {".scale", ".min", ".sel"};
inline constexpr int64_t kQ4Group = 32;
// A 4-bit row's stored length: `in` rounded up to whole groups.
inline constexpr int64_t q4_padded(int64_t in) { return (in + kQ4Group - 1) / kQ4Group * kQ4Group; }
std::string weight_format_name(WeightFormat f);  // "dense", "q8", "q4", "q4z", "s24"
WeightFormat parse_weight_format(const std::string& name);  // throws kiln::Error

// Built-in shapes: stories15m, stories110m, gpt2, tinyllama-1.1b,
// llama-3.2-1b, qwen2.5-0.5b, and "tiny" (a few KB, for tests).
LlmConfig llm_config(const std::string& name);
std::vector<std::string> llm_config_names();

// Every weight's name and shape, in a fixed order.
std::vector<std::pair<std::string, std::vector<int64_t>>> llm_weight_shapes(const LlmConfig& c);
int64_t llm_param_count(const LlmConfig& c);
// Matrices the graphs read as one: each llama layer's q, k and v projections
// (and biases) stacked along the output dim as "<layer>self_attn.qkv_proj.weight"
// (rows q, then k, then v), so that one GEMV reads all three and one RoPE
// rotates q and k together (two kernels fewer a layer, and three launches).
// Each entry: the graphs' input name and the llm_weight_shapes names it
// stacks, in order. GPT-2 stores its c_attn stacked already.
std::vector<std::pair<std::string, std::vector<std::string>>> llm_stacked_weights(const LlmConfig& c);
// `weights` (names of llm_weight_shapes, in any one format) with each stack's
// parts replaced by their rows stacked, and their ".scale" / ".min" tensors
// likewise: the inputs the graphs name. A stack with a part missing is left
// as it is (the graph's binding then names what is missing).
std::map<std::string, HostTensor> stack_llm_weights(const LlmConfig& c, std::map<std::string, HostTensor> weights);
// The rows of `parts` one after another (same dtype and trailing dims, else
// kiln::Error).
HostTensor stack_rows(const std::vector<const HostTensor*>& parts);
// Seeded random weights of `dtype`, scaled so that activations stay of order 1
// through every layer (uniform in +-1/sqrt(fan_in); norm gains near 1).
std::map<std::string, HostTensor> random_llm_weights(const LlmConfig& c, DType dtype, uint64_t seed);

// Every 2-d weight of `weights` (float) as q8: per output row, scale =
// max |w| / 127 and q = round(w / scale). 1-d weights are kept as they are.
std::map<std::string, HostTensor> quantize_q8(const std::map<std::string, HostTensor>& weights);

// Every 2-d weight of `weights` (float) as q4: per group, scale = max |w| / 7.5
// rounded up to f16, nibble = clamp(round(w / scale) + 8, 0, 15), so every
// element is within scale / 2 of the original (GGUF's Q4_0 takes max / -8 and
// may be off by a whole step at the other end).
std::map<std::string, HostTensor> quantize_q4(const std::map<std::string, HostTensor>& weights);
// As q4z: min = the group's smallest w rounded down to f16, scale = (max -
// min) / 15 rounded up to f16, nibble = round((w - min) / scale): within
// scale / 2 as well.
std::map<std::string, HostTensor> quantize_q4z(const std::map<std::string, HostTensor>& weights);

// The format a matrix "W" is stored in within `weights` (from its dtype, and
// "W.min" for q4z).
WeightFormat stored_format(const std::map<std::string, HostTensor>& weights, const std::string& name);
// Every matrix of `weights` in `to`: kept if it is in `to` already, else
// dequantized (to f32) and quantized again. `to` dense gives f32 (or the
// stored float dtype) matrices. The shapes of quantized tensors are checked
// against their matrix's (kiln::Error naming the tensor). A 4-bit matrix's
// row holds whole groups, so its true input count comes from `config` where
// given (llm_weight_shapes); without it, its padding stays in the row.
std::map<std::string, HostTensor> convert_weights(const std::map<std::string, HostTensor>& weights,
                                                  WeightFormat to, const LlmConfig* config = nullptr);

// Magnitude pruning of the matrices a linear layer reads (every 2-d weight but
// the embedding tables; a tied output head is the embedding and is kept), in
// the same dense format with zeros. prune_rows: in each output row, the
// round(sparsity * in) weights of least |w| become 0. prune_2_4: in each group
// of 4 consecutive input weights, the 2 of least |w| become 0 (in % 4 == 0).
std::map<std::string, HostTensor> prune_rows(const std::map<std::string, HostTensor>& weights, double sparsity);
std::map<std::string, HostTensor> prune_2_4(const std::map<std::string, HostTensor>& weights);
// Every prunable matrix (as prune_2_4 picks them) of `weights` in s24: each
// group of 4 keeps its 2 largest |w| (ties: the first), so a matrix that is
// 2:4 already loses nothing.
std::map<std::string, HostTensor> compress_2_4(const std::map<std::string, HostTensor>& weights);
// kiln::Error naming "<name>.sel" unless `sel` (u8 [out, in/2]) holds, for
// each group, two positions in 0-3 in increasing order.
void check_2_4_positions(const std::string& name, const HostTensor& sel);
bool is_embedding_table(const std::string& name);

// The prefill graph for `seq` tokens (a constant: prompts are padded up to a
// bucket, so kernels tile on constant extents).
//   inputs:  tokens i32[seq], positions i32[seq], mask f32[seq, seq] (0 or -inf:
//            causal, and padding), last i32[1] (which position's logits), and
//            the weights (names of llm_weight_shapes, stacked as
//            llm_stacked_weights says)
//   outputs: logits f32[1, vocab] at position `last`, then for each layer l
//            its keys and values [seq, kv_heads, head_dim] in the cache's
//            dtype (llm_cache_dtype), which the prompt's attention reads too.
Graph llm_prefill_graph(const LlmConfig& c, DType dtype, int64_t seq, WeightFormat wf = WeightFormat::dense,
                        std::optional<DType> kv = std::nullopt);

// The decode graph: one token, attending to the first `past` rows of the
// cache. `past` is a symbolic dim in [1, max_seq - 1], so the graph compiles
// once for every length; rows past the filled part are masked out by
// cache_mask (0 or -1e30), so a session can round `past` up and run the same
// launches (and replay them) for many steps.
//   inputs:  token i32[1], position i32[1], cache_mask f32[past], k_cache.l /
//            v_cache.l [past, kv_heads, head_dim] for each layer l, the weights
//            and vocab_ids f32[1, vocab] (0 .. vocab-1, from llm_tables)
//   outputs: logits f32[1, vocab], then the new token's key and value
//            [1, kv_heads, head_dim] for each layer, then the greedy token
//            f32[1, 1] (the first id of the largest logit).
// The caches (inputs and the new rows) are of dtype llm_cache_dtype(dtype,
// wf, kv): a narrower one (f16 for an f32 or q8 model on the CPU) halves the
// bytes the attention reads each step and the cache's memory; the attention
// computes in `dtype` from them, and this step's key and value are rounded to
// `kv` before it reads them, as later steps will.
Graph llm_decode_graph(const LlmConfig& c, DType dtype, WeightFormat wf = WeightFormat::dense,
                       std::optional<DType> kv = std::nullopt);
// The caches' dtype: `kv`; where not given, f16 for quantized matrices (wf q8,
// q4 or q4z) with f32 activations (the model is already approximate, and half
// the cache's bytes is 1.1x the CPU's decode speed), else `dtype`. An Error
// unless a float dtype.
DType llm_cache_dtype(DType dtype, WeightFormat wf, std::optional<DType> kv);

// RoPE tables: the graphs gather rows of these by position.
//   cos/sin f32[max_seq, head_dim / 2]; inputs "rope_cos", "rope_sin".
std::map<std::string, HostTensor> llm_rope_tables(const LlmConfig& c);
// The graphs' constant inputs: the RoPE tables and "vocab_ids".
std::map<std::string, HostTensor> llm_tables(const LlmConfig& c);

}  // namespace kiln
