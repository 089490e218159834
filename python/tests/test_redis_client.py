"""Redis URLs of the services: one server or a Sentinel deployment, and a service that keeps
registering itself on the promoted replica after a failover."""

from __future__ import annotations

import asyncio

import pytest

from conftest import GUARD, RedisClusterProcesses, RedisServer, SentinelProcess
from gleitzeit import discovery
from gleitzeit.redis_client import RedisUrlError, parse_cluster_url, parse_sentinel_url
from gleitzeit.submitter import redact_url


def test_sentinel_urls_parse_like_the_rust_side():
    u = parse_sentinel_url("redis+sentinel://s1:26380,s2,[::1]:26381/mymaster")
    assert not u.tls
    assert u.sentinels == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert (u.service, u.db, u.username, u.password) == ("mymaster", 0, None, None)
    u = parse_sentinel_url(
        "rediss+sentinel://app:p%40ss%3Aw@h:1/svc/3?sentinel_username=s&sentinel_password=t%26"
    )
    assert u.tls and (u.username, u.password, u.service, u.db) == ("app", "p@ss:w", "svc", 3)
    assert (u.sentinel_username, u.sentinel_password) == ("s", "t&")
    assert "p@ss" not in repr(u)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis+sentinel://h1,h2", "service name"),
        ("redis+sentinel://h1:0/svc", "sentinel 1"),
        ("redis+sentinel://h1,:26379/svc", "sentinel 2"),
        ("redis+sentinel://[::1/svc", "closing ']'"),
        ("redis+sentinel://h/svc/-1", "database '-1'"),
        ("redis+sentinel://h/svc/0/x", "unexpected path part"),
        ("redis+sentinel://h/svc?master=x", "unknown parameter 'master'"),
    ],
)
def test_bad_sentinel_urls_name_the_part(url, expected):
    with pytest.raises(RedisUrlError) as info:
        parse_sentinel_url(url)
    assert expected in str(info.value)


def test_both_passwords_of_a_sentinel_url_are_redacted():
    assert (
        redact_url("redis+sentinel://app:secret@s1:26379,s2/svc?sentinel_password=t0p&x=1")
        == "redis+sentinel://app:***@s1:26379,s2/svc?sentinel_password=***&x=1"
    )
    assert redact_url("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


async def test_a_service_on_a_sentinel_url_registers_on_the_promoted_replica(make_service):
    import redis.asyncio as aioredis

    import redis

    primary = RedisServer()
    replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
    # The sentinel reads a replica's state when it first sees it and then every 10 s: it is
    # started once the replica is in sync, so it can promote it at once.
    with redis.Redis(port=replica.port, decode_responses=True) as r:
        await asyncio.wait_for(replica_in_sync(r), GUARD)
    sentinel = SentinelProcess(primary.port)
    clients = []
    try:
        sentinel.wait_until(
            lambda: any(
                rep.get("master-link-status") == "ok"
                for rep in sentinel.admin("SENTINEL", "REPLICAS", sentinel.SERVICE)
            )
            or None,
            "the sentinel to see the replica in sync",
        )
        service = await make_service(redis_url=sentinel.url, registration_ttl=0.3)
        set_key = discovery.service_key("gleitzeit", "Test Tasks")
        hash_key = f"{set_key}:{service.instance_id}"
        old = aioredis.from_url(primary.url, decode_responses=True)
        clients.append(old)
        assert await old.zscore(set_key, service.instance_id) is not None

        sentinel.admin("SENTINEL", "FAILOVER", sentinel.SERVICE)
        new_port = sentinel.wait_until(
            lambda: (p := sentinel.primary_port()) != primary.port and p or None,
            "the sentinel to name the replica",
        )
        assert new_port == replica.port
        new = aioredis.from_url(replica.url, decode_responses=True)
        clients.append(new)
        await sentinel_wait_master(new)
        # The next heartbeats rewrite the registration on the new primary: delete it there and
        # await (keyspace notification) the beat that writes it back.
        await new.config_set("notify-keyspace-events", "Kh")
        pubsub = new.pubsub()
        await pubsub.subscribe(f"__keyspace@0__:{hash_key}")
        await new.delete(hash_key)

        async def rewritten():
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"] == "hset":
                    return

        await asyncio.wait_for(rewritten(), GUARD)
        await pubsub.aclose()
        assert (await new.hgetall(hash_key))["instance"] == service.instance_id
        await service.stop()
        assert await new.zscore(set_key, service.instance_id) is None
    finally:
        for c in clients:
            await c.aclose()
        sentinel.stop()
        replica.stop()
        primary.stop()


async def sentinel_wait_master(client) -> None:
    """Until the promoted server says it is a primary (bounded by GUARD)."""

    async def master():
        while (await client.execute_command("ROLE"))[0] != "master":
            await asyncio.sleep(0.05)

    await asyncio.wait_for(master(), GUARD)


async def replica_in_sync(r) -> None:
    while r.info("replication").get("master_link_status") != "up":
        await asyncio.sleep(0.05)


def test_cluster_urls_parse_and_fail_with_the_part_named():
    u = parse_cluster_url("redis+cluster://app:p%40w@n1:7000,n2,[::1]:7001")
    assert (u.tls, u.username, u.password) == (False, "app", "p@w")
    assert u.nodes == [("n1", 7000), ("n2", 6379), ("::1", 7001)]
    assert "p@w" not in repr(u)
    assert parse_cluster_url("rediss+cluster://n1").tls
    for url, expected in [
        ("redis+cluster://n1/3", "database 0"),
        ("redis+cluster://n1:x", "node 1"),
        ("redis+cluster://n1,:7000", "node 2"),
        ("redis+cluster://n1?x=1", "no query parameters"),
    ]:
        with pytest.raises(RedisUrlError) as info:
            parse_cluster_url(url)
        assert expected in str(info.value), url


async def _holders_of(cluster, key: str, opened: list) -> list:
    """The nodes of ``cluster`` that hold keys in ``key``'s slot (each connection opened is
    appended to ``opened``, for the caller to close)."""
    import redis.asyncio as aioredis

    holders = []
    for n in cluster.nodes:
        node = aioredis.from_url(n.url, decode_responses=True)
        opened.append(node)
        slot = await node.execute_command("CLUSTER", "KEYSLOT", key)
        if await node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot):
            holders.append(node)
    return holders


