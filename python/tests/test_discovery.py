"""Registration, heartbeat and deregistration in a real redis-server."""

from __future__ import annotations

import asyncio
import json

from conftest import GUARD, TOKEN, RedisServer
from gleitzeit import discovery


async def test_registration_heartbeat_and_deregistration(make_service, redis_server, redis_client):
    service = await make_service(
        redis_url=redis_server.url,
        namespace="gzt-test",
        advertise_host="tasks.internal",
        registration_ttl=0.9,
        max_concurrency=7,
        functions=["process_data", "fetch_async"],
    )
    set_key = "{gzt-test}:svc:Test Tasks"
    hash_key = f"{set_key}:{service.instance_id}"

    # Registered at start: zset member with a future expiry, hash with every field and a TTL.
    score = await redis_client.zscore(set_key, service.instance_id)
    assert score is not None and score > discovery.now_ms()
    fields = await redis_client.hgetall(hash_key)
    assert fields["instance"] == service.instance_id
    assert fields["service"] == "Test Tasks"
    assert fields["url"] == f"http://tasks.internal:{service.port}"
    assert fields["max_concurrency"] == "7"
    assert fields["protocol"] == "2"
    assert int(fields["started_ms"]) == service.started_ms
    functions = json.loads(fields["functions"])
    assert [f["name"] for f in functions] == ["process_data", "fetch_async"]
    assert functions[1] == {
        "name": "fetch_async",
        "description": "Pretend to fetch a URL.",
        "timeout_ms": 30000,
    }
    pttl = await redis_client.pttl(hash_key)
    assert 0 < pttl <= 900

    live = await discovery.live_instances(redis_client, "gzt-test", "Test Tasks")
    assert [r.instance for r in live] == [service.instance_id]
    assert live[0].url == fields["url"]

    # Heartbeat: delete the hash and await (keyspace notification) the beat that rewrites it.
    await redis_client.config_set("notify-keyspace-events", "Khz")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"__keyspace@0__:{hash_key}", f"__keyspace@0__:{set_key}")
    await redis_client.delete(hash_key)
    seen = set()

    async def wait_for_beat():
        async for message in pubsub.listen():
            if message["type"] == "message":
                seen.add(message["data"])
                if message["data"] == "hset":
                    return

    await asyncio.wait_for(wait_for_beat(), GUARD)
    await pubsub.unsubscribe()
    await pubsub.aclose()
    assert (await redis_client.hgetall(hash_key))["instance"] == service.instance_id
    assert await redis_client.pttl(hash_key) > 0
    new_score = await redis_client.zscore(set_key, service.instance_id)
    assert new_score > score
    assert "zadd" in seen

    # Clean shutdown removes both.
    await service.stop()
    assert await redis_client.zscore(set_key, service.instance_id) is None
    assert await redis_client.exists(hash_key) == 0


async def test_expired_members_are_dead_and_pruned(redis_client):
    set_key = discovery.service_key("gleitzeit", "Svc")
    now = discovery.now_ms()
    await redis_client.zadd(set_key, {"dead-1": now - 1000, "live-1": now + 60000})
    live_reg = discovery.Registration(
        service="Svc",
        instance="live-1",
        url="http://h:1",
        functions=[],
        max_concurrency=1,
        started_ms=now,
    )
    await redis_client.hset(
        discovery.instance_key("gleitzeit", "Svc", "live-1"), mapping=live_reg.to_hash()
    )
    live = await discovery.live_instances(redis_client, "gleitzeit", "Svc")
    assert [r.instance for r in live] == ["live-1"]
    assert await redis_client.zscore(set_key, "dead-1") is None  # pruned by the reader


def _registration(instance: str, started_ms: int) -> discovery.Registration:
    return discovery.Registration(
        service="Svc",
        instance=instance,
        url="http://h:1",
        functions=[],
        max_concurrency=1,
        started_ms=started_ms,
    )


