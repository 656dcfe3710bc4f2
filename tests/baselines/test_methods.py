"""The method catalogue: groups, plugins by entry point or module:function, contract checks at load time."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from chaosbench.errors import PluginInvalid
from chaosbench.eval import methods as cat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # eval_fixtures


def test_default_is_fast_and_always_has_trivial_baselines():
    names = [m.name for m in cat.select(None)]
    assert names[:2] == ["random", "constant"]
    assert {"baro", "tracerca", "microrank", "outpost", "analyzer"} <= set(names)
    assert not {"causalrca", "mscred", "granger_pagerank", "granger_randomwalk"} & set(names)  # slow: opt-in
    assert {m.name for m in cat.select(["baro"])} == {"baro", "random", "constant"}
    assert {"causalrca", "granger_pagerank"} <= {m.name for m in cat.select(["slow"])}


def test_module_function_plugin_is_checked_at_load_time():
    (m,) = [m for m in cat.select(["mine=eval_fixtures:raising"]) if m.kind == "plugin"]
    assert m.name == "mine" and m.status() == (True, "ok")
    with pytest.raises(PluginInvalid, match="eval_fixtures:two_args: signature does not bind"):
        cat.select(["eval_fixtures:two_args"])


def test_entry_point_plugins(monkeypatch):
    eps = [EntryPoint("epdet", "eval_fixtures:flags_everything", cat.ENTRY_POINT_GROUP),
           EntryPoint("baro", "eval_fixtures:raising", cat.ENTRY_POINT_GROUP),  # cannot shadow a built-in
           EntryPoint("broken", "no_such_module:detect", cat.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(cat, "entry_points", lambda group: eps if group == cat.ENTRY_POINT_GROUP else [])
    catalogue = cat.catalogue()
    assert catalogue["epdet"].kind == "plugin" and catalogue["baro"].kind == "rcaeval"
    ok, why = catalogue["broken"].status()
    assert not ok and "no_such_module" in why


def test_preload_imports_what_the_tasks_call():
    """Forked tasks start warm: RCAEval's module is imported by preload, not once per task."""
    import subprocess

    code = ("import sys, gc; from chaosbench.eval.methods import select; from chaosbench.eval.fanout import preload; "
            "preload([m for m in select(['baro']) if m.name == 'baro']); "
            "print('RCAEval.e2e.baro' in sys.modules, gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
