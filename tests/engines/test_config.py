"""Engine config from real scenarios, the engine registry, the tokenizer and the OpenAI request models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from chaosbench.engines import ENGINES
from chaosbench.engines.mini.config import engine_config
from chaosbench.engines.mini.protocol import ChatRequest, CompletionRequest
from chaosbench.engines.mini.tokenizer import EOS, ByteTokenizer
from chaosbench.errors import InputInvalid
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]


def _cfg(scenario, **kw):
    return engine_config(scenario, run_dir=Path("/r"), trace_dir=Path("/t"), control_dir=Path("/c"),
                         node_ips={"node-0": "10.232.0.2", "node-1": "10.232.0.3"}, gloo_ifname="eth0", **kw)


def test_config_from_shipped_scenario() -> None:
    cfg = _cfg(load_scenario(REPO / "scenarios" / "gpu-power-cap.yaml"))
    assert cfg.tensor_parallel == 4 and cfg.nodes == 2
    assert [cfg.rank_node(r) for r in range(4)] == ["node-0", "node-0", "node-1", "node-1"]
    assert cfg.model.hidden == 256 and cfg.model.head_dim == 64
    assert cfg.node_ip("node-1") == "10.232.0.3" and cfg.gloo_ifname == "eth0"


def _fake(tp: int = 2, dp: int = 1, heads: int = 4, vocab: int = 2048, pp: int | None = None,
          layers: int = 1) -> SimpleNamespace:
    model = SimpleNamespace(name="m", layers=layers, hidden=64, heads=heads, vocab=vocab, max_seq_len=64)
    topo = SimpleNamespace(nodes=1, tensor_parallel=tp, data_parallel=dp)
    if pp is not None:  # TopologySpec has no pipeline_parallel before issue 17's harness half
        topo.pipeline_parallel = pp
    return SimpleNamespace(spec=SimpleNamespace(deployment=SimpleNamespace(topology=topo, model=model)))


@pytest.mark.parametrize(("kw", "msg"), [({"dp": 3, "tp": 4}, "at most 8"), ({"tp": 3}, "tensor_parallel"),
                                         ({"pp": 2, "layers": 3}, "pipeline_parallel"), ({"dp": 0}, ">= 1"),
                                         ({"pp": 4, "layers": 2}, "layers=2"), ({"vocab": 100}, "vocab")])
def test_config_rejects_what_mini_cannot_run(kw: dict, msg: str) -> None:
    with pytest.raises(InputInvalid, match=msg) as err:
        _cfg(_fake(**kw))
    assert "\n" not in str(err.value)


def test_config_without_pipeline_parallel_is_the_tensor_parallel_layout() -> None:
    cfg = _cfg(_fake(tp=2))
    assert (cfg.data_parallel, cfg.pipeline_parallel, cfg.tensor_parallel) == (1, 1, 2)
    assert cfg.layout.single_group and cfg.micro_batches == 0


@pytest.mark.parametrize(("dp", "pp", "tp"), [(2, 1, 4), (2, 2, 2), (1, 4, 2), (4, 1, 2), (1, 2, 2), (2, 4, 1)])
def test_config_accepts_local_layouts(dp: int, pp: int, tp: int) -> None:
    cfg = _cfg(_fake(dp=dp, pp=pp, tp=tp, layers=4))
    assert cfg.layout.world_size == dp * pp * tp <= 8
    assert (cfg.data_parallel, cfg.pipeline_parallel) == (dp, pp) and not cfg.layout.single_group


def test_registry_lists_engines_lazily() -> None:
    assert {"mini", "vllm"} <= set(ENGINES.names())
    from chaosbench.engines.mini import deploy

    assert ENGINES.get("mini") is deploy


def test_tokenizer_round_trip_and_vocab() -> None:
    tok = ByteTokenizer(512)
    ids = tok.encode("héllo")
    assert ids[0] == tok.bos and len(ids) == 1 + len("héllo".encode())
    assert tok.decode(ids) == "héllo"
    assert tok.decode([EOS]) == ""
    words = [tok.decode_token(t) for t in range(259, 512)]
    assert all(w.startswith(" ") and w[1:].isalpha() for w in words)
    assert tok.decode_token(300) == ByteTokenizer(512).decode_token(300)
    with pytest.raises(ValueError):
        ByteTokenizer(100)


def test_request_models() -> None:
    req = CompletionRequest.model_validate({"prompt": ["hi"], "max_tokens": 4, "stream": True,
                                            "stream_options": {"include_usage": True}, "extra": 1})
    assert req.prompt_text() == "hi" and req.include_usage()
    with pytest.raises(ValueError):
        CompletionRequest.model_validate({"prompt": ["a", "b"]}).prompt_text()
    chat = ChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}]})
    assert chat.prompt_text() == "<|user|>x\n<|assistant|>"
    with pytest.raises(ValueError):
        ChatRequest.model_validate({"messages": []})
