"""The services' Redis connection, from the URL forms the Rust worker and CLI read too.

- ``redis://``, ``rediss://``, ``unix://``: one server (``redis.asyncio.from_url``);
- ``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]``
  ``[?sentinel_username=U&sentinel_password=P]`` (``rediss+sentinel://`` for TLS): the
  primary that the sentinels name, looked up again whenever a connection is opened, so a
  service keeps registering itself after a failover. The hosts are the sentinels (port 26379
  when left out), SERVICE the name they monitor the primary under, USER and PASSWORD the
  primary's credentials, the query the sentinels' own. Credentials are percent-decoded;
- ``redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]`` (``rediss+cluster://``
  for TLS): a Redis Cluster, through redis-py's cluster client (the hosts are nodes to start
  from, port 6379 when left out).

TLS files come from the environment as for one server (:mod:`gleitzeit.redis_tls`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gleitzeit import redis_tls

SENTINEL_PORT = 26379
REDIS_PORT = 6379
_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_FORM = (
    "expected redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]"
    "[?sentinel_username=U&sentinel_password=P]"
)


class RedisUrlError(ValueError):
    """A ``redis+sentinel://`` URL is malformed; the message names the part (never a
    password)."""


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    tls: bool
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel deployment."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in _SCHEMES


def _bad(reason: str) -> RedisUrlError:
    return RedisUrlError(f"invalid redis+sentinel url: {reason}\n{_FORM}")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in _CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` URL."""

    tls: bool
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parses a ``redis+cluster://`` URL; raises :class:`RedisUrlError` naming the part."""

    def bad(reason: str) -> RedisUrlError:
        return RedisUrlError(
            f"invalid redis+cluster url: {reason}\n"
            "expected redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]"
        )

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _CLUSTER_SCHEMES:
        raise bad("the scheme must be redis+cluster:// or rediss+cluster://")
    if "?" in rest:
        raise bad("no query parameters are known")
    authority, _, path = rest.partition("/")
    if path:
        raise bad(f"unexpected path {path!r} (a cluster has only database 0)")
    username, password, hosts = _split_userinfo(authority)
    try:
        nodes = [_host(h, k + 1, REDIS_PORT, "node") for k, h in enumerate(hosts.split(","))]
    except ValueError as exc:
        raise bad(str(exc)) from None
    return ClusterUrl(
        tls=_CLUSTER_SCHEMES[scheme.lower()], nodes=nodes, username=username, password=password
    )


def _split_userinfo(authority: str) -> tuple[str | None, str | None, str]:
    """``[[USER]:PASSWORD@]HOSTS`` → (user, password, hosts), percent-decoded; the last ``@``
    ends the credentials, so a password may hold one."""
    userinfo, at, hosts = authority.rpartition("@")
    if not at:
        return None, None, authority
    user, colon, pw = userinfo.partition(":")
    return (
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(pw) if colon else None,
        hosts,
    )


def _host(text: str, k: int, default_port: int, what: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[IPV6][:PORT]``; raises ``ValueError`` with the reason."""
    where = f"{what} {k}: {text!r}"
    if text.startswith("["):
        host, sep, after = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{where}: an IPv6 address needs its closing ']'")
        if after and not after.startswith(":"):
            raise ValueError(f"{where}: expected ':PORT' after ']'")
        port = after[1:] if after else None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        port = port_text if sep else None
    if not host:
        raise ValueError(f"{where}: the host is empty")
    if port is None:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where}: the port {port!r} is not a number 1-65535")
    return host, int(port)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parses a ``redis+sentinel://`` URL; raises :class:`RedisUrlError` naming the part at
    fault."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise _bad("the scheme must be redis+sentinel:// or rediss+sentinel://")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    username, password, hosts = _split_userinfo(authority)
    try:
        sentinels = [
            _host(h, k + 1, SENTINEL_PORT, "sentinel") for k, h in enumerate(hosts.split(","))
        ]
    except ValueError as exc:
        raise _bad(str(exc)) from None
    parts = path.split("/")
    service = urllib.parse.unquote(parts[0])
    if not service:
        raise _bad(
            "the service name (the master name the sentinels monitor) is missing after the hosts"
        )
    db = 0
    if len(parts) > 1 and parts[1]:
        if not parts[1].isdigit():
            raise _bad(f"the database {parts[1]!r} is not a number >= 0")
        db = int(parts[1])
    extra = [p for p in parts[2:] if p]
    if extra:
        raise _bad(f"unexpected path part {extra[0]!r} after /SERVICE/DB")
    options: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name not in ("sentinel_username", "sentinel_password"):
            raise _bad(
                f"unknown parameter {name!r} (known: sentinel_username, sentinel_password)"
            )
        options[name] = urllib.parse.unquote(value)
    return SentinelUrl(
        tls=_SCHEMES[scheme.lower()],
        sentinels=sentinels,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def connect(
    url: str,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """A ``redis.asyncio.Redis`` (``decode_responses=True``) for ``url``. Opens no socket:
    the first command connects.

    Raises :class:`RedisUrlError` for a malformed Sentinel URL,
    :class:`gleitzeit.redis_tls.TlsConfigError` for unusable TLS settings and ``ValueError``
    for a malformed one-server URL.
    """
    import redis.asyncio as aioredis  # imported here: services without discovery skip it
    from redis.asyncio.sentinel import Sentinel

    tls = redis_tls.tls_options(url, environ)
    timeouts = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    if is_cluster_url(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        c = parse_cluster_url(url)
        extra: dict[str, Any] = dict(tls)
        if c.tls:
            extra["ssl"] = True
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in c.nodes],
            username=c.username,
            password=c.password,
            decode_responses=True,
            **timeouts,
            **extra,
        )
    if not is_sentinel_url(url):
        return aioredis.from_url(url, decode_responses=True, **timeouts, **tls)
    s = parse_sentinel_url(url)
    node: dict[str, Any] = dict(timeouts)
    if s.tls:
        node.update(ssl=True, **tls)
    sentinel_kwargs = dict(node)
    if s.sentinel_username is not None:
        sentinel_kwargs["username"] = s.sentinel_username
    if s.sentinel_password is not None:
        sentinel_kwargs["password"] = s.sentinel_password
    sentinel = Sentinel(s.sentinels, sentinel_kwargs=sentinel_kwargs, **node)
    return sentinel.master_for(
        s.service,
        db=s.db,
        username=s.username,
        password=s.password,
        decode_responses=True,
    )
