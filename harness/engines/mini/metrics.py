"""The engine core's Prometheus metrics, with vLLM's names (counters get ``_total`` on export).

Only metrics with a real counterpart are exported (README, "Metrics and their real counterparts"): rank
failures show as the ranks' own restart counters, the usable KV blocks as ``vllm:kv_cache_usage_perc``.
Beyond the tensor-parallel-only layout every series also carries ``replica`` (``replica-<d>``): each
data-parallel replica serves its own exporter (as each vLLM engine of a Serve deployment does).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)


class EngineMetrics:
    def __init__(self, model_name: str, replica: str | None = None):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        extra = {} if replica is None else {"replica": replica}
        r, lab = self.registry, ["model_name", *extra]
        m = (model_name, *extra.values())  # label values, in the order of ``lab``
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", lab,
                              buckets=TTFT_BUCKETS, registry=r).labels(*m)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Inter-token latency.", lab,
                             buckets=ITL_BUCKETS, registry=r).labels(*m)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", lab,
                             buckets=E2E_BUCKETS, registry=r).labels(*m)
        self.queue = Histogram("vllm:request_queue_time_seconds", "Time spent waiting before the first step.", lab,
                               buckets=E2E_BUCKETS, registry=r).labels(*m)
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch.", lab, registry=r).labels(*m)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting.", lab, registry=r).labels(*m)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent.", lab,
                              registry=r).labels(*m)
        self.preemptions = Counter("vllm:num_preemptions", "Cumulative preemptions.", lab, registry=r).labels(*m)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed.", lab, registry=r).labels(*m)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens.", lab, registry=r).labels(*m)
        self._success = Counter("vllm:request_success", "Finished requests.", [*lab, "finished_reason"],
                                registry=r)
        self._labels = m

    def success(self, reason: str) -> None:
        self._success.labels(*self._labels, reason).inc()
