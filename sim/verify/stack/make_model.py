#!/usr/bin/env python3
"""Generate a Llama-architecture GGUF model with RANDOM weights (fixed seed).

The tokenizer (32k Llama SentencePiece vocab) is copied verbatim from the
llama.cpp tree's models/ggml-vocab-llama-spm.gguf, so llama-server tokenizes
prompts exactly as for a real Llama-2-style model. Only the weights are noise:
the text it generates is gibberish, but the compute/memory work per token is
that of a real model of this shape, which is all a capacity test needs.

The `gguf` writer is the `gguf` package pinned in capsim's dev extra, the same
gguf-py release (0.19.0) that llama-cpp-python 0.3.36 vendors. `prepare.py` takes
the vocab from that sdist and calls this script; by hand:

    python make_model.py --vocab-gguf VOCAB.gguf -o model.gguf     # default size (see DEFAULTS)
    python make_model.py --vocab-gguf VOCAB.gguf -o tiny.gguf --layers 2 --hidden 256 \
        --heads 4 --kv-heads 4 --ffn 688 --ctx 2048 --dtype f32

The output is byte-for-byte deterministic for given arguments and seed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np

# Default: ~124 M params, 12 layers x 768 hidden, GQA 12/4 heads, f16 (~250 MB).
# Streamed per decoded token: all layer weights + output head = ~100 M params
# = ~200 MB in f16 (token_embd is only row-gathered). See NOTES.md for numbers.
DEFAULTS = dict(layers=12, hidden=768, heads=12, kv_heads=4, ffn=2048, ctx=4096, dtype="f16")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", required=True, help="output .gguf path")
    p.add_argument("--layers", type=int, default=DEFAULTS["layers"])
    p.add_argument("--hidden", type=int, default=DEFAULTS["hidden"])
    p.add_argument("--heads", type=int, default=DEFAULTS["heads"])
    p.add_argument("--kv-heads", type=int, default=DEFAULTS["kv_heads"])
    p.add_argument("--ffn", type=int, default=DEFAULTS["ffn"])
    p.add_argument("--ctx", type=int, default=DEFAULTS["ctx"], help="trained context length (metadata)")
    p.add_argument("--dtype", choices=["f16", "f32"], default=DEFAULTS["dtype"])
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--std", type=float, default=0.02, help="weight init std-dev")
    p.add_argument("--vocab-gguf", required=True, help="a vocab-only GGUF whose tokenizer.* keys are copied")
    return p.parse_args(argv)


def copy_tokenizer(gguf, reader, writer) -> int:
    """Copy every tokenizer.* KV from the vocab-only GGUF. Returns vocab size."""
    n_vocab = None
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        types = field.types
        val = field.contents()
        if types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, val, gguf.GGUFValueType.ARRAY, sub_type=types[1])
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(val)
        else:
            writer.add_key_value(name, val, types[0])
    if n_vocab is None:
        raise SystemExit("vocab gguf has no tokenizer.ggml.tokens")
    return n_vocab


def param_count(a, n_vocab: int) -> dict:
    head_dim = a.hidden // a.heads
    kv = a.kv_heads * head_dim
    per_layer = (
        a.hidden * a.hidden * 2
        + a.hidden * kv * 2  # q, o, k, v
        + 3 * a.hidden * a.ffn
        + 2 * a.hidden
    )  # gate, up, down, 2 norms
    embd = n_vocab * a.hidden
    total = a.layers * per_layer + 2 * embd + a.hidden
    streamed = a.layers * per_layer + embd + a.hidden  # per decoded token
    return dict(total=total, per_layer=per_layer, embd=embd, streamed_per_token=streamed)


def _add_tensors(writer, a, n_vocab: int, head_dim: int, wdtype) -> None:
    """The model's tensors, random normal (std ``a.std``, seed ``a.seed``) but the norms (ones)."""
    rng = np.random.Generator(np.random.PCG64(a.seed))

    def rand(*shape):
        # numpy shape is (rows=out_features, cols=in_features); gguf stores it reversed.
        x = rng.standard_normal(shape, dtype=np.float32)
        x *= np.float32(a.std)
        return x.astype(wdtype, copy=False)

    def ones(n):  # norm weights: always f32 (as in converted llama models)
        return np.ones((n,), dtype=np.float32)

    kv = a.kv_heads * head_dim
    writer.add_tensor("token_embd.weight", rand(n_vocab, a.hidden))
    for i in range(a.layers):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", ones(a.hidden))
        writer.add_tensor(b + "attn_q.weight", rand(a.hidden, a.hidden))
        writer.add_tensor(b + "attn_k.weight", rand(kv, a.hidden))
        writer.add_tensor(b + "attn_v.weight", rand(kv, a.hidden))
        writer.add_tensor(b + "attn_output.weight", rand(a.hidden, a.hidden))
        writer.add_tensor(b + "ffn_norm.weight", ones(a.hidden))
        writer.add_tensor(b + "ffn_gate.weight", rand(a.ffn, a.hidden))
        writer.add_tensor(b + "ffn_up.weight", rand(a.ffn, a.hidden))
        writer.add_tensor(b + "ffn_down.weight", rand(a.hidden, a.ffn))
    writer.add_tensor("output_norm.weight", ones(a.hidden))
    writer.add_tensor("output.weight", rand(n_vocab, a.hidden))


def _report(a, name: str, n_vocab: int, t0: float) -> None:
    """What was written: the model's size, the file's and its SHA-256."""
    pc = param_count(a, n_vocab)
    bpp = 2 if a.dtype == "f16" else 4
    h = hashlib.sha256()
    with open(a.out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    print(f"wrote {a.out}: {name}")
    print(
        f"  vocab={n_vocab} params={pc['total'] / 1e6:.1f}M "
        f"(per layer {pc['per_layer'] / 1e6:.2f}M, embd {pc['embd'] / 1e6:.1f}M x2 untied)"
    )
    print(
        f"  file={os.path.getsize(a.out) / 2**20:.1f} MiB, streamed per decoded token "
        f"~{pc['streamed_per_token'] * bpp / 2**20:.0f} MiB ({a.dtype})"
    )
    print(f"  sha256={h.hexdigest()}  ({time.time() - t0:.1f} s)")


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.hidden % a.heads or a.heads % a.kv_heads:
        raise SystemExit("hidden must be divisible by heads, heads by kv_heads")
    import gguf  # deferred: only this script writes GGUF files

    t0 = time.time()

    reader = gguf.GGUFReader(a.vocab_gguf)
    writer = gguf.GGUFWriter(a.out, "llama")
    head_dim = a.hidden // a.heads
    wdtype = np.float16 if a.dtype == "f16" else np.float32

    name = f"capsim-random-llama-L{a.layers}-H{a.hidden}-A{a.heads}-KV{a.kv_heads}-F{a.ffn}-{a.dtype}-seed{a.seed}"
    writer.add_name(name)
    writer.add_context_length(a.ctx)
    writer.add_embedding_length(a.hidden)
    writer.add_block_count(a.layers)
    writer.add_feed_forward_length(a.ffn)
    writer.add_head_count(a.heads)
    writer.add_head_count_kv(a.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if a.dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    n_vocab = copy_tokenizer(gguf, reader, writer)
    writer.add_vocab_size(n_vocab)

    _add_tensors(writer, a, n_vocab, head_dim, wdtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    _report(a, name, n_vocab, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
