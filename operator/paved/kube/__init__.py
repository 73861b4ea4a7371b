"""Talking to the Kubernetes API: one module per concern.

- client: credentials (kubeconfig or in-cluster, loaded once), raw requests with retries,
  discovery of plural names and scope.
- apply: THE server-side-apply helper (labels, ownerReferences), get/create/delete, prune,
  and the pure `decorate`/`drift` functions behind them.
- status: status by server-side apply, each writer its own field manager and fields
  (StatusWriter; conditions via set_condition).
- events: Kubernetes Events on intents.
- port: KubePort, the object operations code written against a substitutable Kubernetes
  depends on (ApiKube: the real one; tests/support/kube.py: FakeKube).
"""
