"""Fixtures: a real redis-server on a free port, running services, and a Socket.IO client."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

import pytest
import socketio

import taskfns
from gleitzeit import TaskService, handshake
from gleitzeit.protocol import (
    EVENT_CALL,
    EVENT_HELLO,
    EVENT_RESULT,
    EVENT_SERVICE_AUTH,
    EVENT_WORKER_AUTH,
    Hello,
    Result,
    ServiceAuth,
    WorkerAuth,
)

TOKEN = "test-token-7f3c"
#: Upper bound for awaiting an event in a test: reached only when the behaviour under test is
#: broken (then the test fails instead of hanging), never part of what is asserted.
GUARD = 15.0

_ids = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server process on a free port, killed when the test ends."""

    #: Ports tried before giving up: a free port can be taken by another process before the
    #: server binds it, and a cluster node's bus port (port + 10000) must exist too; either
    #: shows as the server exiting at once, and another port is tried.
    PORT_ATTEMPTS = 20

    def __init__(self, port: int | None = None, extra_args: tuple = ()) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.dir = tempfile.mkdtemp(prefix="gleitzeit-redis-")
        for _ in range(1 if port else self.PORT_ATTEMPTS):
            self.port = port or free_port()
            self.proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    *extra_args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._ready():
                return
        self.stop()
        pytest.fail(f"redis-server did not start (exit code {self.proc.returncode})")

    def _ready(self) -> bool:
        """Whether the server answers PING (a bounded number of attempts); False when it
        exited first (the port was taken or unusable)."""
        for _ in range(500):
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.01)
        self.stop()
        pytest.fail("redis-server did not answer PING")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterProcesses:
    """``primaries`` redis-server processes in cluster mode joined by ``redis-cli --cluster
    create`` (no replicas), killed when the test ends."""

    def __init__(self, primaries: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            pytest.fail("redis-cli is not installed (apt-get install redis-tools)")
        self.nodes = [
            RedisServer(extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"))
            for _ in range(primaries)
        ]
        try:
            subprocess.run(
                ["redis-cli", "--cluster", "create"]
                + [f"127.0.0.1:{n.port}" for n in self.nodes]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=GUARD,
            )
            self._settle()
        except BaseException:
            self.stop()
            raise

    def _settle(self) -> None:
        """Until every node says the cluster is ok and knows every node (bounded by GUARD)."""
        import redis

        deadline = time.monotonic() + GUARD
        for n in self.nodes:
            with redis.Redis(port=n.port, decode_responses=True, socket_timeout=2) as r:
                while True:
                    info = r.cluster("info")
                    if (
                        info.get("cluster_state") == "ok"
                        and int(info.get("cluster_known_nodes", 0)) == len(self.nodes)
                    ):
                        break
                    if time.monotonic() > deadline:
                        pytest.fail(f"the cluster did not settle: {info}")
                    time.sleep(0.05)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class SentinelProcess:
    """A redis-server in sentinel mode watching the primary on ``primary_port`` under the
    service name ``gleitzeit`` (quorum 1), killed when the test ends."""

    SERVICE = "gleitzeit"

    def __init__(self, primary_port: int) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.dir = tempfile.mkdtemp(prefix="gleitzeit-sentinel-")
        self.port = free_port()
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary_port} 1\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
            )
        self.proc = subprocess.Popen(
            [exe, conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_until(lambda: self.admin("PING") or None, "the sentinel to answer")

    def admin(self, *args: str) -> Any:
        import redis

        with redis.Redis(port=self.port, decode_responses=True, socket_timeout=2) as r:
            return r.execute_command(*args)

    def wait_until(self, probe, what: str) -> Any:
        """Polls ``probe`` (bounded by :data:`GUARD`) until it returns something not None;
        errors count as not yet."""
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the sentinel exited with {self.proc.returncode}")
            try:
                value = probe()
            except Exception:  # noqa: BLE001 - not answering yet is what is waited out
                value = None
            if value is not None:
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}")

    def primary_port(self) -> int:
        host, port = self.admin("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        return int(port)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.SERVICE}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server):
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
def _clean_env_and_gates(monkeypatch):
    for var in (
        "GLEITZEIT_SERVICE_TOKEN",
        "GLEITZEIT_SERVICE_TOKEN_FILE",
        "GLEITZEIT_SERVICE_ADVERTISE",
        "GLEITZEIT_SERVICE_TLS_CERT",
        "GLEITZEIT_SERVICE_TLS_KEY",
        "GLEITZEIT_SERVICE_NAME",
        "GLEITZEIT_SERVICE_HOST",
        "GLEITZEIT_SERVICE_PORT",
        "GLEITZEIT_REDIS_URL",
        "GLEITZEIT_NAMESPACE",
        "GLEITZEIT_DEFAULT_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    taskfns.reset()
    yield
    taskfns.reset()


class ServiceNotProven(Exception):
    """The service's proof in its hello did not verify with the client's token."""


class Client:
    """A worker-like Socket.IO client: the handshake of a worker (``connect``), request ids of
    its own, results as events. ``sio_options`` go to ``socketio.AsyncClient`` (TLS tests pass
    an ``http_session`` trusting their CA)."""

    def __init__(self, **sio_options: Any) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, **sio_options)
        self.nonce = handshake.new_nonce()
        self.hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        self.verdict: asyncio.Future[ServiceAuth] = asyncio.get_running_loop().create_future()
        self.results: dict[str | None, asyncio.Future[Result]] = {}
        self.order: list[str | None] = []  # request ids in the order results arrived
        self.connect_errors: list[Any] = []
        self.disconnected = asyncio.Event()
        self.sio.on(EVENT_HELLO, self._on_hello)
        self.sio.on(EVENT_RESULT, self._on_result)
        self.sio.on(EVENT_SERVICE_AUTH, self._on_service_auth)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_hello(self, data: Any) -> None:
        if not self.hello.done():
            self.hello.set_result(Hello.from_json(data))

    async def _on_service_auth(self, data: Any) -> None:
        if not self.verdict.done():
            self.verdict.set_result(ServiceAuth.from_json(data))

    async def _on_result(self, data: Any) -> None:
        result = Result.from_json(data)
        self.order.append(result.request_id)
        self._future(result.request_id).set_result(result)

    async def _on_connect_error(self, data: Any) -> None:
        self.connect_errors.append(data)

    async def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    def _future(self, request_id: str | None) -> asyncio.Future[Result]:
        if request_id not in self.results:
            self.results[request_id] = asyncio.get_running_loop().create_future()
        return self.results[request_id]

    async def connect(self, url: str, token: str | None = TOKEN) -> None:
        """Connect with a fresh nonce and, with a ``token``, run the worker's handshake (raises
        ``ServiceNotProven`` if the service's proof does not verify, like a worker stops)."""
        await self.open(url)
        if token is not None:
            await self.authenticate(token)

    async def open(self, url: str, auth: Any = ...) -> None:
        """The Socket.IO connect alone, with this client's nonce as ``auth`` unless given."""
        auth = {"nonce": self.nonce} if auth is ... else auth
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=GUARD)

    def proof_input(self, hello: Hello) -> handshake.ProofInput:
        return handshake.ProofInput(
            service=hello.service,
            instance=hello.instance,
            url=hello.url,
            worker_nonce=self.nonce,
            service_nonce=hello.nonce,
        )

    async def authenticate(self, token: str, *, insist: bool = False) -> ServiceAuth:
        """Verify the hello's proof, send this client's proof, return the service's verdict.
        ``insist``: send the proof even when the service's proof fails (no worker does that;
        tests of the service's own check do)."""
        hello = await asyncio.wait_for(asyncio.shield(self.hello), GUARD)
        data = self.proof_input(hello)
        if not handshake.verify_service_proof(token, data, hello.proof) and not insist:
            raise ServiceNotProven(f"instance {hello.instance} did not prove the token")
        await self.send_proof(handshake.worker_proof(token, data))
        return await asyncio.wait_for(asyncio.shield(self.verdict), GUARD)

    async def send_proof(self, proof: str) -> None:
        await self.sio.emit(EVENT_WORKER_AUTH, WorkerAuth(proof=proof).to_json())

    async def send(
        self,
        function: str,
        *args: Any,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        timeout_ms: int | None = None,
        **kwargs: Any,
    ) -> str:
        request_id = request_id or f"req-{next(_ids)}-{uuid.uuid4()}"
        self._future(request_id)
        await self.sio.emit(
            EVENT_CALL,
            {
                "request_id": request_id,
                "task_id": f"wf:{next(_ids)}",
                "idempotency_key": idempotency_key,
                "function": function,
                "args": list(args),
                "kwargs": kwargs,
                "timeout_ms": timeout_ms,
            },
        )
        return request_id

    async def result(self, request_id: str | None) -> Result:
        return await asyncio.wait_for(asyncio.shield(self._future(request_id)), GUARD)

    async def call(self, function: str, *args: Any, **kwargs: Any) -> Result:
        return await self.result(await self.send(function, *args, **kwargs))

    async def close(self) -> None:
        await self.sio.disconnect()


@pytest.fixture
async def make_service():
    services: list[TaskService] = []

    async def make(**options: Any) -> TaskService:
        options.setdefault("port", 0)
        options.setdefault("auth_token", TOKEN)
        options.setdefault("name", "Test Tasks")
        options.setdefault("drain_timeout", 5.0)
        service = TaskService(**options)
        await service.start()
        services.append(service)
        return service

    yield make
    for service in services:
        service.force_stop()
        await service.stop()


@pytest.fixture
async def make_client():
    clients: list[Client] = []

    async def make(url: str, token: str | None = TOKEN, **sio_options: Any) -> Client:
        client = Client(**sio_options)
        clients.append(client)
        await client.connect(url, token)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def service(make_service):
    return await make_service()


@pytest.fixture
async def client(service, make_client):
    return await make_client(f"http://127.0.0.1:{service.port}")


async def wait_thread_event(event, what: str = "event") -> None:
    """Await a ``threading.Event`` set by a task function, without blocking the loop."""
    ok = await asyncio.to_thread(event.wait, GUARD)
    assert ok, f"{what} was not set"


async def until(predicate, what: str = "condition") -> None:
    """Wait for a state change the code under test offers no event for (a slot released by a
    finishing thread, a flag flipped by a task that has not run yet), yielding to the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while not predicate():
        assert loop.time() < deadline, f"{what} never happened"
        await asyncio.sleep(0.001)


def env_with_package() -> dict[str, str]:
    """Environment for subprocesses that import the package from this checkout."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env
