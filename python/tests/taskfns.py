"""Task functions the tests serve, with gates the tests open to control when calls finish."""

from __future__ import annotations

import asyncio
import collections
import threading

from gleitzeit import RetryableError, gleitzeit_task

#: gate id → event a blocking function waits for (the test sets it).
GATES: collections.defaultdict[str, threading.Event] = collections.defaultdict(threading.Event)
#: gate id → event the blocking function sets once it is running.
STARTED: collections.defaultdict[str, threading.Event] = collections.defaultdict(threading.Event)
#: gate id → the same gate for coroutines (set on the loop by open_gate).
ASYNC_GATES: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
#: function name / key → how many times it ran.
CALLS: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


def count(name: str) -> None:
    with _lock:
        CALLS[name] += 1


def open_gate(gate: str) -> None:
    """Let the blocking functions waiting on ``gate`` finish (call it on the test's loop)."""
    GATES[gate].set()
    ASYNC_GATES[gate].set()


def reset() -> None:
    for gate in GATES.values():
        gate.set()  # release anything a failed test left blocked
    GATES.clear()
    ASYNC_GATES.clear()
    STARTED.clear()
    CALLS.clear()


@gleitzeit_task()
def process_data(raw_data):
    """Count the items of a list.

    The rest of the docstring is not part of the description.
    """
    count("process_data")
    return {"count": len(raw_data), "items": raw_data}


@gleitzeit_task(name="fetch_async", description="Pretend to fetch a URL.", timeout=30)
async def fetch(url: str, upper: bool = False):
    count("fetch_async")
    await asyncio.sleep(0)
    return url.upper() if upper else url


@gleitzeit_task()
def fail_value(message):
    raise ValueError(message)


class UpstreamBusy(RetryableError):
    pass


@gleitzeit_task()
async def fail_retryable(message):
    raise UpstreamBusy(message)


@gleitzeit_task()
def make_set():
    return {1, 2, 3}


@gleitzeit_task()
def make_nan():
    return [float("nan")]


@gleitzeit_task()
def blocking(gate: str, value=None):
    """Wait (in a thread) until the test opens ``gate``."""
    count("blocking")
    STARTED[gate].set()
    if not GATES[gate].wait(timeout=60):
        raise RuntimeError(f"gate {gate} was never opened")
    return {"gate": gate, "value": value}


@gleitzeit_task()
async def blocking_async(gate: str):
    count("blocking_async")
    STARTED[gate].set()
    await ASYNC_GATES[gate].wait()
    return gate


@gleitzeit_task(timeout=0.2)
def slow_sync(gate: str):
    """Exceeds its 0.2 s timeout unless the gate is already open."""
    STARTED[gate].set()
    GATES[gate].wait(timeout=60)
    return "late"


@gleitzeit_task(timeout=0.2)
async def slow_async(gate: str):
    count("slow_async")
    STARTED[gate].set()
    await asyncio.Event().wait()  # never set: only the timeout ends this
    return "never"


@gleitzeit_task()
def counted(key: str):
    count(f"counted:{key}")
    return {"key": key, "run": CALLS[f"counted:{key}"]}


@gleitzeit_task()
def fail_counted(key: str):
    count(f"fail_counted:{key}")
    raise ValueError(f"bad input {key}")
