"""Tiny loopback HTTP apps and a bounded load generator: the ProgressiveRollout e2e tests,
bench/bench_rollout.py and the demo's canary (paved.dev.demo_canary) use them.

There is no data plane in the test cluster (kwok pods have fake IPs), so "the stable and
the canary version" are two in-process HTTP servers on 127.0.0.1 (`VersionedApp`), scraped
by a real Prometheus, and the test sends them traffic in the ratio the HTTPRoute currently
says (`LoadGenerator`, which reads the route's weights from the API server every second).
"""

from paved.dev.apps.loadgen import LoadGenerator, WeightReader
from paved.dev.apps.versioned_app import VersionedApp

__all__ = ["LoadGenerator", "VersionedApp", "WeightReader"]
