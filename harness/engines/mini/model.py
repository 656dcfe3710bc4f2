"""A Llama-like decoder shard for tensor parallelism (Megatron-style) over a paged KV cache.

Every rank builds the full weights from the same seed and keeps its slice: column-parallel
q/k/v and gate/up projections, row-parallel output and down projections, so each layer
needs one all-reduce after attention and one after the MLP. Embedding, final norm and LM
head are replicated; only rank 0 computes logits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from harness.engines.mini.config import ModelConfig

AllReduce = Callable[[torch.Tensor], None]
Throttle = Callable[[float], None]  # called with the seconds a compute region took


@dataclass(frozen=True)
class SeqSlice:
    """One sequence's part of a step: its new tokens are rows [start, start+length) of the batch."""

    start: int
    length: int
    context_len: int  # tokens in the KV cache after this step (cached + new)
    block_table: tuple[int, ...]
    temperature: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class StepBatch:
    step: int
    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    slots: tuple[int, ...]  # flat KV slot (block * block_size + offset) of each new token
    seqs: tuple[SeqSlice, ...]


def _weight(seed: int, name: str, shape: tuple[int, ...], std: float = 0.02) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(name))) % 2**63)
    return torch.randn(shape, generator=g) * std


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding on [T, heads, head_dim]."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class LayerShard:
    def __init__(self, cfg: ModelConfig, layer: int, rank: int, tp: int):
        h, hd, inter = cfg.hidden, cfg.head_dim, cfg.intermediate
        self.local_heads = cfg.heads // tp
        cols = slice(rank * self.local_heads * hd, (rank + 1) * self.local_heads * hd)
        icols = slice(rank * inter // tp, (rank + 1) * inter // tp)
        p = f"layer{layer}."
        self.attn_norm = torch.ones(h)
        self.mlp_norm = torch.ones(h)
        self.wq = _weight(cfg.seed, p + "wq", (h, h))[:, cols].contiguous()
        self.wk = _weight(cfg.seed, p + "wk", (h, h))[:, cols].contiguous()
        self.wv = _weight(cfg.seed, p + "wv", (h, h))[:, cols].contiguous()
        self.wo = _weight(cfg.seed, p + "wo", (h, h))[cols, :].contiguous()
        self.w_gate = _weight(cfg.seed, p + "w_gate", (h, inter))[:, icols].contiguous()
        self.w_up = _weight(cfg.seed, p + "w_up", (h, inter))[:, icols].contiguous()
        self.w_down = _weight(cfg.seed, p + "w_down", (inter, h))[icols, :].contiguous()


class ModelShard:
    """Rank ``rank`` of ``tp``: weights slice plus this rank's paged KV cache."""

    def __init__(self, cfg: ModelConfig, rank: int, tp: int, num_blocks: int, block_size: int):
        if cfg.heads % tp:
            raise ValueError(f"heads {cfg.heads} not divisible by tp {tp}")
        self.cfg, self.rank, self.tp, self.block_size = cfg, rank, tp, block_size
        self.embed = _weight(cfg.seed, "embed", (cfg.vocab, cfg.hidden), std=1.0)
        self.final_norm = torch.ones(cfg.hidden)
        self.lm_head = _weight(cfg.seed, "lm_head", (cfg.hidden, cfg.vocab)) if rank == 0 else None
        self.layers = [LayerShard(cfg, i, rank, tp) for i in range(cfg.layers)]
        heads = cfg.heads // tp
        # [layers, k|v, blocks * block_size, local heads, head_dim]
        self.kv = torch.zeros(cfg.layers, 2, num_blocks * block_size, heads, cfg.head_dim)

    def weight_bytes(self) -> int:
        tensors = [self.embed, self.final_norm] + ([self.lm_head] if self.lm_head is not None else [])
        for lay in self.layers:
            tensors += [lay.wq, lay.wk, lay.wv, lay.wo, lay.w_gate, lay.w_up, lay.w_down]
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.inference_mode()
    def forward(self, batch: StepBatch, all_reduce: AllReduce, throttle: Throttle) -> torch.Tensor | None:
        """Run the layers; rank 0 returns the last-token logits [num_seqs, vocab], other ranks None."""
        tokens = torch.tensor(batch.tokens, dtype=torch.long)
        positions = torch.tensor(batch.positions, dtype=torch.long)
        slots = torch.tensor(batch.slots, dtype=torch.long)
        with record_function("model.forward"):
            x = self.embed[tokens]
            for i, layer in enumerate(self.layers):
                with record_function(f"layer.{i}"):
                    x = x + self._attention(i, layer, x, positions, slots, batch, all_reduce, throttle)
                    x = x + self._mlp(layer, x, all_reduce, throttle)
            if self.lm_head is None:
                return None
            last = torch.tensor([s.start + s.length - 1 for s in batch.seqs], dtype=torch.long)
            return _rms_norm(x[last], self.final_norm) @ self.lm_head

    def _attention(self, i: int, layer: LayerShard, x: torch.Tensor, positions: torch.Tensor,
                   slots: torch.Tensor, batch: StepBatch, all_reduce: AllReduce, throttle: Throttle) -> torch.Tensor:
        with record_function("attention"):
            t0 = time.perf_counter()
            n, hd = layer.local_heads, self.cfg.head_dim
            xn = _rms_norm(x, layer.attn_norm)
            q = _rope((xn @ layer.wq).view(-1, n, hd), positions)
            k = _rope((xn @ layer.wk).view(-1, n, hd), positions)
            v = (xn @ layer.wv).view(-1, n, hd)
            k_cache, v_cache = self.kv[i, 0], self.kv[i, 1]
            k_cache[slots] = k
            v_cache[slots] = v
            outs = [self._attend(q, k_cache, v_cache, s) for s in batch.seqs]
            out = torch.cat(outs, dim=0).reshape(-1, n * hd) @ layer.wo
            throttle(time.perf_counter() - t0)
            all_reduce(out)
        return out

    def _attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, s: SeqSlice) -> torch.Tensor:
        bs = self.block_size
        idx = (torch.tensor(s.block_table, dtype=torch.long)[:, None] * bs + torch.arange(bs)[None, :]).flatten()
        idx = idx[: s.context_len]
        k, v = k_cache[idx].transpose(0, 1), v_cache[idx].transpose(0, 1)  # [heads, ctx, hd]
        qs = q[s.start : s.start + s.length].transpose(0, 1)  # [heads, len, hd]
        q_pos = torch.arange(s.context_len - s.length, s.context_len)[:, None]
        mask = torch.arange(s.context_len)[None, :] <= q_pos
        out = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask)
        return out.transpose(0, 1)  # [len, heads, hd]

    def _mlp(self, layer: LayerShard, x: torch.Tensor, all_reduce: AllReduce, throttle: Throttle) -> torch.Tensor:
        with record_function("mlp"):
            t0 = time.perf_counter()
            xn = _rms_norm(x, layer.mlp_norm)
            out = (F.silu(xn @ layer.w_gate) * (xn @ layer.w_up)) @ layer.w_down
            throttle(time.perf_counter() - t0)
            all_reduce(out)
        return out


def sample(logits: torch.Tensor, seqs: tuple[SeqSlice, ...], positions: list[int]) -> list[int]:
    """Greedy at temperature 0, else seeded multinomial: the token depends on (seed, position) only,
    so a recomputed (preempted or restarted) sequence gets the same tokens again."""
    out: list[int] = []
    with record_function("sampler"):
        for row, s, pos in zip(logits, seqs, positions, strict=True):
            if s.temperature <= 0:
                out.append(int(torch.argmax(row)))
                continue
            g = torch.Generator().manual_seed((s.seed * 1_000_003 + pos) % 2**63)
            probs = torch.softmax(row / s.temperature, dim=-1)
            out.append(int(torch.multinomial(probs, 1, generator=g)))
    return out
