"""Task functions for the fault suite's service scenario (tests/tests/faults.rs).

`fault_echo` reports each call's start (the service's pid, pushed to the Redis list
`fault:started` of the Redis in FAULT_REDIS_URL), so the test can kill the instance that is
in the middle of a call, and answers with the task's marker, so the checker can tell that
each stored result answers its own task."""

import os
import time

import redis

from gleitzeit import gleitzeit_task

_redis = None


def _client():
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["FAULT_REDIS_URL"])
    return _redis


@gleitzeit_task()
def fault_echo(marker: str):
    _client().rpush("fault:started", os.getpid())
    # Long enough that a call is still running when the test, told of its start, kills the
    # instance (a sync function: it runs in a thread and blocks nothing else).
    time.sleep(0.3)
    return {"marker": marker, "pid": os.getpid()}
