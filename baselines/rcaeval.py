"""Adapters that call the RCAEval package (pip ``RCAEval`` 1.8.1, MIT) through the detector contract.

Each method is imported from its own module (``RCAEval.e2e.baro:baro``: on Python 3.11 ``RCAEval.e2e`` itself
exports only rcd/mmrcd/torai) and always called with ``dataset=`` (else the ``time`` column is ranked too).
RCAEval's ``@rca`` wrapper turns any exception into ``"<name> failed"`` on stderr plus the input column order
as a "ranking"; several methods also return the input order when their causal graph comes out empty. Both are
reported here as failures, never scored as answers.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from chaosbench.baselines.inputs import (
    decorrelated,
    granger_ready,
    metrics_frame,
    multi_source,
    sli_column,
    span_table,
    split_column,
)
from chaosbench.detectors.api import RankedComponent, Result
from chaosbench.errors import CaseInvalid
from chaosbench.registry import Registry, import_ref

if TYPE_CHECKING:
    from chaosbench.case import CaseView

Need = Literal["metrics", "multi-source", "spans", "sli", "graph", "granger"]
DATASET = "chaosbench"  # any name outside RCAEval's special cases: generic preprocessing


@dataclass(frozen=True)
class RCAEvalMethod:
    name: str
    ref: str  # "module:function" inside RCAEval
    needs: frozenset[str]
    speed: Literal["fast", "slow"] = "fast"
    broken: str | None = None  # why it cannot run as installed (checked, see MACHINE-NOTES.md)

    @property
    def function(self) -> str:
        return self.ref.partition(":")[2]


def _m(name: str, module: str, needs: tuple[Need, ...] = ("metrics",), speed: str = "fast",
       broken: str | None = None, func: str | None = None) -> RCAEvalMethod:
    return RCAEvalMethod(name, f"RCAEval.e2e{module}:{func or name}", frozenset(needs), speed, broken)  # type: ignore[arg-type]


_CAUSAL_LEARN_PATCHED = ("needs causal-learn 0.1.2.3 with files patched by the RCAEval repository; no maintained "
                         "release provides them and the patched copy breaks the other methods under numpy 2")
_PYRCA = ("needs Salesforce PyRCA (pip 'sfr-pyrca' 1.0.1, module 'pyrca'), whose source distribution does not build "
          "on Python 3.11 here")
METHODS: tuple[RCAEvalMethod, ...] = (
    _m("baro", ".baro"),
    _m("nsigma", ""),
    _m("circa", ".circa", ("metrics", "graph")),
    _m("mmbaro", ".baro", ("multi-source",)),
    _m("mmnsigma", ".baro", ("multi-source",)),
    _m("mmcirca", ".circa", ("multi-source",)),
    _m("tracerca", ".tracerca", ("spans",)),
    _m("microrank", ".microrank", ("spans",)),
    _m("pc_pagerank", ".pc_pagerank", ("metrics", "graph")),
    _m("pc_randomwalk", ".pc_randomwalk", ("metrics", "graph")),
    _m("fci_pagerank", ".fci_pagerank", ("metrics", "graph")),
    _m("fci_randomwalk", ".pc_randomwalk", ("metrics", "graph"),
       broken="RCAEval's random_walk knows only the edge marks -1/0/1 of PC and LiNGAM graphs; causal-learn's FCI "
              "marks circle endpoints with 2, so it raises 'Unexpected value: 1, 2' on every case (fci_pagerank "
              "reads the same graph and runs)"),
    _m("lingam_pagerank", ".lingam_pagerank", ("metrics", "graph")),
    _m("lingam_randomwalk", ".pc_randomwalk", ("metrics", "graph")),
    # Granger tests every ordered pair of series (k(k-1) statsmodels tests, ~5 ms each): ~5 s per case on the
    # ~30 series left of a real case, so slow
    _m("granger_pagerank", ".granger_pagerank", ("metrics", "graph", "granger"), speed="slow"),
    _m("granger_randomwalk", ".pc_randomwalk", ("metrics", "graph", "granger"), speed="slow"),
    _m("cloudranger", ".cloudranger", ("metrics", "sli")),
    _m("micro_diag", ".lingam_pagerank", ("metrics", "graph")),
    _m("ges_pagerank", ".ges_pagerank", speed="slow"),
    _m("mscred", ".mscred", speed="slow"),
    _m("causalrca", ".causalrca", speed="slow"),
    _m("cmlp_pagerank", ".pc_pagerank", speed="slow"),
    _m("ntlr_pagerank", ".pc_pagerank", speed="slow"),
    _m("ntlr_randomwalk", ".pc_randomwalk", speed="slow"),
    _m("rcd", ".rcd", broken=_CAUSAL_LEARN_PATCHED),
    _m("mmrcd", ".mmrcd", ("multi-source",), broken=_CAUSAL_LEARN_PATCHED),
    _m("torai", ".torai", ("multi-source",), broken=_CAUSAL_LEARN_PATCHED),
    _m("microcause", ".microcause", ("metrics", "sli"), speed="slow",
       broken="calls tigramite's return_significant_links, which returns None since tigramite 5 (TypeError on "
              "every case); tigramite 4.2 does not build here"),
    _m("easyrca", ".easyrca", ("metrics", "sli"), speed="slow"),
    _m("e_diagnosis", "", broken=_PYRCA),
    _m("ht", "", broken=_PYRCA),
    _m("causalai", ".causalai", broken="needs Salesforce CausalAI (package 'causalai'), which is not on PyPI"),
    _m("run", ".run", broken="reads its options from a module-level 'args' that is None when called as a library "
                             "(AttributeError: 'NoneType' object has no attribute 'cuda')"),
    _m("pdiagnose", ".pdiagnose", broken="RCAEval 1.8.1's module defines no 'pdiagnose' function"),
)

REGISTRY: Registry[RCAEvalMethod] = Registry("RCAEval method")
for _spec in METHODS:
    REGISTRY.register(_spec.name, _spec)


class RCAEvalFailed(RuntimeError):
    """The method failed inside RCAEval (its wrapper hid it) or gave a degenerate answer."""


def status(name: str) -> tuple[bool, str]:
    """(available, reason): importable and not known broken."""
    spec = REGISTRY.get(name)
    if spec.broken:
        return False, spec.broken
    try:
        fn = import_ref(spec.ref)
    except Exception as exc:  # noqa: BLE001 - PluginInvalid carries the import error
        return False, str(exc)
    if not callable(fn):
        return False, f"{spec.ref} is not callable"
    return True, "ok"


def _inputs(spec: RCAEvalMethod, case: CaseView) -> tuple[object, float, dict[str, object]]:
    if "spans" in spec.needs:
        return span_table(case), case.inject_time * 1e6, {}  # span times are microseconds
    if "multi-source" in spec.needs:
        return multi_source(case), case.inject_time, {}
    df = metrics_frame(case)
    if "graph" in spec.needs:
        df = decorrelated(df)
    if "granger" in spec.needs:
        df = granger_ready(df)
        if len(df.columns) < 3:
            raise CaseInvalid(f"{case.case_id}: fewer than 2 series change often enough for a Granger test")
    extra: dict[str, object] = {"sli": sli_column(df)} if "sli" in spec.needs else {}
    return df, case.inject_time, extra


def _input_order(data: object) -> list[str]:
    frame = data["metric"] if isinstance(data, dict) else data  # type: ignore[index]
    return [c for c in frame.columns if c != "time"]  # type: ignore[union-attr]


def _names(ranks: list[object]) -> list[str]:
    """Ranked names; ges_pagerank returns unsorted (name, score) pairs, so sort those by score."""
    if ranks and all(isinstance(r, (tuple, list)) and len(r) == 2 for r in ranks):
        return [str(n) for n, _ in sorted(ranks, key=lambda r: float(r[1]), reverse=True)]  # type: ignore[index]
    return [str(r) for r in ranks]


def call(spec: RCAEvalMethod, case: CaseView) -> tuple[list[str], str]:
    """Run one RCAEval method on a case: (ranked names, captured stderr)."""
    fn = import_ref(spec.ref)
    data, inject_time, extra = _inputs(spec, case)
    order = _input_order(data) if "spans" not in spec.needs else []
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        out = fn(data, inject_time, dataset=DATASET, **extra)  # type: ignore[operator]
    stderr = err.getvalue()
    ranks = _names((out or {}).get("ranks", []))
    marker = f"{spec.function} failed"  # the wrapper prints the inner function's name
    if marker in stderr:
        line = next(ln for ln in stderr.splitlines() if marker in ln)
        raise RCAEvalFailed(f"RCAEval fallback: {line.strip()}")
    if len(order) >= 4 and ranks == [c for c in order if c in set(ranks)] and len(ranks) == len(order):
        raise RCAEvalFailed("degenerate answer: the input column order (empty causal graph)")
    return ranks, stderr


def to_ranking(ranks: list[str]) -> tuple[RankedComponent, ...]:
    n = len(ranks)
    return tuple(RankedComponent(component=split_column(r)[0], score=float(n - i), metric=r)
                 for i, r in enumerate(ranks))


def make_detector(name: str):
    """A ``detect(case) -> Result`` for one RCAEval method."""
    spec = REGISTRY.get(name)

    def detect(case: CaseView) -> Result:
        if spec.broken:
            return Result.failure(name, spec.broken, status="unavailable")
        ranks, stderr = call(spec, case)
        extra: dict[str, object] = {"stderr_tail": stderr[-500:]} if stderr.strip() else {}
        if not ranks:
            extra["note"] = "empty ranking: the method found nothing to blame (a miss on a faulty case)"
        return Result(method=name, ranking=to_ranking(ranks), extra=extra)

    detect.__name__ = f"rcaeval_{name}"
    return detect
