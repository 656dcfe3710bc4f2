"""One root error type; each subclass maps to a process exit code.

The CLI prints ``error: <message>`` in one line and exits with ``exit_code``; the
traceback is only shown with ``--debug`` (the run journal always keeps it).
"""

from __future__ import annotations


class ChaosbenchError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 1


class InputInvalid(ChaosbenchError):
    """Bad user input: a file that cannot be read or parsed, an unknown id, a bad option."""

    exit_code = 2


class ScenarioInvalid(InputInvalid):
    """A scenario or suite file that does not satisfy the schema.

    ``problems`` holds one ``file: path.in.document: reason`` line per problem.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CaseInvalid(InputInvalid):
    """A case directory that is incomplete or malformed."""


class TraceInvalid(InputInvalid):
    """A trace file that cannot be imported (truncated, not a trace, bad fields)."""


class PreflightFailed(ChaosbenchError):
    """The environment cannot run what was asked (missing binary, no root, port in use)."""

    exit_code = 3


class FaultNotVerified(ChaosbenchError):
    """An injected fault whose verify signal was never observed."""

    exit_code = 4


class PluginInvalid(ChaosbenchError):
    """A detector plugin that cannot be loaded or does not satisfy the contract."""

    exit_code = 5


class CommandFailed(ChaosbenchError):
    """A command of a fault mechanism or of the testbed (tc, iptables, ip) exited non-zero or hung."""
