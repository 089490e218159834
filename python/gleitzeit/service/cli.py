"""The ``gleitzeit-service`` command: import task modules and serve their functions.

    gleitzeit-service --name "Python Tasks" --port 8765 --redis-url redis://host:6379 \\
        mymodule other.module

Option defaults come from the environment (``settings.py``, shared with
``start_task_service()``): ``GLEITZEIT_SERVICE_NAME``, ``GLEITZEIT_SERVICE_HOST``,
``GLEITZEIT_SERVICE_PORT``, ``GLEITZEIT_REDIS_URL``, ``GLEITZEIT_NAMESPACE``.
The token comes from ``GLEITZEIT_SERVICE_TOKEN`` / ``GLEITZEIT_SERVICE_TOKEN_FILE`` or
``--token-file``, never from the command line (other users can read it there). With
``--tls-cert``/``--tls-key`` (or ``GLEITZEIT_SERVICE_TLS_CERT``/``_KEY``) it serves https/wss and
registers an ``https://`` address. When the service
listens, one JSON line ``{"event": "ready", ...}`` is printed to stdout for scripts; logs go to
stderr. Exit codes: 0 after a clean shutdown, 1 when serving failed, 2 for bad arguments,
configuration or task modules.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from .. import discovery
from ..registry import RegistrationError, default_registry
from . import settings
from .server import (
    DEFAULT_DEDUP_SIZE,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_MESSAGE_SIZE,
    ENV_ADVERTISE,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ServiceConfigError,
    TaskService,
)

log = logging.getLogger("gleitzeit.service")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser(env: settings.Settings | None = None) -> argparse.ArgumentParser:
    """The command's options; their defaults come from the environment (``settings.py``)."""
    env = env if env is not None else settings.from_environment()
    parser = argparse.ArgumentParser(
        prog="gleitzeit-service",
        description="Serve @gleitzeit_task functions to Gleitzeit workers over Socket.IO.",
        epilog=f"Token: env {ENV_TOKEN} or {ENV_TOKEN_FILE}, or --token-file.",
    )
    parser.add_argument(
        "modules",
        nargs="+",
        metavar="MODULE",
        help="modules to import (dotted names; the current directory is on the path)",
    )
    parser.add_argument(
        "--name",
        default=env.name,
        help=f"service name workflows use (default: env {settings.ENV_NAME} or "
        f"{settings.DEFAULT_SERVICE_NAME!r})",
    )
    parser.add_argument(
        "--host",
        default=env.host,
        help=f"bind address (default: env {settings.ENV_HOST} or {settings.DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env.port,
        help=f"port, 0 for a free one (default: env {settings.ENV_PORT} or "
        f"{settings.DEFAULT_PORT})",
    )
    parser.add_argument(
        "--redis-url",
        default=env.redis_url,
        help="register in this Redis for discovery (default: env "
        "GLEITZEIT_REDIS_URL; none: no registration); rediss:// uses TLS, with the CA and "
        "client certificate from GLEITZEIT_REDIS_TLS_CA, GLEITZEIT_REDIS_TLS_CERT and "
        "GLEITZEIT_REDIS_TLS_KEY; redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE finds "
        "the primary through Redis Sentinel, redis+cluster://HOST:PORT[,HOST:PORT...] uses a "
        "Redis Cluster",
    )
    parser.add_argument(
        "--namespace",
        default=env.namespace,
        help="key namespace (default: env GLEITZEIT_NAMESPACE or gleitzeit)",
    )
    parser.add_argument(
        "--advertise-host",
        default=None,
        help=f"host in the advertised URL (default: env {ENV_ADVERTISE}, else the "
        "bind host; 0.0.0.0 becomes the hostname)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        help=f"calls run at once; more are answered 'overloaded' "
        f"(default: {DEFAULT_MAX_CONCURRENCY})",
    )
    parser.add_argument(
        "--dedup-size",
        type=int,
        default=DEFAULT_DEDUP_SIZE,
        help=f"idempotency keys remembered (default: {DEFAULT_DEDUP_SIZE})",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help="largest accepted message in bytes (default: 16 MiB)",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=discovery.DEFAULT_TTL,
        help=f"registration TTL in seconds (default: {discovery.DEFAULT_TTL:g})",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT,
        help=f"seconds in-flight calls may finish at shutdown (default: {DEFAULT_DRAIN_TIMEOUT:g})",
    )
    parser.add_argument("--token-file", default=None, help="read the shared token from this file")
    parser.add_argument(
        "--tls-cert",
        default=None,
        help="PEM certificate (chain) to serve https/wss with "
        "(default: env GLEITZEIT_SERVICE_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        default=None,
        help="PEM private key of --tls-cert (default: env GLEITZEIT_SERVICE_TLS_KEY)",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve without a token (local development only)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("GLEITZEIT_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR (default: INFO)",
    )
    return parser


def import_modules(names: Sequence[str]) -> list[str]:
    """Import each module; return their names. The current directory goes on ``sys.path``
    first, as ``python -m`` would do, so local task modules are found."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    imported = []
    for name in names:
        importlib.import_module(name)
        imported.append(name)
    return imported


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise ServiceConfigError(f"cannot read --token-file {path}: {exc}") from exc
    if not token:
        raise ServiceConfigError(f"--token-file {path} is empty")
    return token


async def _serve(service: TaskService) -> int:
    try:
        await service.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", service.host, service.requested_port, exc)
        return EXIT_FAILED
    except ServiceConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    ready = {
        "event": "ready",
        "service": service.name,
        "instance": service.instance_id,
        "url": service.url,
        "port": service.port,
        "functions": sorted(service.functions),
    }
    log.info(
        "%s",
        settings.announcement(service.name, service.url, service.redis_url, service.namespace),
    )
    print(json.dumps(ready), flush=True)
    await service.serve_until_signalled()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        env = settings.from_environment()
    except ServiceConfigError as exc:
        print(f"gleitzeit-service: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(env).parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import_modules(args.modules)
    except Exception as exc:  # any error while importing user code is a usage error here
        log.error("cannot import task module: %s: %s", type(exc).__name__, exc)
        return EXIT_USAGE
    if len(default_registry) == 0:
        log.error("no @gleitzeit_task functions found in %s", ", ".join(args.modules))
        return EXIT_USAGE
    try:
        token = _read_token_file(args.token_file) if args.token_file else None
        service = TaskService(
            args.name,
            args.host,
            args.port,
            redis_url=args.redis_url or None,
            namespace=args.namespace,
            auth_token=token,
            allow_unauthenticated=args.allow_unauthenticated,
            max_concurrency=args.max_concurrency,
            dedup_size=args.dedup_size,
            max_message_size=args.max_message_size,
            advertise_host=args.advertise_host,
            registration_ttl=args.ttl,
            drain_timeout=args.drain_timeout,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except (ServiceConfigError, RegistrationError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    code = asyncio.run(_serve(service))
    stuck = service.running_threads
    if stuck:
        # Threads of plain functions cannot be interrupted, and the interpreter would wait for
        # them at exit; the drain deadline has passed, so leave without them.
        log.warning("exiting with %d task thread(s) still running", stuck)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
