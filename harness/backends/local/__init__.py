"""The local backend: emulated nodes (network namespaces + cgroups) on this machine, real Ray, real Prometheus."""

from chaosbench.backends.local.testbed import LocalTestbed, deploy_local

__all__ = ["LocalTestbed", "deploy_local"]
