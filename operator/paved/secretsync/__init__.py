"""The secret sync core: pure planning for ExternalSecretRefs. No I/O, no clients.

Layer: after `rollout/`, before `providers/` (providers import its value types). It never
imports kopf, kubernetes, boto3 or hvac; the engine in paved.engines.secretsync does the I/O
and asks this package what to do at each step.

- model     RefSpec (a ref, normalised), StoreKey, RemoteKey, RemoteValue (masked repr),
            Present / Missing / KeyFailure (what a store says per key), StoreFailure
- schedule  per-store jittered grid, restart spreading, tenacity backoff capped below the interval
- plan      grouping by store, de-duplication of remote keys, change detection (which refs
            need values, which keys to fetch), the per-ref Decision, the status and the Event
            it yields
- missing   the rule for vanished remote keys: missing on two refreshes at least the store's
            grace period apart, about the same ref generation and store revision
- breaker   a circuit breaker per store: stop calling a store that keeps failing, probe it later
- access    ClusterSecretStore allowances (namespaces x key prefixes with {namespace})
- values    property extraction, dataFrom extraction, sandboxed Jinja2 templates, content
            hash; every error message built from names, positions and types only
- target    the target Secret's apply body and merge patches (what the engine writes)
- restart   which opted-in Deployments/StatefulSets get a pod-template stamp (one per change)
- state     the engine's thread-safe memory: registered refs, due times, the value cache
"""
