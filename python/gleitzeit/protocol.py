"""Socket.IO protocol v2 between Gleitzeit workers (clients) and Python task services (servers).

The message shapes live here and only here: the service encodes and decodes with these classes,
and the JSON fixtures in ``tests/protocol/`` (shared with the Rust worker) are checked against
them. ``docs/protocol.md`` describes the same contract in prose.

Decoders are strict about the fields they know (types, required keys, closed sets of error kinds)
and ignore fields they do not know, so a newer peer can add optional fields without breaking an
older one. Encoders always write every known field, which gives each message one canonical form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Version 2 replaced the token in the connect ``auth`` with the challenge-response of
#: ``gleitzeit.handshake``.
PROTOCOL_VERSION = 2

#: Server → client, once after an accepted connect: who it is, its nonce and its proof.
EVENT_HELLO = "service:hello"
#: Client → server, once the client verified the service's proof: the client's proof.
EVENT_WORKER_AUTH = "worker:auth"
#: Server → client: whether the client's proof was accepted.
EVENT_SERVICE_AUTH = "service:auth"
#: Client → server: run a function.
EVENT_CALL = "task:call"
#: Server → client: the outcome of one call, matched by ``request_id``.
EVENT_RESULT = "task:result"

KIND_EXCEPTION = "exception"
KIND_UNKNOWN_FUNCTION = "unknown_function"
KIND_BAD_REQUEST = "bad_request"
KIND_NOT_JSON = "not_json"
KIND_TIMEOUT = "timeout"
KIND_OVERLOADED = "overloaded"

#: Every error kind (unchanged since protocol 1). A new kind needs a new protocol version, because a client
#: cannot know whether retrying an unknown kind can help.
ERROR_KINDS = (
    KIND_EXCEPTION,
    KIND_UNKNOWN_FUNCTION,
    KIND_BAD_REQUEST,
    KIND_NOT_JSON,
    KIND_TIMEOUT,
    KIND_OVERLOADED,
)


class ProtocolError(ValueError):
    """A message does not have the shape the protocol requires.

    Never retryable: the same bytes fail the same way. ``request_id`` is the request id of the
    offending call when one could be read, so the service can still address its answer.
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python but never a valid count or duration on the wire.
    return isinstance(value, int) and not isinstance(value, bool)


def _require_mapping(obj: Any, what: str, request_id: str | None = None) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"{what} must be a JSON object, got {_json_type(obj)}", request_id)
    return obj


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _get_str(
    obj: Mapping[str, Any],
    key: str,
    what: str,
    *,
    required: bool,
    non_empty: bool = True,
    request_id: str | None = None,
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"{what}.{key} is required", request_id)
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{what}.{key} must be a string, got {_json_type(value)}", request_id)
    if non_empty and not value:
        raise ProtocolError(f"{what}.{key} must not be empty", request_id)
    return value


def _get_int(
    obj: Mapping[str, Any],
    key: str,
    what: str,
    *,
    required: bool,
    minimum: int,
    request_id: str | None = None,
) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"{what}.{key} is required", request_id)
        return None
    # JSON has one number type: 30000.0 is accepted as 30000, 1.5 is not an integer.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise ProtocolError(f"{what}.{key} must be an integer, got {_json_type(value)}", request_id)
    if value < minimum:
        raise ProtocolError(f"{what}.{key} must be >= {minimum}, got {value}", request_id)
    return value


def _req_str(
    obj: Mapping[str, Any],
    key: str,
    what: str,
    *,
    non_empty: bool = True,
    request_id: str | None = None,
) -> str:
    value = _get_str(obj, key, what, required=True, non_empty=non_empty, request_id=request_id)
    if value is None:  # _get_str raised already; this keeps the return type exact
        raise ProtocolError(f"{what}.{key} is required", request_id)
    return value


def _req_int(
    obj: Mapping[str, Any], key: str, what: str, *, minimum: int, request_id: str | None = None
) -> int:
    value = _get_int(obj, key, what, required=True, minimum=minimum, request_id=request_id)
    if value is None:
        raise ProtocolError(f"{what}.{key} is required", request_id)
    return value


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _get_hex64(obj: Mapping[str, Any], key: str, what: str, *, required: bool) -> str | None:
    """A nonce or proof field: 64 lowercase hex digits."""
    value = _get_str(obj, key, what, required=required)
    if value is not None and _HEX64.fullmatch(value) is None:
        raise ProtocolError(f"{what}.{key} must be 64 lowercase hex digits")
    return value


