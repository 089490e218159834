"""TLS serving: certificates from a private CA made with ``openssl`` in the test, an ``https://``
address registered and proved, clients that trust the CA served and others refused."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import ssl
import subprocess

import aiohttp
import pytest
import socketio

from conftest import GUARD, Client
from gleitzeit import TaskService
from gleitzeit.service import ServiceConfigError


def _openssl(cwd: pathlib.Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, str]:
    """A private CA and a server certificate it signed for 127.0.0.1 and localhost."""
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        d,
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=Gleitzeit Test CA",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    _openssl(d, "req", "-subj", "/CN=localhost", *ec, "-keyout", "server.key", "-out", "server.csr")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        d,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    )
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


async def test_tls_service_registers_and_proves_its_https_address(
    make_service, redis_server, redis_client, certs
):
    service = await make_service(
        tls_cert=certs["cert"], tls_key=certs["key"], redis_url=redis_server.url
    )
    assert service.tls
    assert service.url == f"https://127.0.0.1:{service.port}"
    fields = await redis_client.hgetall(f"{{gleitzeit}}:svc:Test Tasks:{service.instance_id}")
    assert fields["url"] == service.url

    context = ssl.create_default_context(cafile=certs["ca"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        client = Client(http_session=http)
        try:
            await client.connect(service.url)
            hello = client.hello.result()
            assert hello.url == service.url
            assert client.verdict.result().accepted
            assert (await client.call("process_data", [1, 2])).ok
        finally:
            await client.close()


async def test_a_client_that_does_not_trust_the_ca_cannot_connect(make_service, certs):
    service = await make_service(tls_cert=certs["cert"], tls_key=certs["key"])
    client = Client()  # the system's trust store, which does not know the test CA
    with pytest.raises(socketio.exceptions.ConnectionError):
        await asyncio.wait_for(client.connect(service.url), GUARD)
    assert service._clients == set()
    await client.close()


def test_tls_settings_come_from_env(monkeypatch, certs):
    monkeypatch.setenv("GLEITZEIT_SERVICE_TLS_CERT", certs["cert"])
    monkeypatch.setenv("GLEITZEIT_SERVICE_TLS_KEY", certs["key"])
    assert TaskService(port=0, auth_token="t", functions=["process_data"]).tls


def test_tls_configuration_errors_name_the_setting(certs, tmp_path):
    def make(**kwargs):
        return TaskService(port=0, auth_token="t", functions=["process_data"], **kwargs)

    assert not make().tls
    with pytest.raises(ServiceConfigError, match="tls_key is not set"):
        make(tls_cert=certs["cert"])
    with pytest.raises(ServiceConfigError, match="tls_cert is not set"):
        make(tls_key=certs["key"])
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ServiceConfigError, match="cannot load the TLS certificate"):
        make(tls_cert=str(bogus), tls_key=certs["key"])
    with pytest.raises(ServiceConfigError, match="cannot load the TLS certificate"):
        make(tls_cert=str(tmp_path / "missing.pem"), tls_key=certs["key"])
