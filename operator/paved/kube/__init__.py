"""Talking to the Kubernetes API: one module per concern.

- client: credentials (kubeconfig or in-cluster, loaded once), raw requests with retries,
  discovery of plural names and scope.
- apply: THE server-side-apply helper (labels, ownerReferences), get/create/delete, prune,
  and the pure `decorate`/`drift` functions behind them.
- status: status deltas and status-subresource patches (conditions via set_condition).
- events: Kubernetes Events on intents.
"""