async def test_a_service_on_a_cluster_url_registers_on_the_namespaces_primary(make_service):
    cluster = RedisClusterProcesses(3)
    nodes = []
    try:
        service = await make_service(redis_url=cluster.url, registration_ttl=0.3)
        set_key = discovery.service_key("gleitzeit", "Test Tasks")
        hash_key = f"{set_key}:{service.instance_id}"
        # The registration is on the primary serving the namespace's slot, and only there.
        holders = await _holders_of(cluster, set_key, nodes)
        assert len(holders) == 1
        (holder,) = holders
        assert await holder.zscore(set_key, service.instance_id) is not None
        assert (await holder.hgetall(hash_key))["instance"] == service.instance_id
        await service.stop()
        assert await holder.zscore(set_key, service.instance_id) is None
    finally:
        for node in nodes:
            await node.aclose()
        cluster.stop()


async def test_a_service_in_a_sharded_namespace_registers_on_its_own_slot(make_service):
    """With ``{<ns>}:shards`` above 1 on a cluster, the registration is under the service's own
    prefix, on the primary serving that slot, and discovery through the cluster finds it."""
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisClusterProcesses(3)
    client = RedisCluster.from_url(cluster.nodes[0].url, decode_responses=True)
    nodes = []
    try:
        await client.set(discovery.shards_key("gleitzeit"), "3")
        service = await make_service(redis_url=cluster.url, registration_ttl=0.3)
        set_key = discovery.service_key("gleitzeit", "Test Tasks", spread=True)
        assert set_key == "{gleitzeit~svc~Test Tasks}:svc:Test Tasks"
        holders = await _holders_of(cluster, set_key, nodes)
        assert len(holders) == 1
        assert await holders[0].zscore(set_key, service.instance_id) is not None
        home = discovery.service_key("gleitzeit", "Test Tasks")
        assert await client.zscore(home, service.instance_id) is None
        live = await discovery.live_instances(client, "gleitzeit", "Test Tasks")
        assert [r.instance for r in live] == [service.instance_id]
        await service.stop()
        assert await holders[0].zscore(set_key, service.instance_id) is None
    finally:
        for node in nodes:
            await node.aclose()
        await client.aclose()
        cluster.stop()
