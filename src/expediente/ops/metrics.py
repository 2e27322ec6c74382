"""Prometheus metrics. With several worker processes, PROMETHEUS_MULTIPROC_DIR aggregates them."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

REQUESTS = Counter("expediente_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "expediente_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Time spent inside requests on security: the access-policy decision (including the SQL probes
# it runs for writes) and appending the audit entry (including waiting for its commit).
# bench/fhir_crud.py and bench/fhir_search.py report it as a share of request time.
SECURITY_SECONDS = Counter("expediente_security_seconds", "Time spent deciding access and appending audit entries", ["part"])
POLICY_SECONDS = SECURITY_SECONDS.labels("policy")
AUDIT_SECONDS = SECURITY_SECONDS.labels("audit")

BATCH_SIZE = Histogram(
    "expediente_group_commit_batch_size",
    "Jobs committed together in one transaction",
    ["committer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_SECONDS = Histogram(
    "expediente_group_commit_seconds",
    "Time from a batch's first job taken to its commit",
    ["committer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
