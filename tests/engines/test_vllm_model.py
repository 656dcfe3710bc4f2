"""The vllm engine without vLLM: model generator, server command line, scrape targets, faults, traces, logs.

The one test that starts the real server is marked slow and skipped unless ``.venv-vllm`` exists.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosbench.engines.vllm import check_scenario, metrics_targets_for, unsupported_faults
from chaosbench.engines.vllm.server import (
    NODE_EXEC,
    ServerConfig,
    node_command,
    parse_log_line,
    server_argv,
    server_env,
    threads_bind,
    worker_pids,
)
from chaosbench.engines.vllm.traces import convert_new, rank_of
from chaosbench.errors import InputInvalid, PreflightFailed, ScenarioInvalid
from chaosbench.faults.catalog import CATALOG, FAULT_IDS
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
VLLM_SCENARIOS = sorted((REPO / "scenarios" / "vllm").glob("[!_]*.yaml"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    pytest.importorskip("safetensors")
    from chaosbench.engines.vllm.model import make_model

    return make_model(tmp_path_factory.mktemp("model"))


# ----------------------------------------------------------------- model
def test_model_directory_is_a_tiny_llama(model_dir):
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == cfg["head_dim"] == 64
    assert (cfg["vocab_size"], cfg["num_hidden_layers"]) == (512, 2)
    w = load_file(str(model_dir / "model.safetensors"))
    assert w["model.embed_tokens.weight"].shape == (512, 128)
    assert w["model.layers.1.mlp.down_proj.weight"].shape == (128, 256)
    assert not any(k.startswith("model.layers.2.") for k in w)
    head = w["lm_head.weight"]
    assert head[cfg["eos_token_id"]].abs().sum() == 0  # EOS never wins greedy decoding
    assert head[3:].abs().sum(dim=1).min() > 0


def test_tokenizer_is_trained_locally_and_round_trips(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert tok.get_vocab_size() == 512
    assert tok.token_to_id("</s>") == 2 and tok.token_to_id("<s>") == 1
    text = "request token 42 zebu? Ünïcode"
    ids = tok.encode(text).ids
    assert max(ids) < 512
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned, not only bytes
    tcfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tcfg["eos_token"] == "</s>" and tcfg["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_same_seed_same_model(model_dir, tmp_path):
    from chaosbench.engines.vllm.model import make_model

    again = make_model(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (model_dir / "tokenizer.json").read_text()


@pytest.mark.parametrize("kw, match", [({"heads": 8}, "head_dim"), ({"hidden": 100, "heads": 3}, "multiple"),
                                      ({"vocab": 200}, "vocab")])
def test_bad_model_spec_is_refused(tmp_path, kw, match):
    from chaosbench.engines.vllm.model import TinyLlamaSpec, make_model

    with pytest.raises(InputInvalid, match=match):
        make_model(tmp_path / "m", TinyLlamaSpec(**kw))
    assert not (tmp_path / "m").exists()


def test_make_model_cli_bad_heads_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import sys; from chaosbench.cli import main; sys.exit(main())",
                        "make-model", str(tmp_path / "m"), "--heads", "4"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        "error: head_dim = hidden/heads = 32; vLLM's CPU backend needs one of 64, 128"]


# ----------------------------------------------------------------- server command line
def _cfg(**kw) -> ServerConfig:
    base = dict(model_dir="/m", served_name="tiny-llama", host="10.232.1.2", port=8000, tensor_parallel=2,
                max_model_len=512, profile_dir="/run/vllm-profiles", python="/venv/bin/python")
    return ServerConfig(**{**base, **kw})


def test_server_argv_serves_the_scenario_model_with_tp_and_profiler():
    argv = server_argv(_cfg())
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    opts = dict(zip(argv[3::2], argv[4::2]))
    assert opts["--model"] == "/m" and opts["--served-model-name"] == "tiny-llama"
    assert (opts["--host"], opts["--port"], opts["--tensor-parallel-size"]) == ("10.232.1.2", "8000", "2")
    assert opts["--distributed-executor-backend"] == "mp"
    prof = json.loads(opts["--profiler-config"])
    assert prof["profiler"] == "torch" and prof["torch_profiler_dir"] == "/run/vllm-profiles"
    assert prof["ignore_frontend"] is True and prof["max_iterations"] > 0  # bounds the export stall
    assert "--enforce-eager" in argv
    assert "--enforce-eager" not in server_argv(_cfg(enforce_eager=False))


def test_server_env_keeps_the_main_venv_out():
    env = server_env(_cfg(), base={"PATH": "/usr/bin", "PYTHONPATH": "/work/main", "VIRTUAL_ENV": "/x",
                                   "RAY_AUTH_MODE": "disabled", "HOME": "/root"})
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env and "RAY_AUTH_MODE" not in env
    assert env["PATH"] == "/usr/bin" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_HOST_IP"] == "10.232.1.2"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == threads_bind(2, sorted(os.sched_getaffinity(0)))


def test_threads_bind_gives_each_rank_a_core():
    assert threads_bind(2, [0, 1]) == "0|1"
    assert threads_bind(4, [0, 1]) == "0|1|0|1"
    assert threads_bind(1, [3]) == "3"
    assert threads_bind(2, []) == "nobind"


def test_node_command_joins_cgroups_and_netns():
    argv = ["python", "-m", "x"]
    assert node_command(argv, None, []) == argv
    wrapped = node_command(argv, "cbtb-abc-n0", ["/sys/fs/cgroup/cpu/cb/n0", "/sys/fs/cgroup/memory/cb/n0"])
    assert wrapped[:3] == ["sh", str(NODE_EXEC), "cbtb-abc-n0"]
    assert wrapped[wrapped.index("--") + 1:] == argv
    assert NODE_EXEC.is_file()
    assert node_command(argv, None, ["/cg"])[2] == "-"


def test_metrics_target_is_the_server_itself_as_ingress():
    assert metrics_targets_for("10.232.1.2", 8000) == [("ingress", "10.232.1.2:8000")]


def test_rank_exporter_serves_each_worker_process():
    import httpx

    from chaosbench.engines.vllm.rank_exporter import RankExporter

    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<30: pass"])
    exp = RankExporter({"rank-0": os.getpid(), "rank-1": busy.pid}).start()
    try:
        targets = dict(exp.targets())
        assert sorted(targets) == ["rank-0", "rank-1"] and len(set(targets.values())) == 2
        first = _scrape(httpx, targets["rank-1"])
        time.sleep(1.0)
        second = _scrape(httpx, targets["rank-1"])
        assert second["chaosbench_rank_cpu_seconds_total"] > first["chaosbench_rank_cpu_seconds_total"]
        assert _scrape(httpx, targets["rank-0"])["chaosbench_rank_resident_memory_bytes"] > 1e6
        busy.kill()
        busy.wait()
        assert _scrape(httpx, targets["rank-1"]) == {}  # process gone: no samples, target still up
        assert httpx.get(f"http://{targets['rank-0']}/nope", timeout=5).status_code == 404
    finally:
        busy.kill()
        exp.stop()


def _scrape(httpx, addr: str) -> dict[str, float]:
    text = httpx.get(f"http://{addr}/metrics", timeout=5).text
    return {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


# ----------------------------------------------------------------- faults and scenarios
def test_emulated_gpu_faults_are_refused_with_a_reason():
    reasons = unsupported_faults("vllm")
    emulated = {s.id for s in CATALOG if s.local_realism == "emulated"}
    assert emulated <= set(reasons) <= set(FAULT_IDS)
    for fid in emulated:
        assert reasons[fid].startswith(f"{fid}: ") and "mini engine" in reasons[fid] and "\n" not in reasons[fid]
    assert {"cpu-contention", "network-delay", "nccl-hang", "cpu-throttle"}.isdisjoint(reasons)
    assert unsupported_faults("mini") == {} and unsupported_faults("vllm", backend="k8s") == {}


def test_shipped_vllm_scenarios_pass_the_engine_check():
    assert {p.stem for p in VLLM_SCENARIOS} >= {"clean", "cpu-contention", "network-delay"}
    for path in VLLM_SCENARIOS:
        sc = load_scenario(path)
        assert sc.spec.deployment.engine == "vllm"
        check_scenario(sc)


def test_scenario_with_an_emulated_fault_or_two_nodes_is_refused():
    # an emulated GPU fault is refused as early as validation; two nodes only at preflight
    with pytest.raises(ScenarioInvalid, match="gpu-power-cap: emulated GPU fault"):
        load_scenario(REPO / "scenarios" / "gpu-power-cap.yaml",
                      overrides={"deployment": {"engine": "vllm", "topology": {"nodes": 1}}})
    sc = load_scenario(REPO / "scenarios" / "clean.yaml", overrides={"deployment": {"engine": "vllm"}})
    with pytest.raises(PreflightFailed, match="topology.nodes is 2"):
        check_scenario(sc)


# ----------------------------------------------------------------- traces
def _kineto(path: Path, base_ns: int, pid: int) -> None:
    doc = {"schemaVersion": 1, "baseTimeNanoseconds": base_ns, "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "python"}},
        {"ph": "X", "name": "execute_model", "cat": "user_annotation", "pid": pid, "tid": 1, "ts": 100.0, "dur": 50.0},
        {"ph": "X", "name": "aten::mm", "cat": "cpu_op", "pid": pid, "tid": 1, "ts": 110.0, "dur": 10.0}]}
    with gzip.open(path, "wt") as fh:
        json.dump(doc, fh)


def test_rank_of_vllm_trace_names():
    assert rank_of("dp0_pp0_tp1_dcp0_ep0_rank1.1763790000000000000.pt.trace.json.gz") == 1
    assert rank_of("dp0_pp0_tp0_dcp0_ep0_rank0.1.pt.trace.json.gz") == 0
    assert rank_of("myhost-tp9.1.pt.trace.json.gz") == 0  # a host name is not a rank


def test_worker_traces_become_epoch_rank_files(tmp_path):
    prof, out = tmp_path / "prof", tmp_path / "traces"
    prof.mkdir()
    base = 1_763_790_000_000_000_000
    _kineto(prof / "dp0_pp0_tp1_dcp0_ep0_rank1.1.pt.trace.json.gz", base, pid=77)
    _kineto(prof / "host_5.async_llm.1.pt.trace.json.gz", base, pid=5)  # the front end: skipped
    done: set[str] = set()
    written = convert_new(prof, out, done)
    assert [p.name for p in written] == ["rank-1.json.gz"]
    assert [p.name for p in out.iterdir()] == ["rank-1.json.gz"]  # no temporary file where collectors look
    doc = json.loads(gzip.decompress((out / "rank-1.json.gz").read_bytes()))
    mm = next(e for e in doc["traceEvents"] if e["name"] == "aten::mm")
    assert mm["ts"] == pytest.approx(base / 1000 + 110.0)
    names = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"]
    assert names == ["rank-1"]
    assert doc["chaosbench"]["windows"][0][0] == pytest.approx(base / 1e9 + 100e-6)
    _kineto(prof / "dp0_pp0_tp1_dcp0_ep0_rank1.2.pt.trace.json.gz", base + 10**9, pid=77)
    assert convert_new(prof, out, done) == [out / "rank-1.json.gz"]  # second window merged, first not again
    doc = json.loads(gzip.decompress((out / "rank-1.json.gz").read_bytes()))
    assert len(doc["chaosbench"]["windows"]) == 2
    assert sum(e["name"] == "aten::mm" for e in doc["traceEvents"]) == 2


# ----------------------------------------------------------------- logs and workers
def test_parse_log_line_maps_workers_to_ranks():
    assert parse_log_line("(Worker_TP1 pid=123) WARNING 11-22 05:27:59 [x.py:1] slow") == ("WARNING", "rank-1",
                                                                                           "[x.py:1] slow")
    assert parse_log_line("(APIServer pid=9) ERROR 11-22 05:27:59 [a.py:2] boom") == ("ERROR", None, "[a.py:2] boom")
    assert parse_log_line("INFO 11-22 05:27:59.123 [a.py:2] up") == ("INFO", None, "[a.py:2] up")
    assert parse_log_line("Traceback (most recent call last):") is None


def test_worker_pids_by_process_title():
    script = "exec -a VLLM::EngineCore bash -c '(exec -a VLLM::Worker_TP1 sleep 30) & (exec -a VLLM::Worker_TP0 sleep 30) & wait'"
    proc = subprocess.Popen(["bash", "-c", f"bash -c \"{script}\" & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        pids: dict[str, int] = {}
        while time.monotonic() < deadline and len(pids) < 2:
            pids = worker_pids(proc.pid, 2)
            time.sleep(0.1)
        assert list(pids) == ["rank-0", "rank-1"]
        assert len(set(pids.values())) == 2 and proc.pid not in pids.values()
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


# ----------------------------------------------------------------- the real server (opt-in)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / ".venv-vllm" / "bin" / "python").is_file(), reason="no .venv-vllm (opt-in)")
def test_real_vllm_serves_metrics_and_traces(tmp_path):
    import httpx

    from chaosbench.engines.vllm import deploy

    sc = load_scenario(REPO / "scenarios" / "vllm" / "clean.yaml")
    port = _free_port()
    handle = deploy("", sc, tmp_path, trace_dir=tmp_path / "traces", control_dir=tmp_path / "control",
                    node_ips={"node-0": "127.0.0.1"}, http_host="127.0.0.1", http_port=port, gloo_ifname=None)
    try:
        pids = handle.rank_pids()
        assert sorted(pids) == ["rank-0", "rank-1"]
        httpx.post(f"{handle.api_url}/start_profile", timeout=120).raise_for_status()
        body = {"model": "tiny-llama", "prompt": "hello world", "max_tokens": 8, "temperature": 0.0}
        r = httpx.post(f"{handle.api_url}/v1/completions", json=body, timeout=120)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8
        httpx.post(f"{handle.api_url}/stop_profile", timeout=600).raise_for_status()
        assert [c for c, _ in handle.metrics_targets] == ["ingress", "rank-0", "rank-1"]
        metrics = httpx.get(f"http://{handle.metrics_targets[0][1]}/metrics", timeout=10).text
        assert "vllm:time_to_first_token_seconds_bucket" in metrics
        assert "vllm:request_success_total" in metrics
    finally:
        handle.shutdown()
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["rank-0.json.gz", "rank-1.json.gz"]
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
