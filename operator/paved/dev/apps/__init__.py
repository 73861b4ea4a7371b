"""Tiny loopback HTTP apps and a bounded load generator for the ProgressiveRollout e2e tests.

There is no data plane in the test cluster (kwok pods have fake IPs), so "the stable and
the canary version" are two in-process HTTP servers on 127.0.0.1 (`VersionedApp`), scraped
by a real Prometheus, and the test sends them traffic in the ratio the HTTPRoute currently
says (`LoadGenerator`, which reads the route's weights from the API server every second).
"""

from e2e.apps.loadgen import LoadGenerator, WeightReader
from e2e.apps.versioned_app import VersionedApp

__all__ = ["LoadGenerator", "VersionedApp", "WeightReader"]
