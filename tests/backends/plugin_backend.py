"""A backend added as a plugin (issue 16): one module, registered under the entry-point group
``chaosbench.backends`` (``fake = tests.backends.plugin_backend:BACKEND``); its testbed is the fake one of
tests/fixtures/fake_run.py under another name."""

from __future__ import annotations

import sys
from pathlib import Path

from chaosbench.backends.base import Backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

from fake_run import FakeTestbed  # noqa: E402 - the fixtures folder is not a package

BACKEND = Backend("fake", deploy="tests.backends.plugin_backend:deploy", fault_site="cluster")


class PluginTestbed(FakeTestbed):
    backend, reusable = "fake", False


def deploy(scenario, run_dir: Path, **kw) -> PluginTestbed:
    return PluginTestbed(Path(run_dir) / "fake", lambda **rec: None)
