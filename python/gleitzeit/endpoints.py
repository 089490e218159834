"""LLM endpoints published to the worker fleet from Python: ``EndpointConfig`` and
``LoadBalancingStrategy``.

``GleitzeitCluster(ollama_endpoints=[EndpointConfig(...)], ollama_strategy=...)`` publishes
each endpoint with ``gleitzeit-submit endpoints add`` and the strategy with
``gleitzeit-submit endpoints strategy``; the workers read what is published
(``docs/cli.md``, ``endpoints add``). The command validates each endpoint exactly like
an endpoint of the worker's configuration file, so the rules live in one place. Credentials
are never part of an endpoint: ``api_key_env`` names an environment variable on the workers.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("ollama", "openai", "anthropic")

__all__ = ["EndpointConfig", "LoadBalancingStrategy", "endpoint_slug"]


class LoadBalancingStrategy(str, enum.Enum):
    """How workers pick among the endpoints serving a model (``docs/routing.md``). The values
    are the workers' strategy names."""

    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    PRIORITY = "priority"
    FASTEST = "fastest"
    MODEL_AFFINITY = "model_affinity"

    def __str__(self) -> str:
        return self.value


def endpoint_slug(url: str) -> str:
    """The default endpoint name: the URL's host and port as a slug
    (``http://gpu-server-1:11434`` → ``gpu-server-1-11434``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        host, port = "", None
    raw = f"{host}-{port}" if port is not None else host
    slug = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    if not slug:
        raise ValueError(f"cannot derive an endpoint name from url {url!r}; pass name=")
    return slug


@dataclass
class EndpointConfig:
    """One LLM endpoint to publish. ``kind`` ``None`` takes the kind of the list it is passed
    in (``ollama_endpoints`` → ``ollama``, ``openai_endpoints`` → ``openai``, ...); ``name``
    ``None`` takes the slug of the URL's host and port. ``models`` ``None`` serves any model.
    ``api_key_env`` is the NAME of an environment variable on the workers holding the key:
    keys themselves are never accepted, stored or published."""

    url: str
    priority: int = 0
    gpu: bool = False
    name: str | None = None
    kind: str | None = None
    models: Iterable[str] | None = None
    max_concurrent: int | None = None
    api_key_env: str | None = None
    tags: Iterable[str] = field(default_factory=tuple)
    memory_gb: float | None = None
    max_loaded: int | None = None
    timeout: str | None = None

    @property
    def endpoint_name(self) -> str:
        return self.name if self.name is not None else endpoint_slug(self.url)

    def resolved_kind(self, list_kind: str) -> str:
        """The kind to publish, for an endpoint given in the ``<list_kind>_endpoints`` list."""
        kind = self.kind if self.kind is not None else list_kind
        if self.kind is not None and self.kind != list_kind:
            raise ValueError(
                f"endpoint {self.endpoint_name!r} has kind={self.kind!r} but is in "
                f"{list_kind}_endpoints; move it to {self.kind}_endpoints or drop kind="
            )
        return kind

    def add_args(self, list_kind: str) -> list[str]:
        """The arguments of ``gleitzeit-submit endpoints add`` for this endpoint."""
        if isinstance(self.models, str) or isinstance(self.tags, str):
            raise TypeError("models= and tags= take a list of strings, not one string")
        args = [
            "endpoints",
            "add",
            self.endpoint_name,
            "--kind",
            self.resolved_kind(list_kind),
            "--url",
            self.url,
        ]
        if self.models is not None:
            args += ["--models", ",".join(self.models)]
        if self.api_key_env is not None:
            args += ["--api-key-env", self.api_key_env]
        args += ["--priority", str(self.priority)]
        if self.gpu:
            args.append("--gpu")
        optional: dict[str, Any] = {
            "--max-concurrent": self.max_concurrent,
            "--memory-gb": self.memory_gb,
            "--max-loaded": self.max_loaded,
            "--timeout": self.timeout,
        }
        for flag, value in optional.items():
            if value is not None:
                args += [flag, str(value)]
        # Sets (the seed writes tags={"gpu", "fast"}) have no order; sorting keeps the
        # published document the same from run to run.
        for tag in sorted(self.tags):
            args += ["--tag", tag]
        return args