async def test_a_sharded_namespace_keeps_each_services_registration_under_its_own_prefix(
    redis_client,
):
    """Over several shards a service registers under ``{<ns>~svc~<service>}:``; one that
    registered before the namespace recorded its count moves there at its next beat, and
    readers find instances under either prefix, each once."""
    registrar = discovery.Registrar(redis_client, "team", _registration("early-1", 1), ttl=60)
    await registrar.beat()  # nothing recorded yet: the home prefix
    home_set = discovery.service_key("team", "Svc")
    own_set = discovery.service_key("team", "Svc", spread=True)
    assert own_set == "{team~svc~Svc}:svc:Svc"
    assert await redis_client.zscore(home_set, "early-1") is not None

    await redis_client.set(discovery.shards_key("team"), "3")
    # A reader already looks under both; a second instance registers under its own prefix.
    late = discovery.Registrar(redis_client, "team", _registration("late-1", 2), ttl=60)
    await late.beat()
    assert await redis_client.zscore(own_set, "late-1") is not None
    assert await redis_client.zscore(home_set, "late-1") is None
    live = await discovery.live_instances(redis_client, "team", "Svc")
    assert [r.instance for r in live] == ["early-1", "late-1"]

    # The early one moves at its next beat: written under its own prefix, removed at home.
    await registrar.beat()
    assert await redis_client.zscore(own_set, "early-1") is not None
    assert await redis_client.zscore(home_set, "early-1") is None
    assert await redis_client.exists(discovery.instance_key("team", "Svc", "early-1")) == 0
    assert await redis_client.exists(
        discovery.instance_key("team", "Svc", "early-1", spread=True)
    )
    live = await discovery.live_instances(redis_client, "team", "Svc")
    assert [r.instance for r in live] == ["early-1", "late-1"]

    # An instance under both prefixes (between a move's two steps) counts once.
    await redis_client.zadd(home_set, {"late-1": discovery.now_ms() + 60000})
    home_hash = discovery.instance_key("team", "Svc", "late-1")
    await redis_client.hset(home_hash, mapping=_registration("late-1", 2).to_hash())
    live = await discovery.live_instances(redis_client, "team", "Svc")
    assert [r.instance for r in live] == ["early-1", "late-1"]

    await registrar.deregister()
    await late.deregister()
    assert await redis_client.zcard(own_set) == 0


async def test_service_keeps_serving_when_redis_is_down(make_service, make_client, redis_server):
    redis_server.stop()  # registration fails; serving must not
    service = await make_service(redis_url=redis_server.url, registration_ttl=0.3)
    client = await make_client(f"http://127.0.0.1:{service.port}", TOKEN)
    assert (await client.call("process_data", [1])).ok
    summary = await service.stop()  # deregistration failure is logged, not raised
    assert summary.abandoned == 0


async def test_service_registers_once_redis_comes_up(make_service, redis_server):
    """A registration that failed at start is made by a later heartbeat."""
    import redis.asyncio as aioredis

    port = redis_server.port
    redis_server.stop()
    service = await make_service(redis_url=f"redis://127.0.0.1:{port}/0", registration_ttl=0.3)
    # A new Redis on the same port; the registration is awaited through a keyspace
    # notification (subscribe first, then check, so no beat is missed).
    revived = RedisServer(port=port, extra_args=("--notify-keyspace-events", "Kz"))
    client = aioredis.from_url(revived.url, decode_responses=True)
    try:
        set_key = discovery.service_key("gleitzeit", "Test Tasks")
        pubsub = client.pubsub()
        await pubsub.subscribe(f"__keyspace@0__:{set_key}")

        async def registered():
            if await client.zscore(set_key, service.instance_id) is not None:
                return
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"] == "zadd":
                    return

        await asyncio.wait_for(registered(), GUARD)
        assert await client.zscore(set_key, service.instance_id) is not None
        await pubsub.aclose()
        await service.stop()
        assert await client.zscore(set_key, service.instance_id) is None
    finally:
        await client.aclose()
        revived.stop()
