"""Fault catalog (``harness.faults.catalog``) and, per fault id, its injector module.

- ``catalog``: the eleven fault ids, parameter models, mechanisms, realism (the lead's).
- ``base``: the injector interface (preflight, prepare, inject, verify, recover), ``injector(fault_id)``.
- ``<fault_id with _>``: one module per fault (``gpu_power_cap`` ... ``network_delay``).
- ``lifecycle``: ``injected(testbed, step, writer, index)``, the context manager the runner uses.
- ``journal``: the recovery journal and ``replay_fault_journals(root)`` (``chaosbench cleanup``).
- ``mech/``: local mechanisms shared by the injectors (processes, cgroups, tc, iptables, NFQUEUE delay
  handler, GEMM hog, device control file).
"""
