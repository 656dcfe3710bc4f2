"""The injector set matches the catalog; every module has the interface; the journal skips live owners."""

from __future__ import annotations

import json
import os
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import chaosbench.faults
from chaosbench.errors import InputInvalid, PluginInvalid
from chaosbench.faults.base import injector
from chaosbench.faults.catalog import FAULT_IDS, FAULTS, check_fault_module
from chaosbench.faults.journal import Journal, recovery_dir, replay_fault_journals

FRAMEWORK = {"catalog", "spec", "base", "lifecycle", "journal", "targets", "mech"}


def test_fault_modules_equal_catalog_ids() -> None:
    modules = {m.name for m in pkgutil.iter_modules(chaosbench.faults.__path__)} - FRAMEWORK
    assert modules == {fid.replace("-", "_") for fid in FAULT_IDS}


@pytest.mark.parametrize("fault_id", FAULT_IDS)
def test_module_interface(fault_id: str) -> None:
    mod = injector(fault_id)
    assert mod.__name__ == "chaosbench.faults." + fault_id.replace("-", "_")  # one fault, one module, named by its id
    assert mod.SPEC is FAULTS[fault_id]
    for fn in ("preflight", "prepare", "inject", "verify", "recover", "cluster"):
        assert callable(getattr(mod, fn)), f"{fault_id} has no {fn}()"


def test_contract_is_checked_when_a_module_loads() -> None:
    mod = injector("nccl-hang")
    fake = SimpleNamespace(**{name: getattr(mod, name) for name in dir(mod) if not name.startswith("__")})
    assert check_fault_module("x", fake) is fake
    fake.cluster = lambda step: {}  # one argument short
    with pytest.raises(PluginInvalid, match=r"x \(nccl-hang\): cluster\(\) does not take 2 arguments"):
        check_fault_module("x", fake)
    del fake.recover
    with pytest.raises(PluginInvalid, match="no function recover"):
        check_fault_module("x", fake)
    with pytest.raises(PluginInvalid, match="no SPEC"):
        check_fault_module("x", SimpleNamespace())


def test_unknown_fault_id_suggests() -> None:
    with pytest.raises(InputInvalid, match="did you mean 'nccl-hang'"):
        injector("nccl-hnag")


def test_recovery_dir_from_env() -> None:
    assert recovery_dir() == Path(os.environ["CHAOSBENCH_RECOVERY_DIR"])


def _journal_device_fault(tmp_path: Path) -> tuple[Journal, Path]:
    control = tmp_path / "device" / "rank-0.json"
    control.parent.mkdir()
    control.write_text(json.dumps({"power_limit_w": 150, "seq": 3}))
    handle = {"fault_id": "gpu-power-cap", "key": "t.0.gpu-power-cap.x", "component": "rank-0",
              "control_file": str(control), "fields": {"power_limit_w": 150}, "previous": {"power_limit_w": None}}
    journal = Journal(handle["key"], tmp_path / "case.partial")
    journal.begin(handle)
    return journal, control


def test_replay_leaves_live_owner_alone_then_recovers(tmp_path: Path) -> None:
    journal, control = _journal_device_fault(tmp_path)
    assert replay_fault_journals(tmp_path) == 0  # this process owns it and is alive
    assert json.loads(control.read_text())["power_limit_w"] == 150
    assert replay_fault_journals(tmp_path, include_live=True) == 1
    state = json.loads(control.read_text())
    assert "power_limit_w" not in state and state["seq"] == 4  # a new seq: the engine re-reads the file
    assert not list(recovery_dir().glob("*.jsonl"))  # global entry gone once done
    assert replay_fault_journals(tmp_path, include_live=True) == 0


def test_replay_survives_torn_line_and_dead_owner(tmp_path: Path) -> None:
    journal, control = _journal_device_fault(tmp_path)
    for path in journal.paths:
        text = path.read_text().replace(f'"owner_pid": {os.getpid()}', '"owner_pid": 999999999')
        path.write_text(text + '{"op": "hand')  # a crash in the middle of a write
    assert replay_fault_journals(tmp_path) == 1
    assert "power_limit_w" not in json.loads(control.read_text())


def test_the_xid_is_dated_by_its_log_line_not_by_the_scrape(tmp_path):
    import json as _json
    from types import SimpleNamespace

    from chaosbench.faults.gpu_xid_error import _xid_line_time

    (tmp_path / "logs").mkdir()
    lines = [{"time": 100.0, "component": "rank-2", "level": "error", "message": "NVRM: Xid (PCI:0000:03:00): 79, old"},
             {"time": 205.5, "component": "rank-1", "level": "error", "message": "NVRM: Xid (PCI:0000:02:00): 79, x"},
             {"time": 206.25, "component": "rank-2", "level": "error", "message": "NVRM: Xid (PCI:0000:03:00): 79, y"}]
    (tmp_path / "logs" / "engine.jsonl").write_text("\n".join(map(_json.dumps, lines)) + "\n{\"time\": 2")  # torn tail
    bed = SimpleNamespace(run_dir=tmp_path)
    assert _xid_line_time(bed, "rank-2", 79, since=200.0) == 206.25
    assert _xid_line_time(bed, "rank-2", 48, since=200.0) is None
    assert _xid_line_time(SimpleNamespace(run_dir=tmp_path / "none"), "rank-2", 79, since=0.0) is None
