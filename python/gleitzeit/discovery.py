"""Service discovery in Redis: where a task service can be reached and what it serves.

Key patterns (they mirror the Rust ``keys`` module; every key carries the ``{<ns>}`` hash tag so
they share one Redis Cluster slot with the rest of a deployment):

- ``{<ns>}:svc:<service>`` — ZSET, member ``<instance id>``, score = expiry time in ms.
- ``{<ns>}:svc:<service>:<instance>`` — HASH ``instance service url functions max_concurrency
  started_ms protocol`` (``functions`` is a JSON list of ``{name, description, timeout_ms}``),
  with a PEXPIRE of the registration TTL.

A running service rewrites both every TTL/3 (so a Redis that lost its data is repopulated at the
next beat) and removes both on a clean shutdown; a crashed one simply expires. Readers treat
members whose score is in the past as dead.

In a namespace spread over several shards (``{<ns>}:shards`` records a count above 1) a
service's two keys are under its own prefix ``{<ns>~svc~<service>}:`` instead, so each service's
heartbeats go to a slot of its own on a Redis Cluster. A service reads the count at every beat
(it may start before anything records one) and moves its registration when it changes;
readers look under both prefixes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .protocol import PROTOCOL_VERSION, FunctionInfo

log = logging.getLogger("gleitzeit.discovery")

DEFAULT_NAMESPACE = "gleitzeit"
#: Registration lifetime without a heartbeat.
DEFAULT_TTL = 15.0


class DiscoveryError(ValueError):
    """A namespace, service or instance name cannot be used in a key. Not retryable."""


def _check_no_braces_or_controls(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"{what} must be a non-empty string")
    if "{" in value or "}" in value:
        raise DiscoveryError(f"{what} must not contain '{{' or '}}': {value!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise DiscoveryError(f"{what} must not contain control characters: {value!r}")
    return value


def validate_namespace(namespace: Any) -> str:
    """Namespaces: no braces (they are the hash tag), no whitespace, no control characters."""
    ns = _check_no_braces_or_controls(namespace, "namespace")
    if any(c.isspace() for c in ns):
        raise DiscoveryError(f"namespace must not contain whitespace: {ns!r}")
    return ns


def validate_service_name(name: Any) -> str:
    """Service names: no braces, no control characters, no leading/trailing whitespace
    (``"Python Tasks"`` is fine)."""
    svc = _check_no_braces_or_controls(name, "service name")
    if svc != svc.strip():
        raise DiscoveryError(f"service name has leading/trailing whitespace: {svc!r}")
    return svc


def prefix(namespace: str) -> str:
    """``{<ns>}:``, the start of every key of a deployment."""
    return "{" + validate_namespace(namespace) + "}:"


def shards_key(namespace: str) -> str:
    """``{<ns>}:shards``: how many shards the namespace is spread over, once recorded."""
    return f"{prefix(namespace)}shards"


def service_key(namespace: str, service: str, spread: bool = False) -> str:
    """``{<ns>}:svc:<service>``: the ZSET of live instances of one service
    (``{<ns>~svc~<service>}:svc:<service>`` when ``spread``)."""
    svc = validate_service_name(service)
    if spread:
        return "{" + validate_namespace(namespace) + "~svc~" + svc + "}:svc:" + svc
    return f"{prefix(namespace)}svc:{svc}"


def instance_key(namespace: str, service: str, instance: str, spread: bool = False) -> str:
    """``{<ns>}:svc:<service>:<instance>``: the HASH describing one instance (under the
    service's own prefix when ``spread``)."""
    inst = _check_no_braces_or_controls(instance, "instance id")
    return f"{service_key(namespace, service, spread)}:{inst}"


async def is_spread(redis: Any, namespace: str) -> bool:
    """Whether the namespace records a shard count above 1 (its services' keys then have a
    prefix of their own). Nothing recorded, or an unreadable value: not spread."""
    recorded = await redis.get(shards_key(namespace))
    try:
        return recorded is not None and int(recorded) > 1
    except (TypeError, ValueError):
        return False


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Registration:
    """What one instance advertises."""

    service: str
    instance: str
    url: str
    functions: Sequence[FunctionInfo]
    max_concurrency: int
    started_ms: int
    protocol: int = PROTOCOL_VERSION

    def to_hash(self) -> dict[str, str]:
        return {
            "instance": self.instance,
            "service": self.service,
            "url": self.url,
            "functions": json.dumps([f.to_json() for f in self.functions], separators=(",", ":")),
            "max_concurrency": str(self.max_concurrency),
            "started_ms": str(self.started_ms),
            "protocol": str(self.protocol),
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Registration:
        """Parse a registration hash (string fields, as Redis returns them decoded)."""
        try:
            return cls(
                service=fields["service"],
                instance=fields["instance"],
                url=fields["url"],
                functions=tuple(FunctionInfo.from_json(f) for f in json.loads(fields["functions"])),
                max_concurrency=int(fields["max_concurrency"]),
                started_ms=int(fields["started_ms"]),
                protocol=int(fields["protocol"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise DiscoveryError(f"malformed registration hash: {exc}") from exc


class Registrar:
    """Keeps one instance registered: register, heartbeat every TTL/3, deregister.

    ``redis`` is a ``redis.asyncio.Redis`` created with ``decode_responses=True``. Redis errors
    during heartbeats are logged and retried at the next beat; they never stop the service.
    """

    def __init__(
        self,
        redis: Any,
        namespace: str,
        registration: Registration,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise DiscoveryError(f"registration ttl must be a positive number of seconds: {ttl!r}")
        self.redis = redis
        self.registration = registration
        self.ttl = float(ttl)
        self.namespace = namespace
        self.spread = False
        self.set_key = service_key(namespace, registration.service)
        self.hash_key = instance_key(namespace, registration.service, registration.instance)
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._healthy = True

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    async def beat(self) -> None:
        """Write the registration and push its expiry to now + TTL (one MULTI/EXEC).

        Members of the same service whose expiry has passed are removed on the way: they belong
        to instances that died without deregistering. The namespace's shard count is read
        first: when it now says the service's keys have a prefix of their own, the
        registration moves there (the old one is removed after the new one is written).
        """
        spread = await self._read_layout()
        moved_from = None
        if spread != self.spread:
            moved_from = (self.set_key, self.hash_key)
            self.spread = spread
            reg = self.registration
            self.set_key = service_key(self.namespace, reg.service, spread)
            self.hash_key = instance_key(self.namespace, reg.service, reg.instance, spread)
        now = now_ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.set_key, "-inf", f"({now}")
            pipe.zadd(self.set_key, {self.registration.instance: now + self.ttl_ms})
            pipe.hset(self.hash_key, mapping=self.registration.to_hash())
            pipe.pexpire(self.hash_key, self.ttl_ms)
            await pipe.execute()
        if moved_from is not None:
            await self._remove(*moved_from)
            log.info("registration moved to %s", self.set_key)

    async def _read_layout(self) -> bool:
        """The layout the namespace asks for now; the current one when the count cannot be
        read (a Redis user without access to it, or a passing error: readers look under
        both prefixes, so either is found)."""
        try:
            return await is_spread(self.redis, self.namespace)
        except Exception as exc:
            log.debug("could not read the shard count (%s); keeping the current layout", exc)
            return self.spread

    async def _remove(self, set_key: str, hash_key: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(set_key, self.registration.instance)
            pipe.delete(hash_key)
            await pipe.execute()

    async def deregister(self) -> None:
        await self._remove(self.set_key, self.hash_key)

    async def start(self) -> None:
        """Register once (failures are logged, the heartbeat keeps trying) and start beating."""
        await self._beat_logged()
        self._stop.clear()
        self._task = asyncio.ensure_future(self._heartbeat_loop())

    async def stop(self, deregister: bool = True) -> None:
        """Stop beating and (by default) remove the registration."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if deregister:
            try:
                await self.deregister()
                log.info("deregistered %s from %s", self.registration.instance, self.set_key)
            except Exception as exc:  # Redis down at shutdown: the entries expire on their own
                log.warning(
                    "could not deregister %s (%s); it expires within %.1fs",
                    self.registration.instance,
                    exc,
                    self.ttl,
                )

    async def _beat_logged(self) -> None:
        try:
            await self.beat()
        except Exception as exc:
            if self._healthy:
                log.warning(
                    "service registration in Redis failed (retrying every %.1fs): %s",
                    self.ttl / 3,
                    exc,
                )
            self._healthy = False
            return
        if not self._healthy:
            log.info("service registration in Redis restored")
        self._healthy = True

    async def _heartbeat_loop(self) -> None:
        interval = self.ttl / 3
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            await self._beat_logged()


async def live_instances(
    redis: Any, namespace: str, service: str, prune: bool = True
) -> list[Registration]:
    """The live instances of ``service`` (expiry in the future and hash present), oldest first.

    With ``prune`` the members already expired are removed from the ZSET, as any reader may.
    In a namespace spread over shards, the service's own prefix and the home one are read
    (an instance found under both counts once).
    """
    layouts = [True, False] if await is_spread(redis, namespace) else [False]
    now = now_ms()
    found: dict[str, Registration] = {}
    for spread in layouts:
        key = service_key(namespace, service, spread)
        if prune:
            await redis.zremrangebyscore(key, "-inf", f"({now}")
        members = await redis.zrangebyscore(key, now, "+inf")
        for member in members:
            if member in found:
                continue
            fields = await redis.hgetall(instance_key(namespace, service, member, spread))
            if not fields:
                continue
            try:
                found[member] = Registration.from_hash(fields)
            except DiscoveryError as exc:
                log.warning("ignoring instance %s of %s: %s", member, service, exc)
    return sorted(found.values(), key=lambda r: r.started_ms)
