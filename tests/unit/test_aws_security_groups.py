"""The pure part of the aws-security-group provider: an ingress made exactly the body's."""

from __future__ import annotations

from paved.providers.aws.ec2 import Rule, diff_ingress, rules_of

DATABASE_PORT_FROM_CLIENTS = [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": "sg-client"}]}]


def described(*permissions: dict) -> dict:
    """A describe_security_groups entry: AWS answers every source list, and the account of a group."""
    full = [{"UserIdGroupPairs": [], "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [], **p} for p in permissions]
    for permission in full:
        permission["UserIdGroupPairs"] = [{**pair, "UserId": "123456789012"} for pair in permission["UserIdGroupPairs"]]
    return {"GroupId": "sg-db", "IpPermissions": full}


def test_rules_are_one_source_each_and_ignore_grouping_and_descriptions() -> None:
    grouped = [{"IpProtocol": "TCP", "FromPort": 22, "ToPort": 22,
                "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "office"}, {"CidrIp": "0.0.0.0/0"}]}]
    assert rules_of(grouped) == {Rule("tcp", 22, 22, "cidr", "10.0.0.0/8"), Rule("tcp", 22, 22, "cidr", "0.0.0.0/0")}
    assert rules_of([{"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "PrefixListIds": [{"PrefixListId": "pl-1"}]}]) == {
        Rule("-1", None, None, "prefix-list", "pl-1")}


def test_the_databases_own_rule_is_no_drift() -> None:
    diff = diff_ingress({"IpPermissions": DATABASE_PORT_FROM_CLIENTS}, described(*DATABASE_PORT_FROM_CLIENTS))
    assert not diff.drifted and diff.describe() == ""


def test_a_rule_added_by_hand_is_revoked_and_a_removed_one_authorized() -> None:
    by_hand = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    diff = diff_ingress({"IpPermissions": DATABASE_PORT_FROM_CLIENTS}, described(by_hand))
    assert diff.revoke == [Rule("tcp", 5432, 5432, "cidr", "0.0.0.0/0")]
    assert diff.authorize == [Rule("tcp", 5432, 5432, "group", "sg-client")]
    assert diff.describe() == "removed ingress tcp port 5432 from 0.0.0.0/0; added ingress tcp port 5432 from sg-client"
    # What is sent names exactly those rules, one source each.
    assert diff.revoke[0].permission() == {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                                           "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert diff.authorize[0].permission() == DATABASE_PORT_FROM_CLIENTS[0]


def test_an_empty_ingress_revokes_everything() -> None:
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    diff = diff_ingress({"IpPermissions": []}, described(everything))
    assert diff.revoke == [Rule("-1", None, None, "cidr", "0.0.0.0/0")] and diff.authorize == []
    assert diff.revoke[0].permission() == {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


def test_described_rules_are_matched_to_the_rules_to_revoke() -> None:
    from paved.providers.aws.ec2 import rule_of

    assert rule_of({"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "ReferencedGroupInfo": {"GroupId": "sg-gone"}}) == Rule(
        "tcp", 5432, 5432, "group", "sg-gone")
    assert rule_of({"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "CidrIpv4": "0.0.0.0/0"}) == Rule("-1", None, None, "cidr", "0.0.0.0/0")
