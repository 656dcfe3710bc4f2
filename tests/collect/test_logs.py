from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from chaosbench.collect.logs import export_logs_csv


def _ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S").timestamp()


def test_logs_csv_from_engine_and_ray_logs(tmp_path):
    engine = tmp_path / "engine.jsonl"
    t = _ts("2026-11-22 05:14:40")
    engine.write_text(json.dumps({"time": t + 1, "component": "rank-1", "level": "error",
                                  "message": "NVRM: Xid (PCI:0000:00:00): 79"}) + "\n" + "not json\n")
    node1 = tmp_path / "ray" / "node-1"
    node1.mkdir(parents=True)
    (node1 / "raylet.out").write_text(
        "[2026-11-22 05:14:37,123 I 10477 10477] (raylet) main.cc:1: started\n"
        "[2026-11-22 05:14:41,500 W 10477 10477] (raylet) node_manager.cc:2: worker died\n")
    (node1 / "worker-ab12-01000000-4242.err").write_text(
        "2026-11-22 05:14:42,000\tERROR worker.py:1 -- step failed\n"
        "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: boom\n"
        "2026-11-22 05:14:43,000\tINFO worker.py:2 -- fine\n")
    (node1 / "worker-cd34-01000000-999.err").write_text("2026-11-22 05:14:44,000\tWARNING w.py:1 -- slow\n")
    (node1 / "worker-ef56-01000000-5555.err").write_text("2026-11-22 06:14:44,000\tERROR w.py:1 -- after the end\n")
    n = export_logs_csv(tmp_path / "logs.csv", engine_log=engine, ray_log_dirs={"node-1": node1},
                        pid_rank={4242: "rank-2"}, start=t, end=t + 10)
    df = pd.read_csv(tmp_path / "logs.csv")
    assert n == len(df) == 6
    assert list(df.columns) == ["time", "component", "level", "message"]
    assert df["time"].is_monotonic_increasing
    assert set(df["level"]) == {"WARNING", "ERROR"}, "INFO lines are dropped"
    by = df.groupby("component")["message"].apply(list).to_dict()
    assert by["rank-1"] == ["NVRM: Xid (PCI:0000:00:00): 79"]
    assert "step failed" in by["rank-2"][0] and any("RuntimeError: boom" in m for m in by["rank-2"])
    assert by["node-1"] == ["(raylet) node_manager.cc:2: worker died", "w.py:1 -- slow"]
