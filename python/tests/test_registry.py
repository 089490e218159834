"""The @gleitzeit_task decorator and function resolution."""

from __future__ import annotations

import pytest

import taskfns
from gleitzeit import RegistrationError, TaskFunction, default_registry, gleitzeit_task
from gleitzeit.registry import resolve_functions


def test_decorator_registers_under_name_with_metadata():
    task = default_registry.get("process_data")
    assert isinstance(task, TaskFunction)
    assert task.func is taskfns.process_data
    assert task.description == "Count the items of a list."
    assert task.timeout is None and task.timeout_ms is None
    assert task.is_async is False


def test_decorator_options_and_async_detection():
    task = default_registry.get("fetch_async")
    assert task.func is taskfns.fetch  # registered under the given name, not __name__
    assert "fetch" not in default_registry
    assert task.description == "Pretend to fetch a URL."
    assert task.timeout == 30.0 and task.timeout_ms == 30000
    assert task.is_async is True


def test_decorated_function_stays_callable():
    assert taskfns.process_data([1]) == {"count": 1, "items": [1]}
    assert taskfns.process_data.__gleitzeit_task__ is default_registry.get("process_data")


def test_bare_decorator_and_removal():
    @gleitzeit_task
    def bare_decorated_fn(x):
        return x

    try:
        assert default_registry.get("bare_decorated_fn").func is bare_decorated_fn
    finally:
        default_registry.remove("bare_decorated_fn")
    assert "bare_decorated_fn" not in default_registry


def test_same_name_for_a_different_function_is_refused():
    with pytest.raises(RegistrationError, match="already used"):

        @gleitzeit_task(name="process_data")
        def impostor(raw_data):
            return raw_data


def test_reregistering_the_same_function_replaces_it():
    before = default_registry.get("process_data")
    gleitzeit_task(description="again")(taskfns.process_data)
    try:
        assert default_registry.get("process_data").description == "again"
    finally:
        default_registry.add(before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": ""}, "non-empty"),
        ({"name": " padded"}, "whitespace"),
        ({"name": "a\nb"}, "control"),
        ({"name": "x" * 129}, "longer than 128"),
        ({"timeout": 0}, "positive"),
        ({"timeout": -1}, "positive"),
        ({"timeout": "30"}, "number of seconds"),
        ({"timeout": True}, "number of seconds"),
        ({"description": 5}, "description must be a string"),
    ],
)
def test_invalid_options_are_refused(kwargs, message):
    def some_fn():
        return 1

    with pytest.raises(RegistrationError, match=message):
        gleitzeit_task(**kwargs)(some_fn)


def test_generators_are_refused():
    def gen():
        yield 1

    with pytest.raises(RegistrationError, match="generator"):
        gleitzeit_task(name="gen_fn")(gen)


def test_resolve_functions_variants():
    def plain(a):
        return a

    resolved = resolve_functions(["process_data", taskfns.fetch, plain])
    assert list(resolved) == ["process_data", "fetch_async", "plain"]
    assert resolved["plain"].func is plain
    assert set(resolve_functions(None)) == set(default_registry.names())
    with pytest.raises(RegistrationError, match="no @gleitzeit_task function named 'nope'"):
        resolve_functions(["nope"])
    with pytest.raises(RegistrationError, match="list"):
        resolve_functions("process_data")
