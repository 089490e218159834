"""The task service: a Socket.IO server (python-socketio on aiohttp) that runs task functions
for Gleitzeit workers.

Workers connect as clients and authenticate by a mutual challenge-response over the shared
token (``gleitzeit.handshake``; the token itself never crosses the wire): the worker connects
with a nonce, ``service:hello`` carries the service's nonce and proof, the worker answers with
``worker:auth`` and the service confirms with ``service:auth``. Only then are ``task:call``s
served, one ``task:result`` each (protocol v2, ``gleitzeit.protocol``). With a certificate and
key the service speaks TLS (``https``/``wss``). The service bounds
the calls it runs at once (``max_concurrency``, answering ``overloaded`` at the limit instead of
queueing without bound), runs plain functions in its own thread pool so the event loop stays
free, deduplicates by idempotency key, and keeps itself registered in Redis when given a URL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import inspect
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import time
import traceback as tb
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web

from .. import discovery, handshake
from ..dedup import ResultCache
from ..protocol import (
    EVENT_CALL,
    EVENT_HELLO,
    EVENT_RESULT,
    EVENT_SERVICE_AUTH,
    EVENT_WORKER_AUTH,
    KIND_BAD_REQUEST,
    KIND_EXCEPTION,
    KIND_NOT_JSON,
    KIND_OVERLOADED,
    KIND_TIMEOUT,
    KIND_UNKNOWN_FUNCTION,
    PROTOCOL_VERSION,
    Call,
    ConnectAuth,
    ErrorInfo,
    Hello,
    ProtocolError,
    Result,
    ServiceAuth,
    WorkerAuth,
    unwrap_payload,
)
from ..registry import RetryableError, TaskFunction, resolve_functions

log = logging.getLogger("gleitzeit.service")

DEFAULT_SERVICE_NAME = "Python Tasks"
DEFAULT_PORT = 8765
DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_DEDUP_SIZE = 1024
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
DEFAULT_DRAIN_TIMEOUT = 30.0
#: Seconds aiohttp may wait for connections to close after the service disconnected them.
SHUTDOWN_TIMEOUT = 2.0

ENV_TOKEN = "GLEITZEIT_SERVICE_TOKEN"
ENV_TOKEN_FILE = "GLEITZEIT_SERVICE_TOKEN_FILE"
ENV_ADVERTISE = "GLEITZEIT_SERVICE_ADVERTISE"
ENV_TLS_CERT = "GLEITZEIT_SERVICE_TLS_CERT"
ENV_TLS_KEY = "GLEITZEIT_SERVICE_TLS_KEY"

# Long texts are cut so one failing call cannot produce a multi-megabyte answer.
MAX_MESSAGE_CHARS = 8 * 1024
MAX_TRACEBACK_CHARS = 32 * 1024


class ServiceConfigError(ValueError):
    """The service cannot start with this configuration (no token, bad value, nothing to
    serve). Fix the configuration; retrying cannot help."""


@dataclass
class _Peer:
    """One connected client's half of the handshake: its nonce, this service's nonce for it,
    and whether its proof has been accepted."""

    worker_nonce: str
    service_nonce: str
    authenticated: bool = False


def load_tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from a PEM certificate (chain) and key, or ``None`` when neither is
    given. Arguments default to env ``GLEITZEIT_SERVICE_TLS_CERT`` / ``_KEY``. One without the
    other, or files that cannot be loaded, are a ``ServiceConfigError``."""
    cert = cert if cert is not None else os.environ.get(ENV_TLS_CERT) or None
    key = key if key is not None else os.environ.get(ENV_TLS_KEY) or None
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "tls_cert" if cert is None else "tls_key"
        raise ServiceConfigError(
            f"TLS needs both a certificate and a key: {missing} is not set "
            f"(tls_cert=/tls_key=, --tls-cert/--tls-key or {ENV_TLS_CERT}/{ENV_TLS_KEY})"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceConfigError(
            f"cannot load the TLS certificate {cert!r} with key {key!r}: {exc}"
        ) from exc
    return context


@dataclass(frozen=True)
class StopSummary:
    """How a stop went: calls answered during the drain, calls abandoned at the deadline, and
    plain (thread) calls still running that could not be interrupted."""

    drained: int
    abandoned: int
    threads_still_running: int


def resolve_token(auth_token: str | None) -> str | None:
    """The shared token: ``auth_token``, else env ``GLEITZEIT_SERVICE_TOKEN``, else the file named
    by env ``GLEITZEIT_SERVICE_TOKEN_FILE`` (surrounding whitespace stripped). ``None`` if none
    is configured. An explicitly configured but empty token is an error."""
    if auth_token is not None:
        if not isinstance(auth_token, str) or not auth_token.strip():
            raise ServiceConfigError("auth_token must be a non-empty string")
        return auth_token
    env_token = os.environ.get(ENV_TOKEN)
    if env_token:
        return env_token
    path = os.environ.get(ENV_TOKEN_FILE)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ServiceConfigError(f"cannot read {ENV_TOKEN_FILE}={path}: {exc}") from exc
        if not token:
            raise ServiceConfigError(f"{ENV_TOKEN_FILE}={path} is empty")
        return token
    return None


def _clip(text: str, limit: int, keep_tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    if keep_tail:
        return "...(truncated)\n" + text[-limit:]
    return text[:limit] + "...(truncated)"


def _new_instance_id() -> str:
    host = socket.gethostname().replace("{", "").replace("}", "") or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ServiceConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _non_negative_seconds(value: Any, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ServiceConfigError(f"{what} must be a number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0) or value != value:
        raise ServiceConfigError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


class _Encoded:
    """A function's return value after the JSON check (done where the function ran, so a large
    result is encoded off the event loop)."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: ErrorInfo | None = None) -> None:
        self.value = value
        self.error = error


def _encode_return(task: TaskFunction, value: Any) -> _Encoded:
    try:
        # Strict JSON: NaN/Infinity are not JSON, and the Rust side would reject them.
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return _Encoded(
            error=ErrorInfo(
                kind=KIND_NOT_JSON,
                type=type(exc).__name__,
                message=_clip(
                    f"function {task.name!r} returned a {type(value).__name__} that JSON cannot "
                    f"encode: {exc}",
                    MAX_MESSAGE_CHARS,
                ),
                retryable=False,
            )
        )
    # Decoding again hands Socket.IO exactly the JSON value the check accepted (tuples become
    # lists, integer keys become strings), so what is sent is what was checked.
    return _Encoded(value=json.loads(text))


def _run_sync(task: TaskFunction, args: list, kwargs: dict) -> _Encoded:
    return _encode_return(task, task.func(*args, **kwargs))


def _retrieve_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _request_id_of(payload: tuple[Any, ...]) -> str | None:
    """The request id of a call payload, if one can be read at all."""
    try:
        request_id = unwrap_payload(payload).get("request_id")
    except (ProtocolError, AttributeError):
        return None
    return request_id if isinstance(request_id, str) and request_id else None


def _exception_error(exc: BaseException) -> ErrorInfo:
    text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(
        kind=KIND_EXCEPTION,
        type=type(exc).__name__,
        message=_clip(str(exc), MAX_MESSAGE_CHARS),
        traceback=_clip(text, MAX_TRACEBACK_CHARS, keep_tail=True),
        retryable=isinstance(exc, RetryableError),
    )


class TaskService:
    """A running task service (see the module doc). ``await start()``, ``await stop()``; also an
    async context manager. With ``port=0`` the OS picks a free port, readable as ``port``.

    Every setting is checked in the constructor, before any socket opens, and raises
    ``ServiceConfigError``. ``functions=None`` serves the functions registered at construction
    time.
    """

    def __init__(
        self,
        name: str = DEFAULT_SERVICE_NAME,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        redis_url: str | None = None,
        namespace: str = discovery.DEFAULT_NAMESPACE,
        auth_token: str | None = None,
        allow_unauthenticated: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        functions: Iterable[str | Callable[..., Any] | TaskFunction] | None = None,
        dedup_size: int = DEFAULT_DEDUP_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        advertise_host: str | None = None,
        registration_ttl: float = discovery.DEFAULT_TTL,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        instance_id: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        # Everything is validated here, before any socket opens.
        try:
            self.name = discovery.validate_service_name(name)
            self.namespace = discovery.validate_namespace(namespace)
        except discovery.DiscoveryError as exc:
            raise ServiceConfigError(str(exc)) from exc
        if not isinstance(host, str) or not host:
            raise ServiceConfigError(f"host must be a non-empty string, got {host!r}")
        self.host = host
        self._requested_port = _positive_int(port, "port", minimum=0)
        if self._requested_port > 65535:
            raise ServiceConfigError(f"port must be <= 65535, got {port!r}")
        self.max_concurrency = _positive_int(max_concurrency, "max_concurrency")
        self.max_message_size = _positive_int(max_message_size, "max_message_size")
        self.dedup_size = _positive_int(dedup_size, "dedup_size", minimum=0)
        self.registration_ttl = _non_negative_seconds(
            registration_ttl, "registration_ttl", positive=True
        )
        self.drain_timeout = _non_negative_seconds(drain_timeout, "drain_timeout")
        if redis_url is not None:
            from gleitzeit import redis_client
            from gleitzeit.submitter import redact_url

            text = redis_url if isinstance(redis_url, str) else ""
            scheme = text.partition("://")[0].lower() if "://" in text else ""
            known = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
            if scheme not in known + ("redis+cluster", "rediss+cluster"):
                shown = redact_url(text) if text else repr(redis_url)
                raise ServiceConfigError(
                    "redis_url must be a redis://, rediss://, unix://, redis+sentinel:// or "
                    f"redis+cluster:// URL or None, got {shown}"
                )
            try:
                if redis_client.is_sentinel_url(text):
                    redis_client.parse_sentinel_url(text)
                elif redis_client.is_cluster_url(text):
                    redis_client.parse_cluster_url(text)
            except redis_client.RedisUrlError as exc:
                raise ServiceConfigError(str(exc)) from exc
        self.redis_url = redis_url
        self._token = resolve_token(auth_token)
        if self._token is None and not allow_unauthenticated:
            raise ServiceConfigError(
                f"no service token configured: pass auth_token=, set {ENV_TOKEN} or "
                f"{ENV_TOKEN_FILE} (allow_unauthenticated=True exists for local development only)"
            )
        self.allow_unauthenticated = self._token is None
        self._tls = load_tls_context(tls_cert, tls_key)
        self._functions: dict[str, TaskFunction] = resolve_functions(functions)
        if not self._functions:
            raise ServiceConfigError("no functions to serve: decorate some with @gleitzeit_task")
        if advertise_host is None:
            advertise_host = os.environ.get(ENV_ADVERTISE) or None
        self._advertise_host = advertise_host
        self.instance_id = instance_id or _new_instance_id()
        try:
            discovery.instance_key(self.namespace, self.name, self.instance_id)
        except discovery.DiscoveryError as exc:
            raise ServiceConfigError(str(exc)) from exc

        #: Bound of each step closing connections at stop (see ``_close_transport``).
        self.shutdown_timeout = SHUTDOWN_TIMEOUT
        self._cache = ResultCache(self.dedup_size)
        self._sio: socketio.AsyncServer | None = None
        self._runner: web.AppRunner | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._registrar: discovery.Registrar | None = None
        self._redis: Any = None
        self._port: int | None = None
        self._accepting = False
        self._started = False
        self._stopping: asyncio.Future | None = None
        self._force_stop = asyncio.Event()
        self._clients: set[str] = set()
        self._peers: dict[str, _Peer] = {}
        self._calls: set[asyncio.Task] = set()  # call handlers, awaited by the drain
        self._background: set[asyncio.Task] = set()  # hello senders (kept referenced)
        self._running = 0  # calls holding a concurrency slot (threads included)
        self._threads_running = 0
        self.started_ms = 0

    # ----------------------------------------------------------------------------- properties

    @property
    def functions(self) -> dict[str, TaskFunction]:
        return dict(self._functions)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the service is not started")
        return self._port

    @property
    def advertised_host(self) -> str:
        host = self._advertise_host or self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return host

    @property
    def tls(self) -> bool:
        """Whether the service speaks TLS (``https``/``wss``)."""
        return self._tls is not None

    @property
    def url(self) -> str:
        """The advertised URL, ``http://host:port`` (``https://`` with TLS). It is registered
        in Redis and bound into the handshake proof."""
        host = self.advertised_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def accepting(self) -> bool:
        """True while new connections and calls are taken (between start and stop)."""
        return self._accepting

    @property
    def running_calls(self) -> int:
        """Calls holding a concurrency slot right now."""
        return self._running

    @property
    def running_threads(self) -> int:
        """Plain-function calls whose thread is still running (also after a timeout)."""
        return self._threads_running

    @property
    def requested_port(self) -> int:
        return self._requested_port

    def hello(self, worker_nonce: str, service_nonce: str) -> Hello:
        """The ``service:hello`` for a client that connected with ``worker_nonce``, proved with
        the token (``proof`` is ``None`` without one). Needs the started service (its URL)."""
        url = self.url
        proof = None
        if self._token is not None:
            proof = handshake.service_proof(
                self._token, self._proof_input(url, worker_nonce, service_nonce)
            )
        return Hello(
            protocol=PROTOCOL_VERSION,
            service=self.name,
            instance=self.instance_id,
            functions=tuple(t.info() for t in self._functions.values()),
            max_concurrency=self.max_concurrency,
            url=url,
            nonce=service_nonce,
            proof=proof,
        )

    def _proof_input(self, url: str, worker_nonce: str, service_nonce: str) -> handshake.ProofInput:
        return handshake.ProofInput(
            service=self.name,
            instance=self.instance_id,
            url=url,
            worker_nonce=worker_nonce,
            service_nonce=service_nonce,
        )

    # ------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TaskService:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the port, start serving and (with ``redis_url``) register in Redis."""
        if self._started:
            raise RuntimeError("the service was already started")
        self._started = True
        if self.allow_unauthenticated:
            log.warning(
                "SERVICE %r ACCEPTS UNAUTHENTICATED CONNECTIONS: anyone who can reach %s:%s "
                "can run its functions. Use this for local development only.",
                self.name,
                self.host,
                self._requested_port,
            )
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="gleitzeit-task"
        )
        sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=[],
            max_http_buffer_size=self.max_message_size,
            logger=False,
            engineio_logger=False,
        )
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on(EVENT_CALL, self._on_call)
        sio.on(EVENT_WORKER_AUTH, self._on_worker_auth)
        self._sio = sio
        app = web.Application(client_max_size=self.max_message_size)
        sio.attach(app)
        app.router.add_get("/healthz", self._healthz)
        # The transports are closed before cleanup; the timeout only bounds a peer that does not
        # finish its closing handshake.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self.shutdown_timeout
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, ssl_context=self._tls)
            await site.start()
        except OSError:
            await self._close_transport()
            raise
        self._port = int(runner.addresses[0][1])
        self.started_ms = discovery.now_ms()
        self._accepting = True

        if self.redis_url is not None:
            from gleitzeit import redis_client, redis_tls

            try:
                self._redis = redis_client.connect(
                    self.redis_url,
                    socket_timeout=max(1.0, self.registration_ttl / 3),
                    socket_connect_timeout=max(1.0, self.registration_ttl / 3),
                )
            except (redis_tls.TlsConfigError, redis_client.RedisUrlError) as exc:
                await self._close_transport()
                raise ServiceConfigError(str(exc)) from exc
            except ValueError as exc:
                await self._close_transport()
                raise ServiceConfigError(f"invalid redis_url: {exc}") from exc
            registration = discovery.Registration(
                service=self.name,
                instance=self.instance_id,
                url=self.url,
                functions=[t.info() for t in self._functions.values()],
                max_concurrency=self.max_concurrency,
                started_ms=self.started_ms,
            )
            self._registrar = discovery.Registrar(
                self._redis, self.namespace, registration, ttl=self.registration_ttl
            )
            await self._registrar.start()
        log.info(
            "service %r serving %d function(s) [%s] on %s:%d as %s (instance %s)",
            self.name,
            len(self._functions),
            ", ".join(self._functions),
            self.host,
            self._port,
            self.url,
            self.instance_id,
        )

    def force_stop(self) -> None:
        """Make a running or upcoming ``stop()`` skip the rest of its drain."""
        self._force_stop.set()

    async def stop(self, drain_timeout: float | None = None) -> StopSummary:
        """Stop cleanly: stop accepting (new connections refused, new calls answered
        ``overloaded``, Redis registration removed), let calls in flight finish up to
        ``drain_timeout`` (default: the service's), abandon the rest, close. Idempotent."""
        if self._stopping is not None:
            return await asyncio.shield(self._stopping)
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            summary = await self._stop(
                self.drain_timeout if drain_timeout is None else drain_timeout
            )
        except BaseException as exc:
            self._stopping.set_exception(exc)
            raise
        self._stopping.set_result(summary)
        return summary

    async def _stop(self, drain_timeout: float) -> StopSummary:
        if not self._started:
            return StopSummary(drained=0, abandoned=0, threads_still_running=0)
        self._accepting = False
        if self._registrar is not None:
            await self._registrar.stop(deregister=True)
        pending = {t for t in self._calls if not t.done()}
        drained = abandoned = 0
        if pending:
            log.info("draining %d call(s) in flight (up to %.1fs)", len(pending), drain_timeout)
            force = asyncio.ensure_future(self._force_stop.wait())
            try:
                await self._wait_drain(pending, force, drain_timeout)
            finally:
                force.cancel()
            left = {t for t in pending if not t.done()}
            drained = len(pending) - len(left)
            abandoned = len(left)
            if left:
                log.warning("abandoning %d call(s) still running at the drain deadline", len(left))
                for task in left:
                    task.cancel()
                await asyncio.gather(*left, return_exceptions=True)
        threads = self._threads_running
        if threads:
            log.warning(
                "%d plain function call(s) are still running in threads and cannot be "
                "interrupted; their results are discarded",
                threads,
            )
        await self._close_transport()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception as exc:  # closing a broken connection must not fail the stop
                log.debug("closing the Redis client failed: %s", exc)
        log.info("service %r stopped (instance %s)", self.name, self.instance_id)
        return StopSummary(drained=drained, abandoned=abandoned, threads_still_running=threads)

    async def _wait_drain(
        self, pending: set[asyncio.Task], force: asyncio.Future[Any], timeout: float
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        remaining = set(pending)
        while remaining:
            left = deadline - loop.time()
            if left <= 0:
                return
            done, _ = await asyncio.wait(
                remaining | {force}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if force in done:
                return
            remaining -= done

    async def _close_transport(self) -> None:
        sio = self._sio
        if sio is not None:
            # Disconnect every client's namespace (they see a server disconnect), then close the
            # Engine.IO transports: aiohttp's shutdown would otherwise wait for the open
            # websockets' handlers to end on their own. Each step is bounded: closing a socket
            # whose peer is closing at the same moment can wait forever for a writer that has
            # already gone.
            for sid in list(self._clients):
                await self._bounded(sio.disconnect(sid), f"disconnecting {sid}")
            if sio.eio.sockets:
                await self._bounded(sio.eio.disconnect(), "closing the Engine.IO transports")
            await self._bounded(sio.shutdown(), "stopping the Socket.IO background tasks")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _bounded(self, step: Awaitable[Any], what: str) -> None:
        try:
            await asyncio.wait_for(step, self.shutdown_timeout)
        except asyncio.TimeoutError:
            log.warning("%s did not finish within %.1fs; going on", what, self.shutdown_timeout)
        except Exception as exc:
            log.debug("%s failed: %s", what, exc)

    async def serve_until_signalled(self) -> None:
        """Serve until SIGTERM/SIGINT (or cancellation), then stop cleanly. A second signal
        ends the drain at once."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second %s: skipping the drain", signal.Signals(signum).name)
                self.force_stop()
            else:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread or not a Unix loop: cancellation still stops the service.
                pass
        try:
            await stop.wait()
        finally:
            try:
                await self.stop()
            finally:
                for signum in installed:
                    loop.remove_signal_handler(signum)

    # ------------------------------------------------------------------------------- handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        status = 200 if self._accepting else 503
        return web.json_response(
            {"service": self.name, "instance": self.instance_id, "accepting": self._accepting},
            status=status,
        )

    async def _on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        request = environ.get("aiohttp.request")
        peer = getattr(request, "remote", None) or "?"
        if not self._accepting:
            raise socketio.exceptions.ConnectionRefusedError("service is shutting down")
        try:
            worker_nonce = ConnectAuth.from_json(auth).nonce
        except ProtocolError as exc:
            if self._token is not None:
                # Nothing offered is logged: a protocol 1 client sends the token itself, which
                # may be a real token of another deployment.
                why = (
                    "it sent a token (protocol 1); this service speaks protocol 2 and never "
                    "accepts a token on the wire"
                    if isinstance(auth, dict) and "token" in auth
                    else str(exc)
                )
                log.warning("refused connection %s from %s: %s", sid, peer, why)
                raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
            worker_nonce = handshake.new_nonce()  # development mode: nothing is proved anyway
        self._peers[sid] = _Peer(worker_nonce=worker_nonce, service_nonce=handshake.new_nonce())
        self._clients.add(sid)
        log.info("client %s connected from %s", sid, peer)
        task = asyncio.ensure_future(self._send_hello(sid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._clients.discard(sid)
        self._peers.pop(sid, None)
        log.info("client %s disconnected (%s)", sid, reason)

    async def _send_hello(self, sid: str) -> None:
        sio = self._sio
        if sio is None:
            return
        # python-socketio confirms the namespace connect only after the connect handler has
        # returned, and has no hook for "confirmed"; an event emitted earlier would reach the
        # client before its connect and be dropped. Usually one yield suffices.
        for attempt in range(400):
            if sid not in self._clients:
                return
            if sio.manager.is_connected(sid, "/"):
                break
            await asyncio.sleep(0 if attempt == 0 else 0.005)
        peer = self._peers.get(sid)
        if peer is None:
            return
        hello = self.hello(peer.worker_nonce, peer.service_nonce)
        await sio.emit(EVENT_HELLO, hello.to_json(), to=sid)

    async def _on_worker_auth(self, sid: str, *payload: Any) -> None:
        """Verify a client's proof; accept it, or refuse and disconnect it."""
        sio = self._sio
        peer = self._peers.get(sid)
        if sio is None or peer is None:
            return
        if self._token is None:
            peer.authenticated = True  # development mode: there is nothing to verify against
            await sio.emit(EVENT_SERVICE_AUTH, ServiceAuth(accepted=True).to_json(), to=sid)
            return
        try:
            proof = WorkerAuth.from_json(unwrap_payload(payload)).proof
            reason = None
        except ProtocolError as exc:
            proof, reason = None, f"malformed worker:auth: {exc}"
        if proof is not None:
            data = self._proof_input(self.url, peer.worker_nonce, peer.service_nonce)
            if handshake.verify_worker_proof(self._token, data, proof):
                peer.authenticated = True
                log.info("client %s authenticated", sid)
                await sio.emit(EVENT_SERVICE_AUTH, ServiceAuth(accepted=True).to_json(), to=sid)
                return
            reason = "the worker's proof does not match this service's token"
        peer.authenticated = False
        log.error(
            "refused client %s of service %r (instance %s): %s; disconnecting it",
            sid,
            self.name,
            self.instance_id,
            reason,
        )
        await sio.emit(
            EVENT_SERVICE_AUTH, ServiceAuth(accepted=False, message=reason).to_json(), to=sid
        )
        await sio.disconnect(sid)

    def _authenticated(self, sid: str) -> bool:
        peer = self._peers.get(sid)
        return peer is not None and (peer.authenticated or self._token is None)

    async def _on_call(self, sid: str, *payload: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        try:
            try:
                if self._authenticated(sid):
                    result = await self._answer(payload)
                else:
                    result = self._unauthenticated(sid, payload)
            except Exception as exc:
                # A fault of the service itself, not of the function: answer anyway so the
                # worker does not wait for its timeout, and say that trying again may help.
                log.exception("internal error while serving a call")
                result = Result.failure(
                    _request_id_of(payload),
                    ErrorInfo(
                        kind=KIND_EXCEPTION,
                        type=type(exc).__name__,
                        message=_clip(f"internal service error: {exc}", MAX_MESSAGE_CHARS),
                        retryable=True,
                    ),
                )
            if self._sio is not None:
                await self._sio.emit(EVENT_RESULT, result.to_json(), to=sid)
        finally:
            if task is not None:
                self._calls.discard(task)

    async def _answer(self, payload: tuple[Any, ...]) -> Result:
        try:
            call = Call.from_json(unwrap_payload(payload))
        except ProtocolError as exc:
            log.warning("bad request: %s", exc)
            return Result.failure(
                exc.request_id,
                ErrorInfo(
                    kind=KIND_BAD_REQUEST, type="BadRequest", message=str(exc), retryable=False
                ),
            )
        result = await self._serve(call)
        return dataclasses.replace(result, request_id=call.request_id)

    async def _serve(self, call: Call) -> Result:
        task = self._functions.get(call.function)
        if task is None:
            return Result.failure(
                call.request_id,
                ErrorInfo(
                    kind=KIND_UNKNOWN_FUNCTION,
                    type="UnknownFunction",
                    message=_clip(
                        f"service {self.name!r} has no function {call.function!r} "
                        f"(it serves: {', '.join(self._functions)})",
                        MAX_MESSAGE_CHARS,
                    ),
                    retryable=False,
                ),
            )
        try:
            inspect.signature(task.func).bind(*call.args, **call.kwargs)
        except TypeError as exc:
            return self._bad_request(call, f"arguments do not fit {task.name}: {exc}")
        except ValueError:
            pass  # no inspectable signature (some builtins): let the call itself decide

        key = (call.function, call.idempotency_key) if call.idempotency_key is not None else None
        if key is not None:
            cached = self._cache.get(key)
            if cached is not None:
                log.info(
                    "call %s (%s): answered from the idempotency cache",
                    call.request_id,
                    call.idempotency_key,
                )
                return cached
            running = self._cache.running(key)
            if running is not None:
                log.info(
                    "call %s (%s): joining the run in progress",
                    call.request_id,
                    call.idempotency_key,
                )
                return await asyncio.shield(running)

        if not self._accepting:
            return self._overloaded(call, f"service {self.name!r} is shutting down")
        if self._running >= self.max_concurrency:
            return self._overloaded(
                call,
                f"service {self.name!r} is running max_concurrency={self.max_concurrency} calls",
            )

        if key is not None:
            self._cache.begin(key)
        try:
            result = await self._execute(task, call)
        except BaseException:
            if key is not None:
                self._cache.abandon(key)
            raise
        if key is not None:
            remember = result.ok or (result.error is not None and not result.error.retryable)
            self._cache.finish(key, result, remember=remember)
        return result

    def _unauthenticated(self, sid: str, payload: tuple[Any, ...]) -> Result:
        """The answer to a call on a connection whose proof was not accepted: refused, nothing
        runs."""
        log.warning("refused a call from client %s: the handshake is not complete", sid)
        return Result.failure(
            _request_id_of(payload),
            ErrorInfo(
                kind=KIND_BAD_REQUEST,
                type="Unauthenticated",
                message=(
                    "not authenticated: send worker:auth with a valid proof and wait for "
                    "service:auth before task:call"
                ),
                retryable=False,
            ),
        )

    def _bad_request(self, call: Call, message: str) -> Result:
        return Result.failure(
            call.request_id,
            ErrorInfo(
                kind=KIND_BAD_REQUEST,
                type="BadRequest",
                message=_clip(message, MAX_MESSAGE_CHARS),
                retryable=False,
            ),
        )

    def _overloaded(self, call: Call, message: str) -> Result:
        return Result.failure(
            call.request_id,
            ErrorInfo(kind=KIND_OVERLOADED, type="Overloaded", message=message, retryable=True),
        )

    def _effective_timeout(self, task: TaskFunction, call: Call) -> float | None:
        limits = [t for t in (task.timeout, call.timeout_ms and call.timeout_ms / 1000) if t]
        return min(limits) if limits else None

    def _release_slot(self) -> None:
        self._running -= 1

    def _thread_finished(self) -> None:
        self._threads_running -= 1
        self._running -= 1

    async def _execute(self, task: TaskFunction, call: Call) -> Result:
        """Run one call holding a concurrency slot until the work has really ended (for a plain
        function that may be after its timeout was answered: threads cannot be interrupted)."""
        loop = asyncio.get_running_loop()
        timeout = self._effective_timeout(task, call)
        started = time.monotonic()
        self._running += 1
        work: asyncio.Future[Any]
        if task.is_async:
            try:
                work = asyncio.ensure_future(task.func(*call.args, **call.kwargs))
            except BaseException:
                self._release_slot()
                raise
            work.add_done_callback(lambda _f: self._release_slot())
        else:
            executor = self._executor
            if executor is None:
                self._release_slot()
                raise RuntimeError("the service is not started")
            self._threads_running += 1
            ctx = contextvars.copy_context()
            try:
                cfut = executor.submit(ctx.run, _run_sync, task, call.args, call.kwargs)
            except RuntimeError:  # executor already shut down
                self._thread_finished()
                return self._overloaded(call, f"service {self.name!r} is shutting down")

            def done_in_thread(_f: concurrent.futures.Future) -> None:
                # A closed loop raises RuntimeError: then nobody counts slots any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._thread_finished)

            cfut.add_done_callback(done_in_thread)
            work = asyncio.wrap_future(cfut)
        # An outcome that arrives after a timeout is not awaited by anyone; retrieving it keeps
        # asyncio from logging it as "never retrieved".
        work.add_done_callback(_retrieve_outcome)

        try:
            done, _ = await asyncio.wait({work}, timeout=timeout)
        except asyncio.CancelledError:
            work.cancel()
            raise
        duration_ms = int((time.monotonic() - started) * 1000)
        if work not in done:
            if task.is_async:
                work.cancel()
            log.warning(
                "call %s (%s) timed out after %.3fs", call.request_id, task.name, timeout or 0
            )
            return Result.failure(
                call.request_id,
                ErrorInfo(
                    kind=KIND_TIMEOUT,
                    type="TimeoutError",
                    message=f"function {task.name!r} did not finish within {timeout:g}s",
                    retryable=True,
                ),
            )
        if work.cancelled():
            return Result.failure(
                call.request_id,
                ErrorInfo(
                    kind=KIND_EXCEPTION,
                    type="CancelledError",
                    message=f"function {task.name!r} was cancelled",
                    retryable=True,
                ),
            )
        exc = work.exception()
        if exc is not None:
            log.info("call %s (%s) raised %s", call.request_id, task.name, type(exc).__name__)
            return Result.failure(call.request_id, _exception_error(exc))
        outcome = work.result()
        encoded = outcome if isinstance(outcome, _Encoded) else _encode_return(task, outcome)
        if encoded.error is not None:
            return Result.failure(call.request_id, encoded.error)
        return Result.success(call.request_id, encoded.value, duration_ms)


__all__ = [
    "ServiceConfigError",
    "StopSummary",
    "TaskService",
    "resolve_token",
]
