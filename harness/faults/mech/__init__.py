"""Local fault mechanisms shared by the injectors: processes, cgroups, qdiscs, iptables, the device layer.

Every function here works from plain values (paths, pids, names), never from a live Testbed, so recovery can
run from a journaled handle in another process after a crash.
"""
