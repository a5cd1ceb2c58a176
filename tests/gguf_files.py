"""A tiny but complete llama GGUF checkpoint, written with the ``gguf`` package's own writer.

transformers makes a config, a byte-level BPE tokenizer (gpt2 vocabulary: the 256 byte symbols,
a few merges, one control token) and a model of it, like of any llama.cpp file; most weights are
stored Q8_0-quantised, so loading it dequantises. Small enough to convert in a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s")]


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def write_tiny_llama_gguf(path: Path, seed: int = 0, name: str | None = "Tiny Llama", hidden: int = 32,
                          layers: int = 2, ffn: int = 64, heads: int = 4, kv_heads: int = 2, tied: bool = True) -> Path:
    """Write a random-weight llama GGUF to ``path`` (``seed`` draws the weights; ``tied=False`` adds an
    LM head of its own, ``output.weight``)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>"] + byte_symbols() + ["".join(m) for m in MERGES]
    writer = gguf.GGUFWriter(str(path), "llama")
    if name:
        writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))  # 3: control
    writer.add_token_merges([" ".join(m) for m in MERGES])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)

    def tensor(key: str, *shape: int) -> None:
        values = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if len(shape) == 2:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(key, gguf.quants.quantize(values, q8), raw_dtype=q8)
        else:
            writer.add_tensor(key, 1.0 + values)  # norms stay float32, as llama.cpp writes them

    head = hidden // heads
    tensor("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", hidden)
        tensor(f"blk.{i}.attn_q.weight", hidden, hidden)
        tensor(f"blk.{i}.attn_k.weight", kv_heads * head, hidden)
        tensor(f"blk.{i}.attn_v.weight", kv_heads * head, hidden)
        tensor(f"blk.{i}.attn_output.weight", hidden, hidden)
        tensor(f"blk.{i}.ffn_norm.weight", hidden)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn)
    tensor("output_norm.weight", hidden)
    if not tied:
        tensor("output.weight", len(tokens), hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
