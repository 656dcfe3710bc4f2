"""chaosbench installs under its own name: harness/, detectors/ and baselines/ become chaosbench,
chaosbench.detectors and chaosbench.baselines, and ``import chaosbench`` is the public face."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import chaosbench

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"harness": "chaosbench", "detectors": "chaosbench.detectors", "baselines": "chaosbench.baselines"}


def test_every_package_folder_installs_under_chaosbench():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {name: folder for folder, name in FOLDERS.items()}
    folders = {".".join((FOLDERS[top], *init.parent.relative_to(REPO / top).parts))
               for top in FOLDERS for init in (REPO / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == folders


def test_import_claims_no_top_level_name_but_chaosbench(tmp_path: Path):
    code = ("import sys, chaosbench, chaosbench.detectors.outpost, chaosbench.baselines.trivial\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'harness', 'detectors', 'baselines'}))\n"
            "import importlib.util as u; print(u.find_spec('harness'), u.find_spec('detectors'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "None None"]


def test_public_face_gives_what_a_plugin_needs():
    for name in chaosbench.__all__:
        assert getattr(chaosbench, name) is not None, name
    assert chaosbench.Result.__module__ == "chaosbench.detectors.api"
    assert {"run", "evaluate", "CaseView", "Result", "RankedComponent"} <= set(chaosbench.__all__)
    try:
        chaosbench.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
