"""Turn a case into the inputs RCAEval's methods expect, and their answers back into components.

- metrics: data.csv (``time`` + ``<component>_<metric>``), numeric columns only, gaps filled, constant
  columns dropped (they carry nothing and make the correlation matrices of circa and the PC methods singular).
- multi-source: ``{"metric": metrics, "logts": log counts per component per 15 s, "tracets_err": empty,
  "tracets_lat": empty}``. RCAEval uses trace time series only for its own RE2 datasets. RCAEval-layout cases
  bring their own logts.csv / traces.csv (span table), used as they are.
- spans: one trace per request from load/requests.jsonl. What the load driver measures is the request as the
  ingress serves it, so each trace has a root span ``ingress/request`` (E2E latency) and two children
  ``ingress/prefill`` (time to first token) and ``ingress/decode`` (the rest). No per-rank span exists in the
  request records, so span methods can only ever blame ``ingress``; that is their honest ceiling here.
- graph: the metrics for methods that learn a causal graph or a regression over all series (circa, pc_*, fci_*,
  lingam_*, micro_diag): a run of a few minutes at a 1 s step has fewer samples than series, so their correlation
  matrix is singular (and LassoLarsIC refuses); keep a series only if no series kept before it (data.csv order)
  correlates with it above ``GRAPH_MAX_CORR``.
- granger: the graph input without the series that change value in fewer than ``GRANGER_MIN_CHANGES`` steps
  (step counters, rare spikes, back-filled gaps). RCAEval's granger() runs statsmodels' test on every ordered
  pair and lets the first InfeasibleTestError end the whole method: a series that is constant over a lagged
  window, or a piecewise-constant one that its own lags plus another's fit exactly ("perfect fit"), makes one
  pair infeasible, and on a real case with its ~140 columns there always is one. Such series carry no
  lag structure for a Granger test anyway.
- sli: the ``ingress_latency`` column (mean E2E latency at the ingress), never a series of the root cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chaosbench.errors import CaseInvalid

if TYPE_CHECKING:
    import pandas as pd

    from chaosbench.case import CaseView

SLI_COLUMN = "ingress_latency"
LOG_BUCKET_S = 15
GRAPH_MAX_CORR = 0.95
GRANGER_MIN_CHANGES = 20  # RCAEval tests lags 1..3: 7 regressors, so a series needs far more innovations than that


def split_column(column: str) -> tuple[str, str]:
    """``rank-2_DCGM_FI_DEV_SM_CLOCK`` -> (``rank-2``, ``DCGM_FI_DEV_SM_CLOCK``); components have no ``_``."""
    component, _, metric = column.partition("_")
    return component, metric


def case_components(case: CaseView) -> list[str]:
    """The candidate components of a case: topology's list, else the prefixes of data.csv's columns."""
    try:
        listed = list(case.topology.components)
    except CaseInvalid:
        listed = []
    if listed:
        return listed
    seen: dict[str, None] = {}
    for col in metric_columns(case):
        seen.setdefault(split_column(col)[0], None)
    return list(seen)


def metric_columns(case: CaseView) -> list[str]:
    import pandas as pd

    f = case.path / "data.csv"
    if not f.is_file():
        raise CaseInvalid(f"{f}: missing")
    header = pd.read_csv(f, nrows=0).columns
    return [c for c in header if c != "time"]


def metrics_frame(case: CaseView) -> pd.DataFrame:
    """data.csv, numeric, sorted by time, gaps filled; the inject time must fall inside it."""
    import pandas as pd

    df = case.metrics()
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]  # converting numbers costs 15 ms
    if text:
        df[text] = df[text].apply(pd.to_numeric, errors="coerce")
    df = df.dropna(subset=["time"]).sort_values("time").reset_index(drop=True)
    df = df.dropna(axis=1, how="all").ffill().bfill().fillna(0.0)
    check_inject_time(df, case.inject_time, case.path.name)
    # a constant series carries nothing and makes correlation matrices singular (circa, pc_*)
    distinct = df.nunique()
    constant = [c for c in df.columns if c not in ("time", SLI_COLUMN) and distinct[c] <= 1]
    return df.drop(columns=constant)


def check_inject_time(df: pd.DataFrame, inject_time: float, name: str) -> None:
    if df.empty:
        raise CaseInvalid(f"{name}: data.csv has no rows")
    t0, t1 = float(df["time"].iloc[0]), float(df["time"].iloc[-1])
    if not t0 < inject_time <= t1:
        raise CaseInvalid(f"{name}: inject time {inject_time:.0f} outside the data ({t0:.0f}..{t1:.0f})")


def decorrelated(df: pd.DataFrame, max_corr: float = GRAPH_MAX_CORR) -> pd.DataFrame:
    """``df`` without the series that are near-copies (|r| > max_corr) of an earlier one; ``time`` is kept."""
    import numpy as np

    series = [c for c in df.columns if c != "time"]
    corr = np.nan_to_num(np.abs(np.corrcoef(df[series].to_numpy(dtype=float), rowvar=False)))
    kept: list[int] = []
    for i in range(len(series)):
        if not kept or corr[i, kept].max() <= max_corr:
            kept.append(i)
    return df[["time", *(series[i] for i in kept)]]


def granger_ready(df: pd.DataFrame, min_changes: int = GRANGER_MIN_CHANGES) -> pd.DataFrame:
    """``df`` without the series that change value in fewer than ``min_changes`` steps; ``time`` is kept."""
    import numpy as np

    series = [c for c in df.columns if c != "time"]
    changes = (np.diff(df[series].to_numpy(dtype=float), axis=0) != 0).sum(axis=0)
    return df[["time", *(c for c, n in zip(series, changes) if n >= min_changes)]]


def log_series(case: CaseView, start: float, end: float) -> pd.DataFrame:
    """Log lines per component (``<c>_logs``) and error lines (``<c>_errors``) per 15 s bucket."""
    import pandas as pd

    logs = case.logs()
    edges = list(range(int(start), int(end) + LOG_BUCKET_S, LOG_BUCKET_S))
    out = pd.DataFrame({"time": edges})
    if logs.empty or "component" not in logs:
        return out
    logs = logs[pd.to_numeric(logs["time"], errors="coerce").notna()].copy()
    logs["bucket"] = ((logs["time"].astype(float) - int(start)) // LOG_BUCKET_S * LOG_BUCKET_S + int(start)).astype(int)
    level = logs.get("level", pd.Series("", index=logs.index)).astype(str).str.lower()
    logs["error"] = level.isin(["error", "critical", "fatal", "warning", "warn"])
    for comp, grp in logs.groupby("component"):
        comp = str(comp).replace("_", "-")
        out[f"{comp}_logs"] = out["time"].map(grp.groupby("bucket").size()).fillna(0.0)
        out[f"{comp}_errors"] = out["time"].map(grp.groupby("bucket")["error"].sum()).fillna(0.0)
    return out


def multi_source(case: CaseView) -> dict[str, pd.DataFrame]:
    """RCAEval's multi-source dict; an RCAEval-layout case's own logts.csv is used when present."""
    import pandas as pd

    metric = metrics_frame(case)
    own = case.path / "logts.csv"
    if own.is_file():
        logts = pd.read_csv(own)
    else:
        logts = log_series(case, float(metric["time"].iloc[0]), float(metric["time"].iloc[-1]))
    empty = pd.DataFrame({"time": logts["time"]})
    return {"metric": metric, "logts": logts, "tracets_err": empty, "tracets_lat": empty}


def span_table(case: CaseView) -> pd.DataFrame:
    """RCAEval's span columns (times in microseconds): an RCAEval-layout case's traces.csv as is, else one trace
    per request from the load records."""
    import pandas as pd

    own = case.path / "traces.csv"
    if own.is_file():
        return pd.read_csv(own)
    req = case.requests()
    if req.empty or not {"start", "e2e"} <= set(req.columns):
        raise CaseInvalid(f"{case.case_id}: no load/requests.jsonl with start and e2e")
    req = req.dropna(subset=["start", "e2e"]).reset_index(drop=True)
    ttft = req["ttft"].fillna(req["e2e"]) if "ttft" in req else req["e2e"]
    rows = []
    for i, (start, e2e, first) in enumerate(zip(req["start"], req["e2e"], ttft)):
        s_us, e2e_us, ttft_us = start * 1e6, e2e * 1e6, min(first, e2e) * 1e6
        root = f"r{i}"
        rows.append((root, f"{root}.0", "", "request", s_us, e2e_us))
        rows.append((root, f"{root}.1", f"{root}.0", "prefill", s_us, ttft_us))
        rows.append((root, f"{root}.2", f"{root}.0", "decode", s_us + ttft_us, e2e_us - ttft_us))
    df = pd.DataFrame(rows, columns=["traceID", "spanID", "parentSpanID", "methodName", "startTime", "duration"])
    df["serviceName"] = "ingress"
    df["operationName"] = df["methodName"]
    return df


def sli_column(metrics: pd.DataFrame) -> str:
    if SLI_COLUMN not in metrics.columns:
        raise CaseInvalid(f"no {SLI_COLUMN} column in data.csv (the SLI for this method)")
    return SLI_COLUMN
