#!/usr/bin/env python3
"""Start or stop vLLM's torch profiler on every engine of a Ray Serve LLM app (or both: a window).

Runs inside the Ray head pod (mounted from a ConfigMap): connects to the running
cluster, finds the app's LLMServer deployments and calls their ``start_profile`` /
``stop_profile`` methods (Ray Serve LLM has no HTTP route for them). vLLM then
writes one Kineto trace per worker rank into its profiler directory on each worker
pod; the harness copies them out. A call reaches one replica of each deployment:
with data_parallel > 1 only that replica is profiled. Prints one JSON line; exit 1
on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def handles(app_name: str):
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        raise LookupError(f"no Serve application {app_name!r}")
    names = sorted(d for d in app.deployments if d.startswith("LLMServer"))
    if not names:
        raise LookupError(f"no LLMServer deployment in {app_name!r}: {sorted(app.deployments)}")
    return names, [serve.get_deployment_handle(n, app_name=app_name) for n in names]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("start", "stop", "window"))
    p.add_argument("--app", default="llm")
    p.add_argument("--duration", type=float, default=0.0, help="window: seconds between start and stop")
    args = p.parse_args(argv)

    import ray

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        names, hs = handles(args.app)
    except LookupError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    out = {"deployments": names}
    if args.action in ("start", "window"):
        for h in hs:
            h.start_profile.remote().result(timeout_s=120)
        out["started"] = time.time()
    if args.action == "window":
        time.sleep(args.duration)
    if args.action in ("stop", "window"):
        for h in hs:
            h.stop_profile.remote().result(timeout_s=600)
        out["stopped"] = time.time()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
