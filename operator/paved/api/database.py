"""DatabaseIntent: what an app team asks of a database, never how it is built.

The spec stays small on purpose: every field is a decision the app team can make without
knowing the cloud. What it becomes (RDS instance class, subnet group, in-cluster server) is
the Composition's business, chosen by the platform team.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from paved.api.common import LocalObjectReference, Model
from paved.api.fields import (
    CelRule,
    ComposedStatus,
    CompositionReference,
    RevisionRefField,
    UpdatePolicyField,
    DNSLabel,
    Duration,
    FieldGroup,
    LabelSelector,
    RuledModel,
    Timestamp,
    derived_name,
)

CONNECTION_SUFFIX = "-connection"

Engine = Literal["postgresql", "mysql"]
DeletionPolicy = Literal["Snapshot", "Retain", "Delete"]


class Backup(Model):
    """Automated backups of the database."""

    retentionDays: int = Field(
        default=7, ge=0, le=35, description="Days automated backups are kept; 0 disables automated backups."
    )


class AllowFrom(Model):
    """Clients admitted to the database port."""

    namespace: DNSLabel = Field(description="Namespace whose pods may connect.")
    podSelector: LabelSelector | None = Field(
        default=None, description="Only pods with these labels in that namespace; absent means every pod there."
    )


class Network(Model):
    """Who may reach the database; every other client is refused (docs/database.md: a security group on
    AWS, a NetworkPolicy in the cluster)."""

    allowFrom: list[AllowFrom] = Field(
        default_factory=list, max_length=64, description="Namespaces (and optionally pods) admitted to the database port."
    )


# A DB snapshot identifier (automated ones start with "rds:"), or the ARN of a shared one.
SNAPSHOT_PATTERN = r"^(arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:snapshot:)?(rds:)?[a-zA-Z][a-zA-Z0-9-]*$"


class RestoreFrom(RuledModel):
    """Where the database's data comes from when it is created; read only then (a database that
    exists is never restored over: to restore again, create a new intent)."""

    field_groups = (FieldGroup(("snapshot", "latestFinalSnapshot")),)
    cel_rules = (CelRule("!has(self.latestFinalSnapshot) || self.latestFinalSnapshot",
                         "latestFinalSnapshot: set it to true, or remove it"),)

    snapshot: str | None = Field(
        default=None, pattern=SNAPSHOT_PATTERN, max_length=512,
        description="A database snapshot by identifier (or ARN, for one shared from another account).",
    )
    latestFinalSnapshot: bool | None = Field(
        default=None,
        description="true: the newest final snapshot that a deleted DatabaseIntent of this namespace and name left "
        "behind (deletionPolicy: Snapshot).",
    )

    @model_validator(mode="after")
    def _latest_is_true(self) -> Self:
        if self.latestFinalSnapshot is False:
            raise ValueError(self.cel_rules[0].message)
        return self


class MasterPassword(Model):
    """Who keeps the database's master password."""

    managedBy: Literal["Paved", "Cloud"] = Field(
        default="Paved",
        description="Paved: generated once and kept in a Secret of this namespace; Cloud: the cloud service keeps "
        "and rotates it (RDS with Secrets Manager) and Paved syncs it into the connection Secret, where the "
        "Composition offers it.",
    )


class DatabaseIntentSpec(Model):
    """A database an application needs: engine, version and the guarantees it must keep.

    Paved renders it through a Composition (cloud database or in-cluster server), writes a
    connection Secret, restricts network access, and corrects drift for as long as it exists.
    """

    engine: Engine = Field(description="Database engine.")
    version: str = Field(
        pattern=r"^[0-9]+(\.[0-9]+){0,2}$",
        max_length=32,
        description='Engine version, major or major.minor, e.g. "16" or "8.0". Quote it in YAML.',
    )
    availability: Literal["standard", "high"] = Field(
        default="standard", description="standard: one instance; high: a standby in another zone (Multi-AZ)."
    )
    encryption: bool = Field(default=True, description="Encrypt storage at rest.")
    storageGB: int = Field(default=20, ge=20, le=65536, description="Allocated storage in GiB.")
    size: Literal["small", "medium", "large"] = Field(
        default="small", description="Capacity class; the Composition maps it to an instance class."
    )
    backup: Backup = Field(default_factory=Backup, description="Automated backup settings.")
    network: Network = Field(default_factory=Network, description="Network access to the database.")
    compositionRef: CompositionReference | None = Field(
        default=None, description="Composition to use; absent means selector match, else the kind's default."
    )
    compositionUpdatePolicy: UpdatePolicyField = "Automatic"
    compositionRevisionRef: RevisionRefField = None
    deletionPolicy: DeletionPolicy = Field(
        default="Snapshot",
        description="On deletion: Snapshot (final snapshot, then delete), Retain (leave the database) or Delete.",
    )
    driftCheckInterval: Duration = Field(
        default="10m", description="How often cloud resources are re-read and corrected, e.g. 10m."
    )
    connectionSecret: LocalObjectReference | None = Field(
        default=None,
        description="Secret receiving host, port, dbname, username, password, uri, jdbc-uri; default <name>-connection "
        "(for a name too long for that, the name cut short and a hash of it, then -connection).",
    )
    masterPassword: MasterPassword = Field(default_factory=MasterPassword, description="Who keeps the master password.")
    restoreFrom: RestoreFrom | None = Field(
        default=None, description="Create the database from a snapshot instead of empty; read only when it is created."
    )

    def connection_secret_name(self, intent_name: str) -> str:
        """The connection Secret's name, applying the `<name>-connection` default (as the compositions do)."""
        return self.connectionSecret.name if self.connectionSecret else derived_name(intent_name, CONNECTION_SUFFIX)


class Endpoint(Model):
    """Where clients connect."""

    host: str = Field(description="DNS name or address of the database.")
    port: int = Field(ge=1, le=65535, description="TCP port of the database.")


class DatabaseIntentStatus(ComposedStatus):
    """Observed state of a DatabaseIntent."""

    endpoint: Endpoint | None = Field(default=None, description="Address clients connect to, once known.")
    connectionSecret: str | None = Field(default=None, description="Name of the Secret holding the connection details.")
    lastDriftCheck: Timestamp | None = Field(
        default=None, description="When cloud resources were last compared with the intent."
    )


EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: DatabaseIntent
metadata:
  name: orders-db
spec:
  engine: postgresql
  version: "16"
  availability: high
  encryption: true
  backup: {retentionDays: 30}
  network:
    allowFrom:
      - namespace: orders-app
"""
