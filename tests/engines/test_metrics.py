"""The engine core's vLLM-named metrics: unchanged for the tensor-parallel layout, labelled by replica beyond it."""

from __future__ import annotations

from prometheus_client import generate_latest

from chaosbench.engines.mini.metrics import EngineMetrics


def _samples(m: EngineMetrics) -> list[str]:
    m.ttft.observe(0.1)
    m.running.set(2)
    m.success("stop")
    return [ln for ln in generate_latest(m.registry).decode().splitlines() if ln.startswith("vllm:")]


def test_tensor_parallel_layout_keeps_names_and_labels() -> None:
    lines = _samples(EngineMetrics("mini-llama"))
    assert 'vllm:num_requests_running{model_name="mini-llama"} 2.0' in lines
    assert 'vllm:request_success_total{finished_reason="stop",model_name="mini-llama"} 1.0' in lines
    assert 'vllm:time_to_first_token_seconds_count{model_name="mini-llama"} 1.0' in lines


def test_replica_label_beyond_the_tensor_parallel_layout() -> None:
    plain = {ln.split("{")[0] for ln in _samples(EngineMetrics("m"))}
    lines = _samples(EngineMetrics("m", replica="replica-1"))
    assert {ln.split("{")[0] for ln in lines} == plain  # same metric names
    assert 'vllm:num_requests_running{model_name="m",replica="replica-1"} 2.0' in lines
    assert 'vllm:request_success_total{finished_reason="stop",model_name="m",replica="replica-1"} 1.0' in lines
    assert all('replica="replica-1"' in ln for ln in lines)
