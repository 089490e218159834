"""Starting and stopping: drain deadline, start_task_service and cancellation."""

from __future__ import annotations

import asyncio

import pytest
import socketio

import taskfns
from conftest import GUARD, TOKEN, Client, free_port, wait_thread_event
from gleitzeit import discovery, start_task_service


async def test_drain_deadline_abandons_calls_still_running(make_service, make_client):
    service = await make_service()
    client = await make_client(f"http://127.0.0.1:{service.port}")
    await client.send("blocking_async", "a1")
    await client.send("blocking", "a2")
    await wait_thread_event(taskfns.STARTED["a1"])
    await wait_thread_event(taskfns.STARTED["a2"])
    summary = await service.stop(drain_timeout=0)
    assert summary.drained == 0
    assert summary.abandoned == 2
    assert summary.threads_still_running == 1  # the plain function's thread cannot be stopped
    await asyncio.wait_for(client.disconnected.wait(), GUARD)
    assert client.order == []  # no answers after the deadline


async def test_force_stop_ends_the_drain(make_service, make_client):
    service = await make_service(drain_timeout=GUARD * 10)
    client = await make_client(f"http://127.0.0.1:{service.port}")
    await client.send("blocking_async", "f1")
    await wait_thread_event(taskfns.STARTED["f1"])
    stopping = asyncio.ensure_future(service.stop())
    service.force_stop()
    summary = await asyncio.wait_for(stopping, GUARD)
    assert summary.abandoned == 1


async def test_stop_is_idempotent(make_service):
    service = await make_service()
    first, second = await asyncio.gather(service.stop(), service.stop())
    assert first == second


async def test_start_task_service_serves_until_cancelled(redis_server, redis_client):
    port = free_port()
    task = asyncio.ensure_future(
        start_task_service(
            name="Started Tasks",
            host="127.0.0.1",
            port=port,
            redis_url=redis_server.url,
            auth_token=TOKEN,
            max_concurrency=4,
            functions=["process_data"],
        )
    )
    client = Client()
    # The service binds its port inside the task; connect once it answers.
    for _ in range(1000):
        try:
            await client.connect(f"http://127.0.0.1:{port}")
            break
        except socketio.exceptions.ConnectionError:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
    hello = await asyncio.wait_for(client.hello, GUARD)
    assert [f.name for f in hello.functions] == ["process_data"]
    assert (await client.call("process_data", [1, 2])).result["count"] == 2
    assert (
        await redis_client.zscore(
            discovery.service_key("gleitzeit", "Started Tasks"), hello.instance
        )
        is not None
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(client.disconnected.wait(), GUARD)
    await client.close()
    assert (
        await redis_client.zscore(
            discovery.service_key("gleitzeit", "Started Tasks"), hello.instance
        )
        is None
    )
    with pytest.raises(OSError):  # the port is closed
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_finishes_when_closing_a_connection_never_does(
    make_service, make_client, caplog
):
    """python-engineio's socket close can wait forever for a writer that already exited (peer
    closing at the same moment); stop() bounds every closing step and goes on."""
    service = await make_service()
    client = await make_client(f"http://127.0.0.1:{service.port}")
    await asyncio.wait_for(client.hello, GUARD)
    service.shutdown_timeout = 0.05

    async def never_finishes(*args, **kwargs):
        await asyncio.Event().wait()

    service._sio.eio.disconnect = never_finishes
    await asyncio.wait_for(service.stop(), GUARD)
    assert "closing the Engine.IO transports did not finish" in caplog.text
