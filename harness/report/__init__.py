"""Results: scores.json, leaderboards, and the self-contained HTML report.

``write_report(results_dir) -> Path`` writes ``results_dir/report.html`` (and annotated Chrome traces under
``results_dir/traces/``) from scores.json.
"""

from chaosbench.report.html import write_report

__all__ = ["write_report"]
