"""The `aws` secret store provider (paved.providers.secretstores.STORES): a store's
`spec.provider.aws.service` picks its store class."""

from __future__ import annotations

from paved.providers.aws.secretsmanager import SecretsManagerStore
from paved.providers.aws.ssm import ParameterStore
from paved.providers.aws.store import AwsStore
from paved.providers.secretstores import Credentials, StoreConfig

SERVICES: dict[str, type[AwsStore]] = {"SecretsManager": SecretsManagerStore, "ParameterStore": ParameterStore}


def store_for(config: StoreConfig, credentials: Credentials) -> AwsStore:
    spec = config.provider.aws
    assert spec is not None  # noqa: S101 - STORES only calls this factory for stores with spec.provider.aws
    return SERVICES[spec.service](config, credentials)
