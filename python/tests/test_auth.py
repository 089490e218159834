"""The connection handshake: the token never crosses the wire, a client without it gets nothing
served, and calls are served only after the client's proof was accepted."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import socketio

import taskfns
from conftest import GUARD, TOKEN, Client, ServiceNotProven
from gleitzeit import handshake
from gleitzeit.protocol import PROTOCOL_VERSION


async def test_handshake_proves_both_sides_and_token_is_never_sent_or_logged(
    make_service, make_client, caplog
):
    caplog.set_level("DEBUG")
    service = await make_service(auth_token=TOKEN)
    client = await make_client(f"http://127.0.0.1:{service.port}", TOKEN)
    hello = client.hello.result()
    assert hello.protocol == PROTOCOL_VERSION == 2
    assert hello.instance == service.instance_id
    assert hello.url == service.url == f"http://127.0.0.1:{service.port}"
    assert handshake.verify_service_proof(TOKEN, client.proof_input(hello), hello.proof)
    assert client.verdict.result().accepted
    assert (await client.call("process_data", [1])).ok
    assert TOKEN not in caplog.text
    assert TOKEN not in json.dumps(hello.to_json())


async def test_each_connection_gets_its_own_nonce_and_proof(service, make_client):
    url = f"http://127.0.0.1:{service.port}"
    a = await make_client(url)
    b = await make_client(url)
    ha, hb = a.hello.result(), b.hello.result()
    assert ha.nonce != hb.nonce and ha.proof != hb.proof
    # A proof recorded on one connection is worthless on another.
    assert not handshake.verify_service_proof(TOKEN, b.proof_input(ha), ha.proof)


@pytest.mark.parametrize("token", ["wrong-token", "other-7q2z"])
async def test_a_client_with_another_token_cannot_verify_the_service(service, token):
    client = Client()
    try:
        with pytest.raises(ServiceNotProven):
            await client.connect(f"http://127.0.0.1:{service.port}", token=token)
    finally:
        await client.close()


@pytest.mark.parametrize("token", ["wrong-token", "other-7q2z"])
async def test_a_wrong_worker_proof_is_refused_and_nothing_runs(service, token, caplog):
    client = Client()
    await client.open(f"http://127.0.0.1:{service.port}")
    try:
        # A call before any proof is refused, clearly, and the function does not run.
        early = await client.call("counted", "early")
        assert not early.ok and early.error.kind == "bad_request"
        assert early.error.type == "Unauthenticated"
        assert "not authenticated" in early.error.message
        verdict = await client.authenticate(token, insist=True)
        assert not verdict.accepted and "does not match" in verdict.message
        await asyncio.wait_for(client.disconnected.wait(), GUARD)
        assert service._clients == set()
        assert taskfns.CALLS["counted:early"] == 0
        assert token not in caplog.text and TOKEN not in caplog.text
        assert "refused client" in caplog.text and service.instance_id in caplog.text
    finally:
        await client.close()


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "just-a-string",
        {"token": TOKEN},  # a protocol 1 client sends the token itself
        {"nonce": "abc"},
        {"nonce": "A" * 64},
    ],
)
async def test_connects_without_a_valid_nonce_are_refused(service, auth, caplog):
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.open(f"http://127.0.0.1:{service.port}", auth=auth)
    assert client.connect_errors and client.connect_errors[-1] == {"message": "unauthorized"}
    assert not client.hello.done()
    assert service._clients == set()
    assert TOKEN not in caplog.text
    if isinstance(auth, dict) and "token" in auth:
        assert "protocol 1" in caplog.text
    await client.close()


async def test_unauthenticated_mode_proves_nothing_and_serves_anyone(make_service, make_client):
    service = await make_service(auth_token=None, allow_unauthenticated=True)
    client = await make_client(f"http://127.0.0.1:{service.port}", None)
    hello = await asyncio.wait_for(client.hello, GUARD)
    assert hello.proof is None  # so no worker ever uses this service
    assert (await client.call("process_data", [])).ok


async def test_connections_are_refused_while_stopping(make_service):
    service = await make_service()
    await service.stop()
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(f"http://127.0.0.1:{service.port}")
    await client.close()


async def test_raw_socket_calls_are_served_only_after_an_accepted_proof(service):
    """Below the client library: a raw Engine.IO websocket calls before its proof (refused,
    nothing runs), sends a wrong proof (refused, disconnected); a second socket that proves
    itself is served."""
    url = f"ws://127.0.0.1:{service.port}/socket.io/?EIO=4&transport=websocket"

    async def session(ws):
        async def receive() -> str:
            while True:
                msg = await asyncio.wait_for(ws.receive_str(), GUARD)
                if msg == "2":  # Engine.IO ping
                    await ws.send_str("3")
                    continue
                return msg

        async def emit(event: str, payload: dict) -> None:
            await ws.send_str("42" + json.dumps([event, payload]))

        return receive, emit

    nonce = handshake.new_nonce()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            receive, emit = await session(ws)
            assert (await receive()).startswith("0")  # Engine.IO open
            await ws.send_str("40" + json.dumps({"nonce": nonce}))
            assert (await receive()).startswith("40")
            hello = await receive()
            assert hello.startswith('42["service:hello"')
            await emit(
                "task:call", {"request_id": "sneaky", "function": "counted", "args": ["sneak"]}
            )
            refused = await receive()
            assert refused.startswith('42["task:result"') and "Unauthenticated" in refused
            await emit("worker:auth", {"proof": "0" * 64})
            verdict = await receive()
            assert verdict.startswith('42["service:auth"') and '"accepted":false' in verdict

        async with http.ws_connect(url) as ws:
            receive, emit = await session(ws)
            assert (await receive()).startswith("0")
            await ws.send_str("40" + json.dumps({"nonce": nonce}))
            assert (await receive()).startswith("40")
            hello = json.loads((await receive())[2:])[1]
            data = handshake.ProofInput(
                hello["service"], hello["instance"], hello["url"], nonce, hello["nonce"]
            )
            assert handshake.verify_service_proof(TOKEN, data, hello["proof"])
            await emit("worker:auth", {"proof": handshake.worker_proof(TOKEN, data)})
            verdict = await receive()
            assert verdict.startswith('42["service:auth"') and '"accepted":true' in verdict
            await emit(
                "task:call", {"request_id": "legit", "function": "counted", "args": ["legit"]}
            )
            answer = await receive()
            assert answer.startswith('42["task:result"') and '"legit"' in answer
    assert taskfns.CALLS["counted:legit"] == 1
    assert taskfns.CALLS["counted:sneak"] == 0
