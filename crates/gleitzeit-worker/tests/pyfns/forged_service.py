"""An impostor for the worker's security tests: a real Socket.IO server that claims to be an
instance of a task service without holding its token.

    python forged_service.py SERVICE INSTANCE

It prints one JSON line ``{"event": "ready", "port": P, "url": U}``, then one JSON line per
thing a client sends it: ``{"event": "connect", "auth": ...}`` for each connect and
``{"event": NAME, "data": [...]}`` for every event. It does what an attacker would try: its
hello carries a proof made with a guessed token, it announces ``service:auth`` acceptance
unasked, sends a forged ``task:result`` right away, and answers every ``task:call`` with a
forged result.
"""

from __future__ import annotations

import asyncio
import json
import sys

import socketio
from aiohttp import web

from gleitzeit import handshake

SERVICE, INSTANCE = sys.argv[1], sys.argv[2]
GUESSED_TOKEN = "guessed-token"
FORGED = {"forged": True}

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[], logger=False)
app = web.Application()
sio.attach(app)
url = ""
background: set[asyncio.Task] = set()


def record(**fields) -> None:
    print(json.dumps(fields), flush=True)


@sio.event
async def connect(sid, environ, auth=None):
    record(event="connect", auth=auth)
    task = asyncio.ensure_future(pose(sid, auth))
    background.add(task)
    task.add_done_callback(background.discard)


async def pose(sid: str, auth) -> None:
    # Events emitted before the namespace connect is confirmed would be dropped.
    for _ in range(400):
        if sio.manager.is_connected(sid, "/"):
            break
        await asyncio.sleep(0.005)
    offered = auth.get("nonce") if isinstance(auth, dict) else None
    worker_nonce = offered if handshake.is_hex64(offered) else handshake.new_nonce()
    nonce = handshake.new_nonce()
    data = handshake.ProofInput(SERVICE, INSTANCE, url, worker_nonce, nonce)
    hello = {
        "protocol": 2,
        "service": SERVICE,
        "instance": INSTANCE,
        "functions": [{"name": "stamp", "description": "", "timeout_ms": None}],
        "max_concurrency": 8,
        "url": url,
        "nonce": nonce,
        "proof": handshake.service_proof(GUESSED_TOKEN, data),
    }
    await sio.emit("service:hello", hello, to=sid)
    await sio.emit("service:auth", {"accepted": True, "message": None}, to=sid)
    await sio.emit(
        "task:result",
        {"request_id": "guessed", "ok": True, "result": FORGED, "duration_ms": 1},
        to=sid,
    )


@sio.on("*")
async def any_event(event, sid, *data):
    record(event=event, data=list(data))
    if event == "task:call":
        payload = data[0] if data else {}
        if isinstance(payload, list) and payload:
            payload = payload[0]
        request_id = payload.get("request_id") if isinstance(payload, dict) else None
        await sio.emit(
            "task:result",
            {"request_id": request_id, "ok": True, "result": FORGED, "duration_ms": 1},
            to=sid,
        )


async def main() -> None:
    global url
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    record(event="ready", port=port, url=url)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
