"""Every label, annotation, finalizer and cloud tag named `paved.dev/...`, and who sets it.

Part of the API like the kinds' fields: users write some of these keys, and tools read the
ones Paved writes. docs/api.md's last section is generated from this table (paved.api.docs);
tests/unit/test_docs.py fails when the operator's code, the compositions, deploy/ or the
examples use a `paved.dev/` key this table does not explain, or when the table names a key
nothing uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetadataType = Literal["label", "annotation", "finalizer", "AWS tag"]


@dataclass(frozen=True)
class MetadataKey:
    key: str
    type: MetadataType
    on: str  # the objects that carry it
    value: str
    meaning: str


SET_BY_YOU = (
    MetadataKey("paved.dev/restart-on-secret-change", "annotation", "your Deployment or StatefulSet",
                "Secret names of its namespace, comma-separated",
                "When a sync changes the content of any of these Secrets, Paved stamps the pod template's "
                "`paved.dev/secret-hash`: one rolling restart per change, however many Secrets changed together."),
    MetadataKey("paved.dev/adopt-db-instance", "annotation", "DatabaseIntent", "an RDS DB instance identifier",
                "Take over an existing RDS instance Paved did not create: its master password is reset into the "
                "connection Secret and it is tagged as the intent's. Refused unless an IntentPolicy allows `Adopt` "
                "for the intent."),
    MetadataKey("paved.dev/command", "annotation", "ProgressiveRollout", "`promote`, `abort` or `retry`",
                "A command to the rollout (what `paved rollout promote|abort|retry` sets)."),
    MetadataKey("paved.dev/command-id", "annotation", "ProgressiveRollout", "any new unique string",
                "Makes `paved.dev/command` act once: the last id acted on is kept in `status.progress`."),
)

SET_BY_THE_PLATFORM = (
    MetadataKey("paved.dev/policy-exceptions", "label", "Namespace", "`allowed`",
                "PolicyExceptions in this namespace are admitted and honoured (as with "
                "`paved run --exception-namespace`); elsewhere they are refused."),
    MetadataKey("paved.dev/service-account-tokens", "label", "Namespace", "`allowed`",
                "An opt-in: the admission policy `paved-operator-token-requests` (deploy/token-policy.yaml) gives the "
                "operator a token for a ServiceAccount only in a namespace labelled so, and refuses it everywhere "
                "else. Label the namespaces whose SecretStores authenticate as a ServiceAccount (Vault Kubernetes "
                "auth, AWS web identity) and the namespace of ClusterSecretStores' accounts; system namespaces are "
                "refused even when labelled."),
    MetadataKey("paved.dev/aggregate-to-agent-ceiling", "label", "ClusterRole", "`\"true\"`",
                "Adds the ClusterRole's rules to the ceiling `paved-agent-ceiling`: the most any AgentIdentity may "
                "be granted (docs/identity.md)."),
    MetadataKey("paved.dev/environment", "label", "Namespace", "e.g. `dev`, `production`",
                "A convention of the shipped defaults (Paved gives it no meaning of its own): `postgres-in-cluster` "
                "serves DatabaseIntents in `dev` namespaces, the `backup-retention-production` policy applies in "
                "`production` ones."),
    MetadataKey("paved.dev/tenant", "label", "Namespace", "`\"true\"`",
                "A convention of the ClusterSecretStore example (examples/03-external-secret/): its `spec.access` "
                "selects tenant namespaces by it."),
)

SET_BY_PAVED = (
    MetadataKey("paved.dev/composition", "label", "CompositionRevision", "the Composition's name (cut short and hashed "
                "when longer than a label value)", "Which Composition the revision records a spec of."),
    MetadataKey("paved.dev/owner-uid", "label", "everything Paved composes", "the intent's uid",
                "Finds an object's intent (drift restores) and its leftovers (pruning, finalizers)."),
    MetadataKey("paved.dev/owner", "annotation", "children in another namespace, or cluster-scoped",
                "`<apiVersion>/<Kind>/<namespace>/<name>` of the intent",
                "Stands in for the ownerReference Kubernetes forbids across namespaces; the intent's finalizer "
                "removes these objects."),
    MetadataKey("paved.dev/cleanup", "finalizer", "AgentIdentity, ProgressiveRollout; DatabaseIntent with cloud resources",
                "", "Kopf's finalizer: Paved's delete handlers run before the object goes (grants in other namespaces "
                "and clouds, the HTTPRoute handed back, cloud databases)."),
    MetadataKey("paved.dev/database-cleanup", "finalizer", "DatabaseIntent with cloud resources", "",
                "Put on before the first cloud call; removed once `spec.deletionPolicy` is carried out."),
    MetadataKey("paved.dev/last-handled-configuration", "annotation", "the intents and stores Kopf reconciles",
                "the spec Kopf last handled", "Kopf's diff base: tells a spec change from a resume."),
    MetadataKey("paved.dev/<handler id>", "annotation", "the intents and stores Kopf reconciles",
                "Kopf's progress of that handler", "Present only while a handler is being retried; its message is "
                "built from names, never values."),
    MetadataKey("paved.dev/target-of", "label", "the target Secret of an ExternalSecretRef", "`ExternalSecretRef`",
                "Selects the Secrets the sync engine watches for drift."),
    MetadataKey("paved.dev/content-hash", "annotation", "the target Secret of an ExternalSecretRef",
                "a keyed hash of the Secret's content (never a value)",
                "Tells the engine whether the Secret still holds what it wrote."),
    MetadataKey("paved.dev/secret-hash", "annotation", "the pod template of an opted-in workload",
                "a hash of the named Secrets' content hashes",
                "Changes once per rotation, which rolls the workload (`paved.dev/restart-on-secret-change`)."),
    MetadataKey("paved.dev/rollout", "label", "the pods and selector of a rollout's stable and canary copies",
                "the rollout's name",
                "The Paved Services select on it; with `replicaRatio` routing your Service must select it too."),
    MetadataKey("paved.dev/role", "label", "the pods and selector of a rollout's copies", "`stable` or `canary`",
                "Which copy a pod belongs to (map it to your metrics' `version` label)."),
    MetadataKey("paved.dev/revision", "annotation", "a rollout's stable and canary Deployments",
                "the pod template's 10-character hash", "Which revision the copy runs."),
    MetadataKey("paved.dev/original-replicas", "annotation",
                "your Deployment, while `spec.originalScaleDown` keeps it scaled down",
                "your replica count", "Restored to `spec.replicas` when the rollout is deleted; "
                "written with `spec.replicas` by field manager `paved-rollout-scale`."),
    MetadataKey("paved.dev/autoscaler-revision", "annotation",
                "a rollout's `<target>-stable` and `<target>-canary` HorizontalPodAutoscalers",
                "a 10-character hash of your HPA's spec",
                "Which version of your HPA (`spec.autoscalerRef`) the copy's HPA was made from."),
    MetadataKey("paved.dev/traffic-weights", "annotation", "`<target>-stable` (replicaRatio routing)",
                "`<stable>/<canary>`", "The nominal split; the replica counts realise it."),
    MetadataKey("paved.dev/database", "label", "a database's Secret, NetworkPolicy, Service and pods",
                "the DatabaseIntent's name",
                "The NetworkPolicy admits `spec.network.allowFrom` to pods with this label (for RDS: the "
                "platform's in-cluster proxy, if it runs one)."),
    MetadataKey("paved.dev/agent-identity", "label", "an AgentIdentity's ServiceAccount, Roles and bindings",
                "the identity's name", "Lists what an identity was granted (`kubectl get roles -l ...`)."),
    MetadataKey("paved.dev/intent-namespace", "label", "an AgentIdentity's Roles and bindings",
                "the identity's namespace", "Where the identity lives, on grants made in other namespaces."),
    MetadataKey("paved.dev/allowed-by", "annotation", "an AgentIdentity's ClusterRole",
                "IntentPolicy names", "Which policies allowed `ClusterScope` when it was granted (audit)."),
    MetadataKey("paved.dev/namespace", "AWS tag", "RDS instances, IAM roles", "the intent's namespace",
                "With the two below, names the intent that owns a cloud resource."),
    MetadataKey("paved.dev/name", "AWS tag", "RDS instances, IAM roles", "the intent's name", "As above."),
    MetadataKey("paved.dev/uid", "AWS tag", "RDS instances, IAM roles", "the intent's uid",
                "Ownership: Paved manages (and ever deletes) an RDS instance only when this tag is the intent's uid."),
    MetadataKey("paved.dev/master-password-id", "AWS tag", "RDS instances", "the id of the generated password",
                "Which generated password the instance has (an id kept beside it, unrelated to its value): a "
                "different id means the password is pushed to RDS again (a lost Secret made again, a restore)."),
    MetadataKey("paved.dev/adopted", "AWS tag", "RDS instances", "`\"true\"`",
                "The instance was adopted (`paved.dev/adopt-db-instance`), not created by Paved."),
)

METADATA = SET_BY_YOU + SET_BY_THE_PLATFORM + SET_BY_PAVED
