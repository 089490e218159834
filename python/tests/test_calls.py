"""Calls over a real Socket.IO connection: outcomes, errors, concurrency, dedup."""

from __future__ import annotations

import asyncio

import pytest

import taskfns
from conftest import GUARD, until, wait_thread_event
from gleitzeit.protocol import EVENT_CALL, PROTOCOL_VERSION


async def test_hello_on_connect(service, client):
    hello = await asyncio.wait_for(client.hello, GUARD)
    assert hello.protocol == PROTOCOL_VERSION
    assert hello.service == "Test Tasks"
    assert hello.instance == service.instance_id
    assert hello.max_concurrency == 32
    by_name = {f.name: f for f in hello.functions}
    assert set(by_name) == set(service.functions)
    assert by_name["fetch_async"].description == "Pretend to fetch a URL."
    assert by_name["fetch_async"].timeout_ms == 30000
    assert by_name["process_data"].description == "Count the items of a list."
    assert by_name["process_data"].timeout_ms is None


async def test_sync_call_ok(client):
    result = await client.call("process_data", [1, 2, 3])
    assert result.ok, result
    assert result.result == {"count": 3, "items": [1, 2, 3]}
    assert result.duration_ms >= 0
    assert taskfns.CALLS["process_data"] == 1


async def test_async_call_ok_with_kwargs(client):
    result = await client.call("fetch_async", "https://example.org", upper=True)
    assert result.ok, result
    assert result.result == "HTTPS://EXAMPLE.ORG"


async def test_payload_wrapped_in_array_is_accepted(client):
    await client.sio.emit(
        EVENT_CALL, [{"request_id": "wrapped-1", "function": "process_data", "args": [["x"]]}]
    )
    result = await client.result("wrapped-1")
    assert result.ok and result.result == {"count": 1, "items": ["x"]}


async def test_exception_reports_type_message_traceback(client):
    result = await client.call("fail_value", "column 'price' is missing")
    assert not result.ok
    error = result.error
    assert error.kind == "exception"
    assert error.type == "ValueError"
    assert error.message == "column 'price' is missing"
    assert error.retryable is False
    assert "Traceback (most recent call last)" in error.traceback
    assert "in fail_value" in error.traceback


async def test_retryable_error_is_retryable(client):
    result = await client.call("fail_retryable", "upstream busy")
    assert not result.ok
    assert result.error.kind == "exception"
    assert result.error.type == "UpstreamBusy"
    assert result.error.message == "upstream busy"
    assert result.error.retryable is True


async def test_unknown_function(client):
    result = await client.call("no_such_function", 1)
    assert not result.ok
    assert result.error.kind == "unknown_function"
    assert result.error.retryable is False
    assert "no_such_function" in result.error.message
    assert "process_data" in result.error.message  # names what is served


@pytest.mark.parametrize(
    "payload, request_id, fragment",
    [
        ("just a string", None, "must be a JSON object"),
        ({"function": "process_data"}, None, "request_id is required"),
        ({"request_id": "b-1"}, "b-1", "function is required"),
        (
            {"request_id": "b-2", "function": "process_data", "args": {"a": 1}},
            "b-2",
            "args must be an array",
        ),
        (
            {"request_id": "b-3", "function": "process_data", "kwargs": [1]},
            "b-3",
            "kwargs must be an object",
        ),
        (
            {"request_id": "b-4", "function": "process_data", "timeout_ms": -5},
            "b-4",
            "timeout_ms must be >= 1",
        ),
        (
            {"request_id": "b-5", "function": "process_data", "args": []},
            "b-5",
            "missing a required argument: 'raw_data'",
        ),
        (
            {"request_id": "b-6", "function": "process_data", "args": [[1]], "kwargs": {"nope": 1}},
            "b-6",
            "unexpected keyword argument 'nope'",
        ),
    ],
)
async def test_bad_request(client, payload, request_id, fragment):
    await client.sio.emit(EVENT_CALL, payload)
    result = await client.result(request_id)
    assert not result.ok
    assert result.error.kind == "bad_request"
    assert result.error.retryable is False
    assert fragment in result.error.message
    assert taskfns.CALLS["process_data"] == 0


