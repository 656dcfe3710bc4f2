"""The signature knowledge base covers the catalog exactly and is checked at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chaosbench.detectors.analyzer.findings import family_of
from chaosbench.detectors.analyzer.knowledge import KB_PATH, default_kb, load_kb
from chaosbench.errors import PluginInvalid
from chaosbench.faults.catalog import FAULT_IDS, FAULTS


def test_every_catalog_fault_has_a_signature_of_the_right_target():
    kb = default_kb()
    assert set(kb.signatures) == set(FAULT_IDS)
    for fid, sig in kb.signatures.items():
        assert sig.target == FAULTS[fid].target, fid
        assert sig.requires and sig.chain[0].kind == "symptom" and sig.chain[-1].kind == "cause"


@pytest.mark.parametrize(
    ("metric", "family"),
    [
        ("DCGM_FI_DEV_SM_CLOCK", "sm_clock"),
        ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "power_limit"),
        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "clock_reason"),
        ("DCGM_FI_DEV_XID_ERRORS", "xid"),
        ("vllm:kv_cache_usage_perc", "kv_cache"),
        ("vllm_kv_cache_usage_perc", "kv_cache"),
        ("vllm:num_preemptions:rate", "preemptions"),
        ("chaosbench_node_cpu_throttled_periods:rate", "cpu_throttled"),
        ("chaosbench_node_cpu_usage_seconds:rate", "cpu_usage"),
        ("node_pressure_cpu_waiting_seconds_total", "cpu_psi"),
        ("chaosbench_node_memory_pressure_seconds:rate", "mem_psi"),
        ("chaosbench_node_memory_failcnt:rate", "mem_fail"),
        ("chaosbench_node_memory_usage_bytes", "mem_usage"),
        ("chaosbench_node_network_transmit_bytes:rate", "net_bytes"),
        ("chaosbench_node_network_receive_drop:rate", "net_drops"),
        ("chaosbench_rank_allreduce_seconds:mean", "allreduce_time"),
        ("vllm:time_to_first_token_seconds:mean", "latency"),
        ("latency", "latency"),
        ("chaosbench_rank_restarts:rate", "restarts"),
        ("up", "scrape_up"),
        ("chaosbench_node_processes", "new_processes"),
        ("chaosbench_node_memory_major_faults:rate", "mem_majfault"),
        ("load1", "host_load"),
        ("chaosbench_node_network_transmit_packets:rate", None),
    ],
)
def test_metric_families_match_testbed_names(metric: str, family: str | None):
    assert family_of(metric, default_kb()) == family


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(KB_PATH.read_text())
    mutate(raw)
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_missing_fault_is_refused(tmp_path: Path):
    path = _write(tmp_path, lambda raw: raw["signatures"].pop("nccl-hang"))
    with pytest.raises(PluginInvalid, match="missing \\['nccl-hang'\\]"):
        load_kb(path)


def test_an_unknown_finding_is_refused(tmp_path: Path):
    path = _write(tmp_path, lambda raw: raw["signatures"]["cpu-throttle"]["requires"].append("cpu_melted"))
    with pytest.raises(PluginInvalid, match="cpu_melted"):
        load_kb(path)


def test_unreadable_kb_is_one_line(tmp_path: Path):
    bad = tmp_path / "kb.yaml"
    bad.write_text("families: [unclosed")
    with pytest.raises(PluginInvalid) as err:
        load_kb(bad)
    assert "\n" not in str(err.value)
