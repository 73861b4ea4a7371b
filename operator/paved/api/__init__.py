"""Paved's API: the pydantic models of every kind, the single source of truth.

One module per area (database, identity, secrets, rollout, platform), the shared shapes
(common, fields), the kind registry (kinds.KINDS) and the generators built on it
(crdgen -> crds/*.yaml, docs -> docs/api.md). Pure: no Kubernetes client, no I/O.
"""