async def test_two_arguments_are_a_bad_request(client):
    await client.sio.emit(EVENT_CALL, ({"request_id": "two"}, {"function": "process_data"}))
    result = await client.result(None)
    assert result.error.kind == "bad_request"
    assert "exactly one payload" in result.error.message


@pytest.mark.parametrize("function, type_name", [("make_set", "set"), ("make_nan", "list")])
async def test_non_json_return_value(client, function, type_name):
    result = await client.call(function)
    assert not result.ok
    assert result.error.kind == "not_json"
    assert result.error.retryable is False
    assert f"returned a {type_name}" in result.error.message


async def test_sync_timeout_is_retryable_and_holds_slot_until_thread_ends(
    make_service, make_client
):
    service = await make_service(max_concurrency=1)
    client = await make_client(f"http://127.0.0.1:{service.port}")
    result = await client.call("slow_sync", "t1")
    assert not result.ok
    assert result.error.kind == "timeout"
    assert result.error.retryable is True
    assert "0.2s" in result.error.message
    # The thread cannot be interrupted: it still holds the only slot.
    assert service.running_threads == 1
    busy = await client.call("process_data", [1])
    assert busy.error.kind == "overloaded"
    taskfns.open_gate("t1")
    # Once the thread is done the slot is free again (the result of the late call is dropped).
    # The finishing thread posts the slot release to the loop.
    await until(lambda: service.running_calls == 0, "slot release")
    ok = await client.call("process_data", [1])
    assert ok.ok


async def test_async_timeout_cancels_the_coroutine(make_service, make_client):
    service = await make_service(max_concurrency=1)
    client = await make_client(f"http://127.0.0.1:{service.port}")
    result = await client.call("slow_async", "t2")
    assert result.error.kind == "timeout"
    assert result.error.retryable is True
    assert service.running_calls == 0  # cancelled, slot released
    assert (await client.call("process_data", [])).ok


async def test_call_timeout_ms_caps_the_run(client):
    # blocking() has no own timeout; the caller's 100 ms applies.
    result = await client.call("blocking_async", "t3", timeout_ms=100)
    assert result.error.kind == "timeout"
    assert "0.1s" in result.error.message


async def test_overloaded_at_max_concurrency(make_service, make_client):
    service = await make_service(max_concurrency=2)
    client = await make_client(f"http://127.0.0.1:{service.port}")
    first = await client.send("blocking", "o1")
    second = await client.send("blocking_async", "o2")
    await wait_thread_event(taskfns.STARTED["o1"])
    await wait_thread_event(taskfns.STARTED["o2"])
    third = await client.call("process_data", [1])
    assert not third.ok
    assert third.error.kind == "overloaded"
    assert third.error.retryable is True
    assert taskfns.CALLS["process_data"] == 0
    taskfns.open_gate("o1")
    taskfns.open_gate("o2")
    assert (await client.result(first)).ok
    assert (await client.result(second)).ok
    assert (await client.call("process_data", [1])).ok


async def test_slow_sync_call_does_not_block_a_fast_one(client):
    slow = await client.send("blocking", "s1", value="slow")
    await wait_thread_event(taskfns.STARTED["s1"], "slow call start")
    fast = await client.send("process_data", [1, 2])
    fast_result = await client.result(fast)
    assert fast_result.ok
    assert client.order == [fast]  # the slow call is still running
    taskfns.open_gate("s1")
    slow_result = await client.result(slow)
    assert slow_result.result == {"gate": "s1", "value": "slow"}
    assert client.order == [fast, slow]


