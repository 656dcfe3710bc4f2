"""Faults: one module per fault, shipped here or installed as a plugin, and the lifecycle that runs them.

- ``<fault id with _>``: one module per fault (``gpu_power_cap`` ... ``network_delay``): its ``SPEC``, its local
  mechanism (preflight, prepare, inject, verify, recover) and its cluster action (``cluster``).
- ``spec``: ``FaultSpec`` (what a fault declares: parameters, target, realism, sampling, key metrics, root).
- ``catalog``: the fault modules by id, shipped and from the ``chaosbench.faults`` entry points.
- ``base``: the fault module contract, ``Handle``, ``Evidence``, ``injector(fault_id)``.
- ``targets``: a step's target on a testbed, with preflight errors.
- ``lifecycle``: ``injected(testbed, step, writer, index)``, the context manager the runner uses.
- ``journal``: the recovery journal and ``replay_fault_journals(root)`` (``chaosbench cleanup``).
- ``mech/``: local mechanisms shared by the fault modules (processes, cgroups, tc, iptables, NFQUEUE delay
  handler, GEMM hog, device control file).
"""
