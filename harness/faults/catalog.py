"""The fault catalog: every fault module, shipped or installed as a plugin, by fault id.

A fault is one module (``harness/faults/<id with _>.py``, or a plugin's) holding its ``SPEC`` (``FaultSpec``:
parameters, target kind, realism, sampling, key metrics, root, verify signal), its local mechanism (``preflight``,
``prepare``, ``inject``, ``verify``, ``recover``: see ``chaosbench.faults.base``) and its cluster action (``cluster``:
see ``chaosbench.backends.k8s.faults``). Plugins register a module under the entry-point group ``chaosbench.faults``,
named by the fault id (``my-fault = my_package.my_fault``); the contract is checked when the catalog loads and a
broken plugin fails with PluginInvalid naming it.

``CATALOG``, ``FAULTS``, ``FAULT_IDS`` and ``SAMPLING`` are the faults chaosbench ships (FAULTS.md);
``fault_module``, ``get_fault`` and ``fault_specs`` also see the installed plugins.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from types import ModuleType
from typing import TYPE_CHECKING

from chaosbench.errors import InputInvalid, PluginInvalid
from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling  # noqa: F401 - re-exported
from chaosbench.registry import did_you_mean, installed_plugins

if TYPE_CHECKING:
    from chaosbench.faults.base import FaultModule

ENTRY_POINT_GROUP = "chaosbench.faults"
# The shipped fault modules, in catalog order (FAULTS.md); each module's SPEC.id is its fault id.
SHIPPED_MODULES = (
    "gpu_power_cap", "gpu_clock_lock", "gpu_compute_contention", "gpu_memory_pressure", "gpu_xid_error", "nccl_hang",
    "interconnect_degradation", "cpu_contention", "cpu_throttle", "host_memory_pressure", "network_delay",
)
# name -> number of leading positional arguments the call passes (a module's function must bind them)
CONTRACT = {"preflight": 2, "prepare": 3, "inject": 2, "verify": 2, "recover": 1, "cluster": 2}


def check_fault_module(ref: str, module: object) -> FaultModule:
    """The contract check at load time: a ``SPEC = FaultSpec(...)`` and the six functions, each binding the
    arguments chaosbench passes it."""
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, FaultSpec):
        raise PluginInvalid(f"{ref}: no SPEC = FaultSpec(...) (chaosbench.faults.spec)")
    for name, n_args in CONTRACT.items():
        fn = getattr(module, name, None)
        if not callable(fn):
            raise PluginInvalid(f"{ref} ({spec.id}): no function {name}()")
        try:
            inspect.signature(fn).bind(*range(n_args))
        except TypeError as exc:
            raise PluginInvalid(f"{ref} ({spec.id}): {name}() does not take {n_args} arguments: {exc}") from exc
    return module  # type: ignore[return-value]


def _shipped() -> dict[str, FaultModule]:
    out: dict[str, FaultModule] = {}
    for name in SHIPPED_MODULES:
        ref = f"chaosbench.faults.{name}"
        module = check_fault_module(ref, importlib.import_module(ref))
        out[module.SPEC.id] = module
    return out


def _plugins(known: dict[str, FaultModule]) -> dict[str, FaultModule]:
    out: dict[str, FaultModule] = {}
    for name, ref, loaded in installed_plugins(ENTRY_POINT_GROUP):
        if not isinstance(loaded, ModuleType):
            raise PluginInvalid(f"{ref}: must name a module (package.module), not {type(loaded).__name__}")
        module = check_fault_module(ref, loaded)
        fid = module.SPEC.id
        if fid != name:
            raise PluginInvalid(f"{ref}: the entry point's name must be the fault id {fid!r}")
        if fid in known or fid in out:
            raise PluginInvalid(f"{ref}: fault id {fid!r} is already taken")
        out[fid] = module
    return out


_SHIPPED = _shipped()
CATALOG: tuple[FaultSpec, ...] = tuple(m.SPEC for m in _SHIPPED.values())
FAULTS: dict[str, FaultSpec] = {spec.id: spec for spec in CATALOG}
FAULT_IDS: tuple[str, ...] = tuple(FAULTS)
SAMPLING: dict[str, Sampling] = {spec.id: spec.sampling for spec in CATALOG}


@functools.cache
def fault_modules() -> dict[str, FaultModule]:
    """Every fault module by id: the shipped ones, then the installed plugins (loaded once)."""
    return {**_SHIPPED, **_plugins(_SHIPPED)}


def fault_module(fault_id: str) -> FaultModule:
    """The module of ``fault_id`` (unknown ids raise InputInvalid with a suggestion)."""
    modules = fault_modules()
    if fault_id not in modules:
        raise InputInvalid(f"unknown fault id {fault_id!r}{did_you_mean(fault_id, list(modules))}")
    return modules[fault_id]


def get_fault(fault_id: str) -> FaultSpec:
    return fault_module(fault_id).SPEC


def fault_specs() -> tuple[FaultSpec, ...]:
    """The specs of every fault, shipped then plugins."""
    return tuple(m.SPEC for m in fault_modules().values())