def unwrap_payload(args: tuple) -> Any:
    """Return the one payload of a Socket.IO event from the handler's positional arguments.

    Some clients (the Rust ``rust_socketio`` one among them) wrap the payload in an extra JSON
    array; a single-element array holding an object is therefore unwrapped. Anything else than
    exactly one argument is malformed.
    """
    if len(args) != 1:
        raise ProtocolError(f"an event carries exactly one payload, got {len(args)} arguments")
    payload = args[0]
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], Mapping):
        payload = payload[0]
    return payload


@dataclass(frozen=True)
class FunctionInfo:
    """One function a service offers, as announced in ``service:hello``."""

    name: str
    description: str = ""
    #: The function's own time limit in milliseconds, or ``None`` when it has none.
    timeout_ms: int | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "timeout_ms": self.timeout_ms}

    @classmethod
    def from_json(cls, obj: Any) -> FunctionInfo:
        obj = _require_mapping(obj, "function")
        name = _req_str(obj, "name", "function")
        description = _get_str(obj, "description", "function", required=False, non_empty=False)
        timeout_ms = _get_int(obj, "timeout_ms", "function", required=False, minimum=1)
        return cls(name=name, description=description or "", timeout_ms=timeout_ms)


@dataclass(frozen=True)
class ConnectAuth:
    """The client's connect ``auth`` object: its fresh nonce. The token is never sent."""

    nonce: str

    def to_json(self) -> dict:
        return {"nonce": self.nonce}

    @classmethod
    def from_json(cls, obj: Any) -> ConnectAuth:
        obj = _require_mapping(obj, "auth")
        nonce = _get_hex64(obj, "nonce", "auth", required=True)
        assert nonce is not None
        return cls(nonce=nonce)


@dataclass(frozen=True)
class WorkerAuth:
    """``worker:auth``: the client's proof, sent only after the service's proof checked out."""

    proof: str

    def to_json(self) -> dict:
        return {"proof": self.proof}

    @classmethod
    def from_json(cls, obj: Any) -> WorkerAuth:
        obj = _require_mapping(obj, "worker_auth")
        proof = _get_hex64(obj, "proof", "worker_auth", required=True)
        assert proof is not None
        return cls(proof=proof)


@dataclass(frozen=True)
class ServiceAuth:
    """``service:auth``: whether the service accepted the client's proof. After a refusal the
    service closes the connection."""

    accepted: bool
    message: str | None = None

    def to_json(self) -> dict:
        return {"accepted": self.accepted, "message": self.message}

    @classmethod
    def from_json(cls, obj: Any) -> ServiceAuth:
        obj = _require_mapping(obj, "service_auth")
        accepted = obj.get("accepted")
        if not isinstance(accepted, bool):
            raise ProtocolError(
                f"service_auth.accepted must be a boolean, got {_json_type(accepted)}"
            )
        message = _get_str(obj, "message", "service_auth", required=False, non_empty=False)
        return cls(accepted=accepted, message=message)


@dataclass(frozen=True)
class Hello:
    """``service:hello``: what the service is and what it serves, and its half of the
    handshake (``nonce``, ``proof``; ``proof`` is ``None`` from a service without a token)."""

    service: str
    instance: str
    functions: tuple = ()
    max_concurrency: int = 1
    protocol: int = PROTOCOL_VERSION
    url: str = ""
    nonce: str = ""
    proof: str | None = None

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "service": self.service,
            "instance": self.instance,
            "functions": [f.to_json() for f in self.functions],
            "max_concurrency": self.max_concurrency,
            "url": self.url,
            "nonce": self.nonce,
            "proof": self.proof,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Hello:
        obj = _require_mapping(obj, "hello")
        protocol = _req_int(obj, "protocol", "hello", minimum=1)
        service = _req_str(obj, "service", "hello")
        instance = _req_str(obj, "instance", "hello")
        functions = obj.get("functions")
        if not isinstance(functions, list):
            raise ProtocolError(f"hello.functions must be an array, got {_json_type(functions)}")
        max_concurrency = _req_int(obj, "max_concurrency", "hello", minimum=1)
        url = _req_str(obj, "url", "hello")
        nonce = _get_hex64(obj, "nonce", "hello", required=True)
        assert nonce is not None
        proof = _get_hex64(obj, "proof", "hello", required=False)
        return cls(
            protocol=protocol,
            service=service,
            instance=instance,
            functions=tuple(FunctionInfo.from_json(f) for f in functions),
            max_concurrency=max_concurrency,
            url=url,
            nonce=nonce,
            proof=proof,
        )


