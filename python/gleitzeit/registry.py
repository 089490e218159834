"""The ``@gleitzeit_task`` decorator and the registry of functions a task service can serve.

Decorating a function only records it; the function stays an ordinary callable. A service
(``start_task_service`` / ``TaskService`` / the ``gleitzeit-service`` command) serves the
registered functions under their task names, which are what workflows name in
``function: ...`` of an external task.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .protocol import FunctionInfo

#: Longest task name, matching the workflow model's limit on names.
MAX_NAME_LEN = 128


class RetryableError(Exception):
    """Raise this (or a subclass) from a task function when calling again can succeed.

    The worker then retries the task with its backoff instead of failing it: a flaky upstream
    service, a lock that was busy, a rate limit. Every other exception fails the task at once.
    """


class RegistrationError(ValueError):
    """A function cannot be registered (bad name, bad timeout, name already taken).

    A programming error in the task module: not retryable.
    """


@dataclass(frozen=True)
class TaskFunction:
    """A function made a task: its task name, description and time limit."""

    name: str
    func: Callable[..., Any]
    description: str = ""
    #: Seconds the service lets one call run, or ``None`` for no own limit (the caller's
    #: ``timeout_ms`` still applies).
    timeout: float | None = None

    @property
    def is_async(self) -> bool:
        """True for ``async def`` functions (awaited on the loop); false for plain functions,
        which run in the service's thread pool so they never block the event loop."""
        return inspect.iscoroutinefunction(self.func)

    @property
    def timeout_ms(self) -> int | None:
        if self.timeout is None:
            return None
        return max(1, int(round(self.timeout * 1000)))

    def info(self) -> FunctionInfo:
        return FunctionInfo(
            name=self.name, description=self.description, timeout_ms=self.timeout_ms
        )


def validate_task_name(name: Any) -> str:
    """Return ``name`` if it can be a task function name, else raise ``RegistrationError``."""
    if not isinstance(name, str) or not name:
        raise RegistrationError("a task function name must be a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise RegistrationError(
            f"task function name longer than {MAX_NAME_LEN} characters: {name!r}"
        )
    if name != name.strip():
        raise RegistrationError(f"task function name has leading/trailing whitespace: {name!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise RegistrationError(f"task function name contains control characters: {name!r}")
    return name


def _validate_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise RegistrationError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise RegistrationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    return " ".join(text.split("\n\n", 1)[0].split())


def _origin(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class Registry:
    """Task name → ``TaskFunction``. Thread-safe, because modules may be imported from threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._functions: dict[str, TaskFunction] = {}

    def add(self, task: TaskFunction) -> TaskFunction:
        """Register ``task``. The same function registered again (a module imported twice, for
        instance as ``__main__`` and by name) replaces itself; a different function under a name
        already taken is an error, because a call could otherwise reach the wrong code."""
        with self._lock:
            existing = self._functions.get(task.name)
            if existing is not None and _origin(existing.func) != _origin(task.func):
                raise RegistrationError(
                    f"task name {task.name!r} is already used by {_origin(existing.func)}"
                )
            self._functions[task.name] = task
        return task

    def get(self, name: str) -> TaskFunction | None:
        with self._lock:
            return self._functions.get(name)

    def remove(self, name: str) -> None:
        with self._lock:
            self._functions.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._functions)

    def all(self) -> list[TaskFunction]:
        with self._lock:
            return [self._functions[n] for n in sorted(self._functions)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._functions)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._functions


#: The registry ``@gleitzeit_task`` fills and services serve by default.
default_registry = Registry()


def make_task(
    func: Callable[..., Any],
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> TaskFunction:
    """Build (without registering) the ``TaskFunction`` for ``func``."""
    if not callable(func):
        raise RegistrationError(f"a task function must be callable, got {func!r}")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise RegistrationError(
            f"{_origin(func)} is a generator: a task function returns one JSON value"
        )
    task_name = validate_task_name(name if name is not None else getattr(func, "__name__", None))
    if description is not None and not isinstance(description, str):
        raise RegistrationError(f"description must be a string, got {description!r}")
    return TaskFunction(
        name=task_name,
        func=func,
        description=description if description is not None else _first_paragraph(func.__doc__),
        timeout=_validate_timeout(timeout),
    )


def gleitzeit_task(
    name: str | Callable[..., Any] | None = None,
    *,
    description: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Make a function a Gleitzeit task.

    ``@gleitzeit_task()`` registers it under its ``__name__`` with its docstring's first
    paragraph as description; ``@gleitzeit_task(name="x", description="...", timeout=30)``
    overrides them (``timeout`` in seconds). Bare ``@gleitzeit_task`` works too. The function is
    returned unchanged (with a ``__gleitzeit_task__`` attribute) and stays directly callable.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        task = make_task(
            func, name=None if callable(name) else name, description=description, timeout=timeout
        )
        default_registry.add(task)
        # Builtins and some C callables refuse attributes; the registry still has them.
        with contextlib.suppress(AttributeError, TypeError):
            func.__gleitzeit_task__ = task  # type: ignore[attr-defined]
        return func

    if callable(name):
        return decorate(name)
    if name is not None and not isinstance(name, str):
        raise RegistrationError(f"name must be a string, got {name!r}")
    return decorate


def resolve_functions(
    functions: Iterable[str | Callable[..., Any] | TaskFunction] | None,
    registry: Registry = default_registry,
) -> dict[str, TaskFunction]:
    """The functions a service serves: every registered one (``None``), or the given items —
    task names from the registry, ``TaskFunction`` objects, decorated functions, or plain
    callables (served under their ``__name__`` with default settings)."""
    if functions is None:
        return {t.name: t for t in registry.all()}
    if isinstance(functions, (str, bytes)) or callable(functions):
        raise RegistrationError("functions must be a list of functions or task names")
    resolved: dict[str, TaskFunction] = {}
    for item in functions:
        if isinstance(item, TaskFunction):
            task = item
        elif isinstance(item, str):
            found = registry.get(item)
            if found is None:
                raise RegistrationError(
                    f"no @gleitzeit_task function named {item!r} "
                    f"(registered: {', '.join(registry.names()) or 'none'})"
                )
            task = found
        elif isinstance(getattr(item, "__gleitzeit_task__", None), TaskFunction):
            task = item.__gleitzeit_task__
        elif callable(item):
            task = make_task(item)
        else:
            raise RegistrationError(f"cannot serve {item!r}: not a function or task name")
        other = resolved.get(task.name)
        if other is not None and other.func is not task.func:
            raise RegistrationError(f"two functions are served under the name {task.name!r}")
        resolved[task.name] = task
    return resolved
