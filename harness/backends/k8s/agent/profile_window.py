#!/usr/bin/env python3
"""Open one vLLM torch-profiler window on every engine replica of a Ray Serve LLM app.

Runs inside the Ray head pod (mounted from a ConfigMap): connects to the running
cluster, finds the app's LLMServer deployments and calls ``start_profile``, waits,
then ``stop_profile``. vLLM writes one Kineto trace per worker rank into its
profiler directory on each worker pod; the harness copies them out afterwards.
Prints one JSON line; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--app", default="llm")
    p.add_argument("--duration", type=float, required=True, help="seconds between start and stop")
    args = p.parse_args(argv)

    import ray
    from ray import serve

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    app = serve.status().applications.get(args.app)
    if app is None:
        print(json.dumps({"error": f"no Serve application {args.app!r}"}))
        return 1
    names = [d for d in app.deployments if d.startswith("LLMServer")]
    if not names:
        print(json.dumps({"error": f"no LLMServer deployment in {args.app!r}: {sorted(app.deployments)}"}))
        return 1
    handles = [serve.get_deployment_handle(n, app_name=args.app) for n in names]
    started = time.time()
    for h in handles:
        h.start_profile.remote().result(timeout_s=120)
    time.sleep(max(0.0, args.duration - (time.time() - started)))
    for h in handles:
        h.stop_profile.remote().result(timeout_s=600)
    print(json.dumps({"deployments": names, "start": started, "stop": time.time()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