@dataclass(frozen=True)
class Call:
    """``task:call``: run ``function(*args, **kwargs)`` and answer with ``request_id``."""

    request_id: str
    function: str
    task_id: str | None = None
    #: Calls with the same key (and function) run once; repeats get the recorded result.
    idempotency_key: str | None = None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    #: The caller's deadline in milliseconds; the service never runs a call longer than this.
    timeout_ms: int | None = None

    def to_json(self) -> dict:
        return {
            "request_id": self.request_id,
            "task_id": self.task_id,
            "idempotency_key": self.idempotency_key,
            "function": self.function,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "timeout_ms": self.timeout_ms,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Call:
        obj = _require_mapping(obj, "call")
        # The request id first, so every later error can still be answered to the right caller.
        request_id = _req_str(obj, "request_id", "call")
        function = _req_str(obj, "function", "call", request_id=request_id)
        task_id = _get_str(obj, "task_id", "call", required=False, request_id=request_id)
        idempotency_key = _get_str(
            obj, "idempotency_key", "call", required=False, request_id=request_id
        )
        args = obj.get("args")
        if args is None:
            args = []
        elif not isinstance(args, list):
            raise ProtocolError(f"call.args must be an array, got {_json_type(args)}", request_id)
        kwargs = obj.get("kwargs")
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, Mapping):
            raise ProtocolError(
                f"call.kwargs must be an object, got {_json_type(kwargs)}", request_id
            )
        timeout_ms = _get_int(
            obj, "timeout_ms", "call", required=False, minimum=1, request_id=request_id
        )
        return cls(
            request_id=request_id,
            function=function,
            task_id=task_id,
            idempotency_key=idempotency_key,
            args=list(args),
            kwargs=dict(kwargs),
            timeout_ms=timeout_ms,
        )


@dataclass(frozen=True)
class ErrorInfo:
    """Why a call failed, and whether calling again can help."""

    kind: str
    type: str
    message: str
    retryable: bool
    traceback: str | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "retryable": self.retryable,
        }

    @classmethod
    def from_json(cls, obj: Any) -> ErrorInfo:
        obj = _require_mapping(obj, "error")
        kind = _req_str(obj, "kind", "error")
        if kind not in ERROR_KINDS:
            raise ProtocolError(f"error.kind {kind!r} is not one of {', '.join(ERROR_KINDS)}")
        type_ = _req_str(obj, "type", "error")
        message = _req_str(obj, "message", "error", non_empty=False)
        traceback = _get_str(obj, "traceback", "error", required=False, non_empty=False)
        retryable = obj.get("retryable")
        if not isinstance(retryable, bool):
            raise ProtocolError(f"error.retryable must be a boolean, got {_json_type(retryable)}")
        return cls(kind=kind, type=type_, message=message, retryable=retryable, traceback=traceback)


@dataclass(frozen=True)
class Result:
    """``task:result``: the outcome of one call.

    ``request_id`` is ``None`` only for a ``bad_request`` answer to a call whose request id could
    not be read.
    """

    request_id: str | None
    ok: bool
    result: Any = None
    duration_ms: int | None = None
    error: ErrorInfo | None = None

    @classmethod
    def success(cls, request_id: str | None, result: Any, duration_ms: int) -> Result:
        return cls(request_id=request_id, ok=True, result=result, duration_ms=duration_ms)

    @classmethod
    def failure(cls, request_id: str | None, error: ErrorInfo) -> Result:
        return cls(request_id=request_id, ok=False, error=error)

    def to_json(self) -> dict:
        if self.ok:
            return {
                "request_id": self.request_id,
                "ok": True,
                "result": self.result,
                "duration_ms": self.duration_ms if self.duration_ms is not None else 0,
            }
        if self.error is None:
            raise ProtocolError("a failed result needs an error")
        return {"request_id": self.request_id, "ok": False, "error": self.error.to_json()}

    @classmethod
    def from_json(cls, obj: Any) -> Result:
        obj = _require_mapping(obj, "result")
        if "request_id" not in obj:
            raise ProtocolError("result.request_id is required (null only for bad_request)")
        request_id = _get_str(obj, "request_id", "result", required=False)
        ok = obj.get("ok")
        if not isinstance(ok, bool):
            raise ProtocolError(f"result.ok must be a boolean, got {_json_type(ok)}")
        if ok:
            if "result" not in obj:
                raise ProtocolError("result.result is required when ok is true", request_id)
            duration_ms = _req_int(obj, "duration_ms", "result", minimum=0, request_id=request_id)
            if request_id is None:
                raise ProtocolError("result.request_id is required when ok is true")
            return cls.success(request_id, obj["result"], duration_ms)
        if "error" not in obj:
            raise ProtocolError("result.error is required when ok is false", request_id)
        error = ErrorInfo.from_json(obj["error"])
        if request_id is None and error.kind != KIND_BAD_REQUEST:
            raise ProtocolError("result.request_id may be null only for bad_request")
        return cls.failure(request_id, error)
