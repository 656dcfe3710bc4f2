"""A tiny random Llama-style model with a locally trained tokenizer, saved in Hugging Face layout.

vLLM loads it like any local checkpoint: ``config.json`` (LlamaForCausalLM), ``model.safetensors``
(random weights from a seed), ``generation_config.json`` and a byte-level BPE tokenizer
(``tokenizer.json`` + ``tokenizer_config.json``) trained here on generated text with the HF
``tokenizers`` library. Nothing is downloaded. The end-of-sequence row of ``lm_head`` is zero and
the other rows are not, so greedy decoding never stops early and every request yields its
``max_tokens`` (the load driver's token counts stay comparable with the mini engine's).

Needs ``tokenizers`` and ``safetensors`` (plus torch); vLLM's CPU backend needs head_dim 64.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from chaosbench.errors import InputInvalid, PreflightFailed

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
BOS_ID, EOS_ID = 1, 2
SUPPORTED_HEAD_DIMS = (64, 128)  # vLLM's CPU attention kernels; 16 fails on this machine
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json")


@dataclass(frozen=True)
class TinyLlamaSpec:
    vocab: int = 512
    hidden: int = 128
    layers: int = 2
    heads: int = 2
    intermediate: int = 256
    max_seq_len: int = 512
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def problems(self) -> list[str]:
        out = []
        if self.hidden % self.heads:
            out.append(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        elif self.head_dim not in SUPPORTED_HEAD_DIMS:
            out.append(f"head_dim = hidden/heads = {self.head_dim}; vLLM's CPU backend needs one of "
                       f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}")
        if self.vocab < 300:
            out.append(f"vocab ({self.vocab}) must be at least 300 (256 byte tokens + specials + merges)")
        return out

    @classmethod
    def from_model_spec(cls, model: object, seed: int = 0) -> TinyLlamaSpec:
        """From a scenario's ``deployment.model`` (name, layers, hidden, heads, vocab, max_seq_len)."""
        hidden = int(model.hidden)  # type: ignore[attr-defined]
        return cls(vocab=int(model.vocab), hidden=hidden, layers=int(model.layers),  # type: ignore[attr-defined]
                   heads=int(model.heads), intermediate=2 * hidden,  # type: ignore[attr-defined]
                   max_seq_len=int(model.max_seq_len), seed=seed)  # type: ignore[attr-defined]


def corpus(n_lines: int = 4000, seed: int = 0) -> list[str]:
    """Generated text to train the tokenizer on: pseudo-words from syllables plus digits and punctuation."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 3)))
             for _ in range(600)]
    words += ["the", "a", "of", "and", "to", "in", "is", "request", "token", "model", "server", "rank"]
    lines = []
    for _ in range(n_lines):
        toks = [rng.choice(words) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            toks.append(str(rng.randint(0, 9999)))
        lines.append(" ".join(toks) + rng.choice([".", ",", "?", "!", ""]))
    return lines


def train_tokenizer(vocab: int, seed: int = 0):  # -> tokenizers.Tokenizer
    """Byte-level BPE: every byte is a base token, so any prompt encodes; merges fill up to ``vocab``."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:
        raise PreflightFailed(f"the model generator needs the 'tokenizers' package ({exc.name} missing)") from None
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed=seed), trainer=trainer)
    return tok


def llama_config(spec: TinyLlamaSpec) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
        "vocab_size": spec.vocab, "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads, "num_key_value_heads": spec.heads,
        "head_dim": spec.head_dim, "max_position_embeddings": spec.max_seq_len, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "attention_bias": False,
        "mlp_bias": False, "initializer_range": 0.02, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
        "pad_token_id": None, "use_cache": True,
    }


def random_weights(spec: TinyLlamaSpec):  # -> dict[str, torch.Tensor]
    """Llama parameter names as vLLM's loader expects them; N(0, 0.02) with unit norms."""
    import torch

    gen = torch.Generator().manual_seed(spec.seed)

    def rnd(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).contiguous()

    h, i, v = spec.hidden, spec.intermediate, spec.vocab
    w = {"model.embed_tokens.weight": rnd(v, h), "model.norm.weight": torch.ones(h)}
    for layer in range(spec.layers):
        p = f"model.layers.{layer}."
        w.update({p + "input_layernorm.weight": torch.ones(h), p + "post_attention_layernorm.weight": torch.ones(h),
                  p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.k_proj.weight": rnd(h, h),
                  p + "self_attn.v_proj.weight": rnd(h, h), p + "self_attn.o_proj.weight": rnd(h, h),
                  p + "mlp.gate_proj.weight": rnd(i, h), p + "mlp.up_proj.weight": rnd(i, h),
                  p + "mlp.down_proj.weight": rnd(h, i)})
    head = rnd(v, h) * 50  # logits spread enough that greedy decoding is not a constant
    head[list(range(len(SPECIAL_TOKENS)))] = 0.0  # specials (EOS included) never win the argmax
    w["lm_head.weight"] = head.contiguous()
    return w


def tokenizer_config(max_seq_len: int) -> dict[str, object]:
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "pad_token": "</s>", "add_bos_token": True, "add_eos_token": False,
            "model_max_length": max_seq_len, "clean_up_tokenization_spaces": False}


def make_model(out_dir: Path, spec: TinyLlamaSpec = TinyLlamaSpec(), name: str = "tiny-llama") -> Path:
    """Write the model directory (idempotent for the same spec); returns ``out_dir``."""
    if problems := spec.problems():
        raise InputInvalid("; ".join(problems))
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise PreflightFailed("the model generator needs the 'safetensors' package") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(spec.vocab, spec.seed)
    if tok.get_vocab_size() > spec.vocab:
        raise InputInvalid(f"tokenizer has {tok.get_vocab_size()} tokens, more than vocab {spec.vocab}")
    tok.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config(spec.max_seq_len))
    _write_json(out_dir / "config.json", llama_config(spec))
    _write_json(out_dir / "generation_config.json", {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
                                                     "do_sample": False})
    save_file(random_weights(spec), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out_dir / "chaosbench-model.json", {"name": name, "generator": "chaosbench.engines.vllm.model",
                                                    "tokenizer_vocab": tok.get_vocab_size(), **asdict(spec)})
    return out_dir


def is_model_dir(path: Path) -> bool:
    return all((Path(path) / f).is_file() for f in MODEL_FILES)


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
