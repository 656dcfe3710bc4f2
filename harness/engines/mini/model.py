"""A Llama-like decoder shard for tensor parallelism (Megatron-style) over a paged KV cache.

Every rank builds the full weights from the same seed and keeps its slice: column-parallel
q/k/v and gate/up projections, row-parallel output and down projections, so each layer
needs one all-reduce after attention and one after the MLP. Embedding, final norm and LM
head are replicated; only rank 0 computes logits.

With pipeline stages a shard holds only its stage's layers (global indices, so the weights are
those of the unsplit model): the embedding on the first stage, the final norm and LM head on the
last; ``forward_stage`` maps the previous stage's hidden states to the next one's (or to logits).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from chaosbench.engines.mini.config import ModelConfig

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


def _rms_norm(x: torch.Tensor, w_scaled: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm as x * w / rms(x), with ``w_scaled = w * sqrt(hidden)`` (few ops: cheap to profile)."""
    return x * (w_scaled / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on [T, heads, head_dim] with per-token cos/sin of shape [T, 1, head_dim/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@dataclass(frozen=True)
class _Meta:
    """Per-step index tensors shared by all layers: padded [seqs, max_len] views of the ragged batch."""

    cos: torch.Tensor
    sin: torch.Tensor
    slots: torch.Tensor  # [T] cache slot of each new token
    q_rows: torch.Tensor  # [B, Qmax] row of the batch feeding each padded query
    kv_slots: torch.Tensor  # [B, Lmax] cache slot of each padded key
    mask: torch.Tensor  # [B, 1, Qmax, Lmax] causal and length mask
    out_rows: torch.Tensor  # [T] padded row (b * Qmax + i) of each real token


def _meta(batch: StepBatch, block_size: int, cos_table: torch.Tensor, sin_table: torch.Tensor) -> _Meta:
    """Built from Python lists, then one tensor each: few ops, so profiling stays cheap."""
    qmax = max(s.length for s in batch.seqs)
    lmax = max(s.context_len for s in batch.seqs)
    q_rows, kv_slots, mask, out_rows = [], [], [], []
    for b, s in enumerate(batch.seqs):
        q_rows.append(list(range(s.start, s.start + s.length)) + [0] * (qmax - s.length))
        slots = [blk * block_size + o for blk in s.block_table for o in range(block_size)][: s.context_len]
        kv_slots.append(slots + [0] * (lmax - s.context_len))
        first_q = s.context_len - s.length
        rows = [[j <= first_q + i for j in range(lmax)] for i in range(s.length)]
        rows += [[j == 0 for j in range(lmax)]] * (qmax - s.length)  # padded queries: one key, never NaN
        mask.append([rows])
        out_rows += range(b * qmax, b * qmax + s.length)
    positions = torch.tensor(batch.positions, dtype=torch.long)
    return _Meta(cos=cos_table[positions][:, None, :], sin=sin_table[positions][:, None, :],
                 slots=torch.tensor(batch.slots, dtype=torch.long), q_rows=torch.tensor(q_rows),
                 kv_slots=torch.tensor(kv_slots), mask=torch.tensor(mask), out_rows=torch.tensor(out_rows))


class LayerShard:
    """One layer's slice: fused column-parallel q|k|v and gate|up, row-parallel o and down."""

    def __init__(self, cfg: ModelConfig, layer: int, rank: int, tp: int):
        h, hd, inter = cfg.hidden, cfg.head_dim, cfg.intermediate
        self.local_heads = cfg.heads // tp
        cols = slice(rank * self.local_heads * hd, (rank + 1) * self.local_heads * hd)
        icols = slice(rank * inter // tp, (rank + 1) * inter // tp)
        p = f"layer{layer}."
        self.attn_norm = torch.ones(h) * h**0.5
        self.mlp_norm = torch.ones(h) * h**0.5
        self.wqkv = torch.cat([_weight(cfg.seed, p + n, (h, h))[:, cols] for n in ("wq", "wk", "wv")], 1).contiguous()
        self.wo = _weight(cfg.seed, p + "wo", (h, h))[cols, :].contiguous()
        self.w_gate_up = torch.cat([_weight(cfg.seed, p + n, (h, inter))[:, icols] for n in ("w_gate", "w_up")],
                                   1).contiguous()
        self.w_down = _weight(cfg.seed, p + "w_down", (inter, h))[icols, :].contiguous()

    def tensors(self) -> list[torch.Tensor]:
        return [self.attn_norm, self.mlp_norm, self.wqkv, self.wo, self.w_gate_up, self.w_down]


class ModelShard:
    """Rank ``rank`` of ``tp`` in pipeline stage ``stage`` of ``stages``: weights slice plus its paged KV cache."""

    def __init__(self, cfg: ModelConfig, rank: int, tp: int, num_blocks: int, block_size: int, *, stage: int = 0,
                 stages: int = 1):
        if cfg.heads % tp:
            raise ValueError(f"heads {cfg.heads} not divisible by tp {tp}")
        if cfg.layers % stages or not 0 <= stage < stages:
            raise ValueError(f"layers {cfg.layers} cannot make stage {stage} of {stages}")
        self.cfg, self.rank, self.tp, self.block_size = cfg, rank, tp, block_size
        self.stage, self.stages = stage, stages
        first, last = stage == 0, stage == stages - 1
        per_stage = cfg.layers // stages
        self.first_layer = stage * per_stage
        self.embed = _weight(cfg.seed, "embed", (cfg.vocab, cfg.hidden), std=1.0) if first else None
        self.final_norm = torch.ones(cfg.hidden) * cfg.hidden**0.5 if last else None
        self.lm_head = _weight(cfg.seed, "lm_head", (cfg.hidden, cfg.vocab)) if rank == 0 and last else None
        self.layers = [LayerShard(cfg, i, rank, tp) for i in range(self.first_layer, self.first_layer + per_stage)]
        heads = cfg.heads // tp
        # [stage layers, k|v, blocks * block_size, local heads, head_dim]
        self.kv = torch.zeros(per_stage, 2, num_blocks * block_size, heads, cfg.head_dim)
        half = cfg.head_dim // 2
        angles = torch.arange(cfg.max_seq_len, dtype=torch.float32)[:, None] * (
            10000.0 ** (-torch.arange(half, dtype=torch.float32) / half))[None, :]
        self.cos, self.sin = angles.cos(), angles.sin()

    def weight_bytes(self) -> int:
        tensors = [t for t in (self.embed, self.final_norm, self.lm_head) if t is not None]
        for lay in self.layers:
            tensors += lay.tensors()
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def last_stage(self) -> bool:
        return self.stage == self.stages - 1

    def forward(self, batch: StepBatch, all_reduce: AllReduce, throttle: Throttle) -> torch.Tensor | None:
        """Run the layers; rank 0 returns the last-token logits [num_seqs, vocab], other ranks None."""
        return self.forward_stage(batch, None, all_reduce, throttle)

    @torch.inference_mode()
    def forward_stage(self, batch: StepBatch, hidden: torch.Tensor | None, all_reduce: AllReduce,
                      throttle: Throttle) -> torch.Tensor | None:
        """This stage's layers on ``hidden`` [tokens, hidden] (the first stage embeds ``batch.tokens``): the
        hidden states for the next stage, or on the last stage rank 0's last-token logits [num_seqs, vocab]
        (None on its other ranks)."""
        with record_function("model.forward"):
            meta = _meta(batch, self.block_size, self.cos, self.sin)
            x = self.embed[torch.tensor(batch.tokens, dtype=torch.long)] if hidden is None else hidden
            for i, layer in enumerate(self.layers):
                with record_function(f"layer.{self.first_layer + i}"):
                    x = x + self._attention(i, layer, x, meta, all_reduce, throttle)
                    x = x + self._mlp(layer, x, all_reduce, throttle)
            if not self.last_stage:
                return x
            if self.lm_head is None:
                return None
            last = torch.tensor([s.start + s.length - 1 for s in batch.seqs], dtype=torch.long)
            return torch.mm(_rms_norm(x[last], self.final_norm), self.lm_head)

    def _attention(self, i: int, layer: LayerShard, x: torch.Tensor, meta: _Meta, all_reduce: AllReduce,
                   throttle: Throttle) -> torch.Tensor:
        with record_function("attention"):
            t0 = time.perf_counter()
            n, hd = layer.local_heads, self.cfg.head_dim
            qkv = torch.mm(_rms_norm(x, layer.attn_norm), layer.wqkv).view(-1, 3 * n, hd)
            qk = _rope(qkv[:, : 2 * n], meta.cos, meta.sin)
            q, k, v = qk[:, :n], qk[:, n:], qkv[:, 2 * n :]
            k_cache, v_cache = self.kv[i, 0], self.kv[i, 1]
            k_cache[meta.slots] = k
            v_cache[meta.slots] = v
            qp = q[meta.q_rows].transpose(1, 2)  # [B, heads, Qmax, hd]
            kp = k_cache[meta.kv_slots].transpose(1, 2)  # [B, heads, Lmax, hd]
            vp = v_cache[meta.kv_slots].transpose(1, 2)
            att = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=meta.mask)
            att = att.transpose(1, 2).reshape(-1, n * hd)[meta.out_rows]
            out = torch.mm(att, layer.wo)
            throttle(time.perf_counter() - t0)
            all_reduce(out)
        return out

    def _mlp(self, layer: LayerShard, x: torch.Tensor, all_reduce: AllReduce, throttle: Throttle) -> torch.Tensor:
        with record_function("mlp"):
            t0 = time.perf_counter()
            gate_up = torch.mm(_rms_norm(x, layer.mlp_norm), layer.w_gate_up)
            half = gate_up.shape[1] // 2
            out = torch.mm(F.silu(gate_up[:, :half]) * gate_up[:, half:], layer.w_down)
            throttle(time.perf_counter() - t0)
            all_reduce(out)
        return out


def split_batch(batch: StepBatch, parts: int) -> tuple[StepBatch, ...]:
    """Cut a step into at most ``parts`` micro-batches of whole sequences, contiguous and balanced by tokens.

    Attention never crosses sequences and every other op is row-wise, so the micro-batches give the
    step's results."""
    seqs = batch.seqs
    parts = max(1, min(parts, len(seqs)))
    if parts == 1:
        return (batch,)
    groups: list[list[SeqSlice]] = []
    i, left = 0, len(batch.tokens)
    for k in range(parts):
        groups_left = parts - k
        share = left / groups_left
        group = [seqs[i]]
        i += 1
        while len(seqs) - i > groups_left - 1 and sum(s.length for s in group) + seqs[i].length / 2 <= share:
            group.append(seqs[i])
            i += 1
        if k == parts - 1:
            group += seqs[i:]
        left -= sum(s.length for s in group)
        groups.append(group)
    return tuple(_sub_batch(batch, g) for g in groups)


def _sub_batch(batch: StepBatch, seqs: list[SeqSlice]) -> StepBatch:
    lo, hi = seqs[0].start, seqs[-1].start + seqs[-1].length
    return StepBatch(step=batch.step, tokens=batch.tokens[lo:hi], positions=batch.positions[lo:hi],
                     slots=batch.slots[lo:hi], seqs=tuple(replace(s, start=s.start - lo) for s in seqs))


def sample(logits: torch.Tensor, seqs: tuple[SeqSlice, ...], positions: list[int]) -> list[int]:
    """Greedy at temperature 0, else Gumbel-max with noise seeded by (seed, position): a recomputed
    (preempted or restarted) sequence gets the same tokens again. Noise comes from numpy (untraced)."""
    with record_function("sampler"):
        temps = [s.temperature for s in seqs]
        noise = np.stack([_gumbel(s.seed, pos, logits.shape[1]) if s.temperature > 0 else
                          np.zeros(logits.shape[1], dtype=np.float32) for s, pos in zip(seqs, positions, strict=True)])
        scale = torch.tensor([1.0 / t if t > 0 else 1.0 for t in temps])[:, None]
        tokens = torch.argmax(logits * scale + torch.from_numpy(noise), dim=-1)
    return tokens.tolist()


def _gumbel(seed: int, position: int, n: int) -> np.ndarray:
    u = np.random.default_rng([seed & 0xFFFFFFFF, position]).random(n, dtype=np.float32)
    return -np.log(-np.log(np.clip(u, 1e-10, 1.0 - 1e-7)))
