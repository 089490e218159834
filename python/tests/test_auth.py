"""Connections without the right token are refused and get nothing served."""

from __future__ import annotations

import asyncio

import pytest
import socketio

import taskfns
from conftest import GUARD, TOKEN, Client


@pytest.mark.parametrize("token", ["wrong-token", None, ""])
async def test_bad_or_missing_token_is_refused(service, token, caplog):
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(f"http://127.0.0.1:{service.port}", token=token)
    try:
        assert client.connect_errors and client.connect_errors[-1] == {"message": "unauthorized"}
        assert not client.hello.done()
        assert not client.sio.connected
        # The refused client cannot call anything: its emit is refused client-side, and the
        # service registered no client.
        with pytest.raises(socketio.exceptions.BadNamespaceError):
            await client.sio.emit(
                "task:call", {"request_id": "x", "function": "process_data", "args": [[1]]}
            )
        assert service._clients == set()
        assert taskfns.CALLS["process_data"] == 0
        if token:
            assert token not in caplog.text
    finally:
        await client.close()


async def test_non_dict_auth_is_refused(service):
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.sio.connect(
            f"http://127.0.0.1:{service.port}",
            auth="just-a-string",
            transports=["websocket"],
            wait_timeout=GUARD,
        )
    assert client.connect_errors[-1] == {"message": "unauthorized"}
    await client.close()


async def test_right_token_is_accepted_and_token_is_never_logged(make_service, make_client, caplog):
    caplog.set_level("DEBUG")
    service = await make_service(auth_token=TOKEN)
    client = await make_client(f"http://127.0.0.1:{service.port}", TOKEN)
    hello = await asyncio.wait_for(client.hello, GUARD)
    assert hello.instance == service.instance_id
    assert (await client.call("process_data", [1])).ok
    assert TOKEN not in caplog.text


async def test_unauthenticated_mode_accepts_any_client(make_service, make_client):
    service = await make_service(auth_token=None, allow_unauthenticated=True)
    client = await make_client(f"http://127.0.0.1:{service.port}", None)
    assert (await client.call("process_data", [])).ok


async def test_connections_are_refused_while_stopping(make_service):
    service = await make_service()
    await service.stop()
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(f"http://127.0.0.1:{service.port}")
    await client.close()


async def test_events_on_a_refused_connection_are_not_served(service):
    """Below the client library: a raw Engine.IO websocket whose namespace connect was refused
    sends a call anyway; it is dropped, while the same socket, once authenticated, is served."""
    import json

    import aiohttp

    url = f"ws://127.0.0.1:{service.port}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:

        async def receive() -> str:
            while True:
                msg = await asyncio.wait_for(ws.receive_str(), GUARD)
                if msg == "2":  # Engine.IO ping
                    await ws.send_str("3")
                    continue
                return msg

        assert (await receive()).startswith("0")  # Engine.IO open
        await ws.send_str("40" + json.dumps({"token": "wrong"}))
        refused = await receive()
        assert refused.startswith("44") and "unauthorized" in refused
        await ws.send_str(
            "42"
            + json.dumps(
                ["task:call", {"request_id": "sneaky", "function": "counted", "args": ["sneak"]}]
            )
        )
        await ws.send_str("40" + json.dumps({"token": TOKEN}))
        assert (await receive()).startswith("40")
        hello = await receive()
        assert hello.startswith('42["service:hello"')
        await ws.send_str(
            "42"
            + json.dumps(
                ["task:call", {"request_id": "legit", "function": "counted", "args": ["legit"]}]
            )
        )
        answer = await receive()
        assert answer.startswith('42["task:result"') and '"legit"' in answer
        assert "sneaky" not in hello + answer
    assert taskfns.CALLS["counted:legit"] == 1
    assert taskfns.CALLS["counted:sneak"] == 0
