"""The k8s backend: real GPU clusters through KubeRay + vLLM, Chaos Mesh, a fault agent, Prometheus.

``dry_run(scenario, out_dir)`` renders every manifest, Helm values file and playbook
variable into ``<out_dir>/k8s/`` without touching a cluster. Heavy modules are
imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["deploy_k8s", "dry_run"]


def dry_run(scenario, out_dir: Path) -> Path:
    """Render the k8s run of ``scenario`` (a chaosbench.scenario.Scenario) into ``<out_dir>/k8s``; return that path.

    The rendered manifests are validated offline (Kubernetes OpenAPI + CRD schemas)
    before anything is written; a problem raises chaosbench.errors.InputInvalid.
    """
    from chaosbench.backends.k8s.render import render_all, write_rendered
    from chaosbench.backends.k8s.validate import check_rendered

    k8s_dir = (Path(out_dir) / "k8s").resolve()
    rendered = render_all(scenario, k8s_dir)
    check_rendered(rendered)
    write_rendered(rendered, k8s_dir)
    return k8s_dir


def deploy_k8s(scenario, run_dir: Path, **kwargs):
    """Deploy ``scenario`` on the cluster of its kubeconfig; see chaosbench.backends.k8s.backend.deploy_k8s."""
    from chaosbench.backends.k8s.backend import deploy_k8s as deploy

    return deploy(scenario, run_dir, **kwargs)
