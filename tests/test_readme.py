"""README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re


def readme_commands(repo):
    block = re.search(r"```bash\n(.*?)```", (repo / "README.md").read_text(), re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command(repo):
    setup_and_run, tests = readme_commands(repo)[:2]
    assert "pytest" in tests and "chaosbench run" in setup_and_run
    ci_lines = [line.strip() for line in (repo / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines


def test_readme_main_job_names_a_shipped_suite(repo):
    setup_and_run = readme_commands(repo)[0]
    target = setup_and_run.split("chaosbench run ")[1].split()[0]
    assert (repo / target).is_file()
