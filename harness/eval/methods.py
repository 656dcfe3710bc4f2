"""The method catalogue: every RCA method the evaluation can run, with what it is and whether it can run here.

Kinds: ``trivial`` (random, constant), ``kat`` (our Outpost and Analyzer), ``rcaeval`` (RCAEval adapters),
``plugin`` (entry point group ``chaosbench.detectors`` or a ``module:function`` given by the user). Listing the
catalogue imports nothing heavy; ``status()`` imports the method to check it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal

from chaosbench.detectors.api import Detector
from chaosbench.errors import InputInvalid, PluginInvalid
from chaosbench.registry import did_you_mean, import_ref

Kind = Literal["trivial", "kat", "rcaeval", "plugin"]
ENTRY_POINT_GROUP = "chaosbench.detectors"
GROUPS = ("fast", "all", "slow", "trivial", "kat", "rcaeval")


@dataclass(frozen=True)
class Method:
    name: str
    kind: Kind
    ref: str  # what is imported: "module:function"
    speed: Literal["fast", "slow"] = "fast"
    needs: tuple[str, ...] = ("metrics",)
    ranks_metrics: bool = False  # its ranking names metric columns (metric-level scores apply)

    def status(self) -> tuple[bool, str]:
        if self.kind == "rcaeval":
            from chaosbench.baselines import rcaeval

            return rcaeval.status(self.name)
        try:
            validate_detector(self.ref, import_ref(self.ref))
        except PluginInvalid as exc:
            return False, str(exc)
        return True, "ok"

    def make(self) -> Detector:
        if self.kind == "rcaeval":
            from chaosbench.baselines import rcaeval

            return rcaeval.make_detector(self.name)
        return validate_detector(self.ref, import_ref(self.ref))


def validate_detector(ref: str, obj: object) -> Detector:
    """The contract check at load time: callable, and its signature binds with exactly one argument."""
    if not callable(obj):
        raise PluginInvalid(f"{ref}: not callable ({type(obj).__name__})")
    try:
        inspect.signature(obj).bind(object())
    except TypeError as exc:
        raise PluginInvalid(f"{ref}: signature does not bind one argument (detect(case) -> Result): {exc}") from exc
    except ValueError:
        pass  # builtins without a signature: let the call decide
    return obj  # type: ignore[return-value]


def _builtin() -> dict[str, Method]:
    from chaosbench.baselines.rcaeval import METHODS

    out = {
        "random": Method("random", "trivial", "chaosbench.baselines.trivial:random_ranking", needs=()),
        "constant": Method("constant", "trivial", "chaosbench.baselines.trivial:constant_ranking", needs=()),
        "outpost": Method("outpost", "kat", "chaosbench.detectors.outpost:detect", needs=("traces",)),
        "analyzer": Method("analyzer", "kat", "chaosbench.detectors.analyzer:detect", needs=("traces", "metrics", "logs")),
    }
    for m in METHODS:
        out[m.name] = Method(m.name, "rcaeval", m.ref, m.speed, tuple(sorted(m.needs)),
                             ranks_metrics="spans" not in m.needs)
    return out


def _entry_point_methods() -> dict[str, Method]:
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out[ep.name] = Method(ep.name, "plugin", ep.value, needs=())
    return out


def catalogue() -> dict[str, Method]:
    """Built-in methods, then installed entry-point plugins (a plugin cannot shadow a built-in)."""
    methods = _builtin()
    for name, m in _entry_point_methods().items():
        methods.setdefault(name, m)
    return methods


def _plugin(spec: str) -> Method:
    """``name=module:function`` or ``module:function`` (named ``module:function``: two plugins called ``detect``
    in different modules stay apart)."""
    name, _, ref = spec.rpartition("=") if "=" in spec else ("", "", spec)
    name = name or ref
    if "/" in name or name.startswith("."):
        raise InputInvalid(f"{spec}: a method name may not contain '/' or start with '.'")
    validate_detector(ref, import_ref(ref))
    return Method(name, "plugin", ref, needs=())


def select(requested: list[str] | None) -> list[Method]:
    """Resolve names, groups (fast, all, slow, trivial, kat, rcaeval) and plugin refs, in order, without repeats.

    The default is ``fast``: every fast method, including those unavailable here (listed with their reason).
    """
    cat = catalogue()
    chosen: dict[str, Method] = {}
    for item in requested or ["fast"]:
        for part in filter(None, (p.strip() for p in item.split(","))):
            for m in _resolve(part, cat):
                chosen.setdefault(m.name, m)
    for must in ("random", "constant"):  # trivial baselines are always reported
        chosen.setdefault(must, cat[must])
    return list(chosen.values())


def _resolve(part: str, cat: dict[str, Method]) -> list[Method]:
    if part in cat:
        return [cat[part]]
    if ":" in part:
        return [_plugin(part)]
    groups: dict[str, Callable[[Method], bool]] = {
        "fast": lambda m: m.speed == "fast",
        "all": lambda m: True,
        "slow": lambda m: m.speed == "slow",
        "trivial": lambda m: m.kind == "trivial",
        "kat": lambda m: m.kind == "kat",
        "rcaeval": lambda m: m.kind == "rcaeval",
    }
    if part in groups:
        return [m for m in cat.values() if groups[part](m)]
    known = sorted([*cat, *GROUPS])
    raise InputInvalid(f"unknown method {part!r}{did_you_mean(part, known)}; see `chaosbench methods`")
