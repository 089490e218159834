"""The service's Redis connection over TLS (``rediss://``), against a real TLS redis-server
with a private CA and certificates made by ``openssl`` for each test."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port
from gleitzeit import ServiceConfigError, discovery, redis_tls


def _openssl(cwd: Path, *args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> None:
    """A private CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        d, "req", "-x509", "-days", "2", "-subj", "/CN=Gleitzeit test CA", *ec,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.crt",
    )  # fmt: skip
    for name, cn, ext in (
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
         "extendedKeyUsage=serverAuth\n"),
        ("client", "gleitzeit-client", "extendedKeyUsage=clientAuth\n"),
    ):  # fmt: skip
        (d / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + ext
        )
        _openssl(d, "req", "-new", "-subj", f"/CN={cn}", *ec,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        _openssl(d, "x509", "-req", "-days", "2", "-in", f"{name}.csr", "-CA", "ca.crt",
                 "-CAkey", "ca.key", "-CAcreateserial", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt")  # fmt: skip


class TlsRedisServer:
    """A TLS-only redis-server (``--port 0 --tls-port P``), probed over a Unix socket."""

    def __init__(self, auth_clients: str) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="gleitzeit-redis-tls-"))
        make_certificates(self.dir)
        self.port = free_port()
        sock = str(self.dir / "redis.sock")
        self.proc = subprocess.Popen(
            [
                exe, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(self.dir / "server.crt"),
                "--tls-key-file", str(self.dir / "server.key"),
                "--tls-ca-cert-file", str(self.dir / "ca.crt"),
                "--tls-auth-clients", auth_clients,
                "--unixsocket", sock, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(500):
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(sock)
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        self.stop()
        pytest.fail("redis-server did not answer PING")

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def file(self, name: str) -> str:
        return str(self.dir / name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tls_redis():
    server = TlsRedisServer("optional")
    yield server
    server.stop()


@pytest.fixture
def mtls_redis():
    server = TlsRedisServer("yes")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_tls_env(monkeypatch):
    for var in (redis_tls.ENV_CA, redis_tls.ENV_CERT, redis_tls.ENV_KEY, "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)


async def _registered(server: TlsRedisServer, instance: str) -> list[str]:
    """The live instances of "Test Tasks", read over TLS with the client certificate."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(
        server.url,
        decode_responses=True,
        ssl_ca_certs=server.file("ca.crt"),
        ssl_certfile=server.file("client.crt"),
        ssl_keyfile=server.file("client.key"),
    )
    try:
        live = await discovery.live_instances(client, "gzt-tls", "Test Tasks")
    finally:
        await client.aclose()
    return [r.instance for r in live]


async def test_service_registers_over_tls_with_the_private_ca(make_service, tls_redis, monkeypatch):
    monkeypatch.setenv(redis_tls.ENV_CA, tls_redis.file("ca.crt"))
    service = await make_service(redis_url=tls_redis.url, namespace="gzt-tls")
    assert await _registered(tls_redis, service.instance_id) == [service.instance_id]


async def test_ssl_cert_file_is_honoured(make_service, tls_redis, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_redis.file("ca.crt"))
    service = await make_service(redis_url=tls_redis.url, namespace="gzt-tls")
    assert await _registered(tls_redis, service.instance_id) == [service.instance_id]


async def test_untrusted_server_is_not_registered_and_the_cause_is_logged(
    make_service, tls_redis, caplog
):
    caplog.set_level(logging.WARNING, logger="gleitzeit")
    service = await make_service(redis_url=tls_redis.url, namespace="gzt-tls")
    assert await _registered(tls_redis, service.instance_id) == []
    text = caplog.text.lower()
    assert "registration in redis failed" in text
    assert "certificate verify failed" in text


async def test_client_certificate_from_the_environment(make_service, mtls_redis, monkeypatch):
    monkeypatch.setenv(redis_tls.ENV_CA, mtls_redis.file("ca.crt"))
    monkeypatch.setenv(redis_tls.ENV_CERT, mtls_redis.file("client.crt"))
    monkeypatch.setenv(redis_tls.ENV_KEY, mtls_redis.file("client.key"))
    service = await make_service(redis_url=mtls_redis.url, namespace="gzt-tls")
    assert await _registered(mtls_redis, service.instance_id) == [service.instance_id]


async def test_missing_client_certificate_is_logged(make_service, mtls_redis, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="gleitzeit")
    monkeypatch.setenv(redis_tls.ENV_CA, mtls_redis.file("ca.crt"))
    service = await make_service(redis_url=mtls_redis.url, namespace="gzt-tls")
    assert await _registered(mtls_redis, service.instance_id) == []
    text = caplog.text.lower()
    assert "registration in redis failed" in text
    # Under TLS 1.3 the server checks the client certificate after the client has finished
    # its handshake: the refusal reaches the client either as the server's alert
    # (certificate required) or, when the server closed first, as a reset on the first read.
    assert any(
        cause in text
        for cause in ("certificate required", "certificate_required", "connection reset by peer")
    ), caplog.text


async def test_bad_tls_settings_stop_the_start_naming_the_variable(
    make_service, redis_server, tls_redis, monkeypatch
):
    # A CA for a plain redis:// URL.
    monkeypatch.setenv(redis_tls.ENV_CA, tls_redis.file("ca.crt"))
    with pytest.raises(ServiceConfigError, match="GLEITZEIT_REDIS_TLS_CA is set but"):
        await make_service(redis_url=redis_server.url)
    # A certificate without its key.
    monkeypatch.setenv(redis_tls.ENV_CERT, tls_redis.file("client.crt"))
    with pytest.raises(ServiceConfigError, match="GLEITZEIT_REDIS_TLS_CERT is set without"):
        await make_service(redis_url=tls_redis.url)
    # A file that is not PEM.
    monkeypatch.delenv(redis_tls.ENV_CERT)
    monkeypatch.setenv(redis_tls.ENV_CA, tls_redis.file("server.ext"))
    with pytest.raises(ServiceConfigError, match="GLEITZEIT_REDIS_TLS_CA: .*server.ext"):
        await make_service(redis_url=tls_redis.url)
    # A file that does not exist.
    missing = os.path.join(tls_redis.dir, "missing.pem")
    monkeypatch.setenv(redis_tls.ENV_CA, missing)
    with pytest.raises(ServiceConfigError, match="cannot read"):
        await make_service(redis_url=tls_redis.url)


def test_options_are_empty_without_tls_variables():
    assert redis_tls.tls_options("rediss://h:6380/0", {}) == {}
    assert redis_tls.tls_options("redis://h:6379/0", {}) == {}
