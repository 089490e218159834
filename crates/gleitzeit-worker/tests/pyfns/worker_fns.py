"""Task functions for the worker's external-task tests. `hold` reports that it started and
waits for the test's go-ahead through Redis lists, so the test can act while a call is in
flight without sleeping."""

import os

import redis

from gleitzeit import gleitzeit_task


@gleitzeit_task()
def hold(redis_url: str, tag: str):
    r = redis.Redis.from_url(redis_url)
    r.rpush(f"started:{tag}", os.getpid())
    # Wait (bounded) until the test releases this call.
    r.blpop([f"release:{tag}"], timeout=120)
    return {"pid": os.getpid(), "tag": tag}


@gleitzeit_task()
def explode(message: str):
    raise ValueError(message)


@gleitzeit_task()
def stamp(redis_url: str, tag: str):
    """Record in Redis that it ran (`ran:<tag>`), and return the tag and the serving process,
    which tells a real answer from a forged one."""
    redis.Redis.from_url(redis_url).rpush(f"ran:{tag}", os.getpid())
    return {"tag": tag, "pid": os.getpid(), "real": True}
