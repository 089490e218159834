"""Task functions the gleitzeit-external integration tests call on real services."""

from __future__ import annotations

import asyncio
import os
import time

from gleitzeit import RetryableError, gleitzeit_task


@gleitzeit_task()
def echo(value):
    """Return the argument and the serving process (tells instances apart)."""
    return {"value": value, "pid": os.getpid()}


@gleitzeit_task()
async def echo_async(value, delay=0.0):
    """Like echo, but a coroutine that can wait first (keeps many calls in flight at once)."""
    if delay:
        await asyncio.sleep(delay)
    return {"value": value, "pid": os.getpid()}


@gleitzeit_task()
def add(a, b=0):
    return a + b


@gleitzeit_task()
def boom(message):
    raise ValueError(message)


@gleitzeit_task()
async def busy(message):
    raise RetryableError(message)


@gleitzeit_task()
def make_set():
    return {1, 2, 3}


@gleitzeit_task()
def big(size):
    return "x" * size


@gleitzeit_task()
async def sleep_for(seconds):
    await asyncio.sleep(seconds)
    return seconds


@gleitzeit_task()
def mark_and_sleep(redis_url, key, seconds):
    """Push this process id to a Redis list (the test waits on it with BLPOP), then block."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.rpush(key, os.getpid())
    finally:
        client.close()
    time.sleep(seconds)
    return "slept"
