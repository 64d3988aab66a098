"""Builds a tiny random-weight Llama with a locally trained tokenizer, for real vLLM on a CPU.

The contract tests need a model real vLLM will load in seconds on two cores, and nothing may come
from a model hub. The weights are random (the tests check metrics and lifecycle, not text quality);
the shape is the smallest vLLM's CPU attention accepts: head size must be at least 32, or the first
request kills the engine while `/health` still answers 200.

Run with the vLLM venv's python (it has torch, transformers and tokenizers):

    python runtime/vllm_cpu/make_tiny_model.py [OUT_DIR]

OUT_DIR defaults to ${THRIFTY_CACHE:-~/.cache/thrifty}/models/tiny-llama. The model is written to a
scratch directory and renamed into place, so an interrupted build is never reused. Prints OUT_DIR.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HIDDEN_SIZE = 128
NUM_HEADS = 4  # head size 32: the minimum vLLM's CPU attention handles
NUM_LAYERS = 2
INTERMEDIATE_SIZE = 256
MAX_POSITIONS = 2048
VOCAB_SIZE = 2048
CORPUS_LIMIT_BYTES = 4_000_000
SPECIAL_TOKENS = ["<|pad|>", "<|begin_of_text|>", "<|end_of_text|>"]
STAMP = ".thrifty-model-complete"
# A plain role-tagged template: enough for /v1/chat/completions to render a prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def default_out_dir() -> Path:
    cache = Path(os.environ.get("THRIFTY_CACHE", Path.home() / ".cache" / "thrifty"))
    return cache / "models" / "tiny-llama"


def local_corpus() -> Iterator[str]:
    """Python's own standard library sources: text every machine running this already has."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    budget = CORPUS_LIMIT_BYTES
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        yield text
        budget -= len(text)
        if budget <= 0:
            return


def build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(local_corpus(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        model_max_length=MAX_POSITIONS,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(out)
    return int(tokenizer.get_vocab_size())


def build_model(out: Path, vocab_size: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0).save_pretrained(out)


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else default_out_dir()
    if (out / STAMP).exists():
        print(out)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp.", dir=out.parent))
    try:
        vocab_size = build_tokenizer(scratch)
        build_model(scratch, vocab_size)
        (scratch / STAMP).write_text("complete\n")
        shutil.rmtree(out, ignore_errors=True)
        scratch.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
