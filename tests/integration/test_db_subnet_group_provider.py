"""The aws-db-subnet-group provider against a real moto server: it manages only its own group."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from paved.dev.moto import MotoServer
from paved.providers.aws.dbsubnetgroup import DBSubnetGroupProvider, subnets_of
from paved.providers.aws.tags import owner_tags
from paved.providers.base import Owner, ProviderError
from paved.render.types import RenderedResource

pytestmark = pytest.mark.aws


def make_owner(name: str) -> Owner:
    return Owner("paved.dev/v1alpha1", "DatabaseIntent", name, "team-a", str(uuid.uuid4()), 1)


def group_of(rds_client: Any, name: str) -> dict[str, Any]:
    return dict(rds_client.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0])


def test_a_group_of_the_same_name_made_by_another_intent_is_never_observed_as_ours_nor_modified(
        aws_env: MotoServer, boto3_client: Callable[..., Any]) -> None:
    network = aws_env.cluster_network()
    rds_client = boto3_client("rds")
    owner, other = make_owner("orders-db"), make_owner("orders-db-old")
    name = f"paved-team-a-orders-db-{owner.uid[:8]}"
    resource = RenderedResource(name="subnet-group", provider="aws-db-subnet-group", body={
        "DBSubnetGroupName": name, "DBSubnetGroupDescription": "orders-db", "SubnetIds": list(network.subnet_ids)})
    rds_client.create_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription="theirs",
                                      SubnetIds=list(network.subnet_ids[:1]), Tags=owner_tags(other))
    provider = DBSubnetGroupProvider()

    for call in (provider.observe, provider.apply):
        with pytest.raises(ProviderError) as refused:
            call(resource, owner)
        assert not refused.value.retryable and "Paved will not take it over" in str(refused.value)
    assert subnets_of(group_of(rds_client, name)) == set(network.subnet_ids[:1])  # not modified

    # The intent's own group is observed as before (the correction itself is not exercised on
    # moto: its modify_db_subnet_group drops the group it modifies).
    mine = RenderedResource(name="subnet-group", provider="aws-db-subnet-group",
                            body={**resource.body, "DBSubnetGroupName": f"{name}-2"})
    assert provider.apply(mine, owner).changed
    assert provider.observe(mine, owner).drift == []
    narrower = RenderedResource(name="subnet-group", provider="aws-db-subnet-group",
                                body={**mine.body, "SubnetIds": list(network.subnet_ids[:1])})
    assert provider.observe(narrower, owner).drift == ["SubnetIds"]