async def test_dedup_runs_once_and_joins_a_running_call(client):
    first = await client.send("blocking", "d1", value=1, idempotency_key="wf-1/Task A")
    await wait_thread_event(taskfns.STARTED["d1"])
    second = await client.send("blocking", "d1", value=1, idempotency_key="wf-1/Task A")
    taskfns.open_gate("d1")
    r1, r2 = await client.result(first), await client.result(second)
    assert r1.ok and r2.ok
    assert r1.result == r2.result == {"gate": "d1", "value": 1}
    assert r1.request_id == first and r2.request_id == second
    # A later repeat is answered from the cache.
    r3 = await client.call("blocking", "d1", value=1, idempotency_key="wf-1/Task A")
    assert r3.result == r1.result and r3.request_id != first
    assert taskfns.CALLS["blocking"] == 1


async def test_dedup_is_bounded_lru(make_service, make_client):
    service = await make_service(dedup_size=2)
    client = await make_client(f"http://127.0.0.1:{service.port}")
    for key in ("a", "b"):
        assert (await client.call("counted", key, idempotency_key=key)).result["run"] == 1
    assert (await client.call("counted", "a", idempotency_key="a")).result["run"] == 1  # hit
    await client.call("counted", "c", idempotency_key="c")  # evicts "b", the least recent
    assert (await client.call("counted", "a", idempotency_key="a")).result["run"] == 1
    assert (await client.call("counted", "b", idempotency_key="b")).result["run"] == 2


async def test_retryable_failures_are_not_cached(client):
    r1 = await client.call("slow_async", "x", idempotency_key="k-timeout")
    r2 = await client.call("slow_async", "x", idempotency_key="k-timeout")
    assert r1.error.kind == r2.error.kind == "timeout"
    assert taskfns.CALLS["slow_async"] == 2  # a timeout is retryable: the repeat runs again
    # A non-retryable failure is remembered: the function does not run again.
    e1 = await client.call("fail_counted", "z", idempotency_key="k-fail")
    e2 = await client.call("fail_counted", "z", idempotency_key="k-fail")
    assert e1.error.kind == e2.error.kind == "exception"
    assert e1.error.message == e2.error.message == "bad input z"
    assert taskfns.CALLS["fail_counted:z"] == 1


async def test_message_larger_than_cap_closes_the_connection(make_service, make_client):
    service = await make_service(max_message_size=4096)
    client = await make_client(f"http://127.0.0.1:{service.port}")
    assert (await client.call("process_data", ["small"])).ok
    await client.send("process_data", ["x" * 10000])
    await asyncio.wait_for(client.disconnected.wait(), GUARD)
    assert taskfns.CALLS["process_data"] == 1


async def test_calls_during_shutdown_are_overloaded_and_in_flight_ones_finish(
    make_service, make_client
):
    service = await make_service()
    client = await make_client(f"http://127.0.0.1:{service.port}")
    running = await client.send("blocking", "sd")
    await wait_thread_event(taskfns.STARTED["sd"])
    stopping = asyncio.ensure_future(service.stop(drain_timeout=GUARD))
    await until(lambda: not service.accepting, "stop accepting")
    late = await client.call("process_data", [1])
    assert late.error.kind == "overloaded" and "shutting down" in late.error.message
    taskfns.open_gate("sd")
    assert (await client.result(running)).ok
    summary = await stopping
    assert summary.drained >= 1 and summary.abandoned == 0


async def test_internal_error_is_still_answered(service, client, monkeypatch):
    """A fault in the service's own code (not the function's) still produces an answer."""

    def broken(task, call):
        raise RuntimeError("bookkeeping broke")

    monkeypatch.setattr(service, "_effective_timeout", broken)
    result = await client.call("process_data", [1], request_id="internal-1")
    assert result.request_id == "internal-1"
    assert result.error.kind == "exception"
    assert result.error.retryable is True
    assert "internal service error: bookkeeping broke" in result.error.message
