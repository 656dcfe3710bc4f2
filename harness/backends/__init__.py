"""Backends: where the system under test runs. Each is one ``Backend`` (chaosbench.backends.base): shipped ones are
listed here, plugins register theirs under the entry-point group ``chaosbench.backends``
(``mine = "my_package.backend:BACKEND"``). Nothing else names a backend."""

from __future__ import annotations

import functools

from chaosbench.backends.base import Backend
from chaosbench.errors import InputInvalid, PluginInvalid
from chaosbench.registry import did_you_mean, installed_plugins

ENTRY_POINT_GROUP = "chaosbench.backends"
SHIPPED = (
    Backend("local", deploy="chaosbench.backends.local:deploy_local", fault_site="local", needs_root=True),
    Backend("k8s", deploy="chaosbench.backends.k8s:deploy_k8s", fault_site="cluster", dry_run="chaosbench.backends.k8s:dry_run",
            recover="chaosbench.backends.k8s.injectors:recover_from_handle"),
)


@functools.cache
def backends() -> dict[str, Backend]:
    """Every backend by name: the shipped ones, then the installed plugins (loaded once)."""
    out = {b.name: b for b in SHIPPED}
    for name, ref, loaded in installed_plugins(ENTRY_POINT_GROUP):
        if not isinstance(loaded, Backend):
            raise PluginInvalid(f"{ref}: must name a chaosbench.backends.base.Backend, not {type(loaded).__name__}")
        if loaded.name != name:
            raise PluginInvalid(f"{ref}: the entry point's name must be the backend's name {loaded.name!r}")
        if loaded.name in out:
            raise PluginInvalid(f"{ref}: backend name {loaded.name!r} is already taken")
        out[loaded.name] = loaded
    return out


def backend(name: str) -> Backend:
    """The backend called ``name`` (unknown names raise InputInvalid with a suggestion)."""
    known = backends()
    if name not in known:
        raise InputInvalid(f"unknown backend {name!r}{did_you_mean(name, list(known))}; known: {', '.join(known)}")
    return known[name]


__all__ = ["ENTRY_POINT_GROUP", "Backend", "backend", "backends"]
