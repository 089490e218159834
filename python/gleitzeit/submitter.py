"""Running ``gleitzeit-submit``: the one place the package starts the command and reads its
answers.

Every rule of a workflow and of an endpoint (schema, names, dependencies, limits, endpoint
validation) lives in the Rust command; Python builds arguments, runs it with ``--json`` and
turns its one JSON document (or, for ``watch``, its JSON lines) into values or a
``WorkflowError``. The blocking and the asyncio variants share the parsing below, so both
answer the same way.

The command is found through an explicit path, else ``GLEITZEIT_SUBMIT``, else
``gleitzeit-submit`` on ``PATH``; a missing command is a ``SubmitterNotFound`` naming the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ENV_SUBMIT = "GLEITZEIT_SUBMIT"
ENV_REDIS_URL = "GLEITZEIT_REDIS_URL"
ENV_NAMESPACE = "GLEITZEIT_NAMESPACE"

class GleitzeitWarning(UserWarning):
    """A workflow was accepted, but part of it is probably a mistake (``{input}`` where
    ``{{input}}`` was meant) or will wait (no live worker serves its capability, no instance
    of its service is registered). Issued with ``warnings.warn``, so the usual filters apply
    (``warnings.simplefilter("error", GleitzeitWarning)`` makes them errors)."""


def warn_about(doc: Any, stacklevel: int = 3) -> None:
    """Passes on the ``warnings`` and ``notices`` of a ``submit --json`` document."""
    if not isinstance(doc, dict):
        return
    for w in doc.get("warnings") or []:
        warnings.warn(
            f"{w.get('path')}: {w.get('message')}", GleitzeitWarning, stacklevel=stacklevel
        )
    for n in doc.get("notices") or []:
        warnings.warn(str(n.get("message")), GleitzeitWarning, stacklevel=stacklevel)


#: Exit codes that still carry the command's document: 4 (the workflow failed or was
#: cancelled) and 7 (waiting timed out; the workflow keeps running).
DOCUMENT_CODES = (0, 4, 7)

__all__ = [
    "GleitzeitWarning",
    "Submitter",
    "SubmitterNotFound",
    "WorkflowError",
    "find_submitter",
    "redact_url",
    "warn_about",
]


class WorkflowError(Exception):
    """The submitter refused a request or could not run it.

    ``kind`` is the submitter's error kind (``invalid``, ``unreachable``, ``conflict``,
    ``not_found``, ``usage``, ``auth``, ``permission``, ``redis_full``, ``not_replicated``,
    ``internal``),
    ``errors`` every validation problem as ``{"path", "kind", "message"}``, ``exit_code`` the
    command's exit code.
    """

    def __init__(self, message: str, kind: str, exit_code: int, errors: list | None = None):
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code
        self.errors = errors or []

    def __str__(self) -> str:
        lines = [super().__str__()]
        lines += [f"  {e.get('path', '')}: {e.get('message', '')}" for e in self.errors]
        return "\n".join(lines)


class SubmitterNotFound(WorkflowError):
    """``gleitzeit-submit`` is neither named by ``GLEITZEIT_SUBMIT`` nor on ``PATH``."""

    def __init__(self, message: str):
        super().__init__(message, kind="usage", exit_code=2)


FIX = (
    "build it with `cargo build --release -p gleitzeit-submit` and put target/release on PATH "
    f"(or set {ENV_SUBMIT} to the binary's path)"
)


def find_submitter(explicit: str | None = None) -> str:
    """The path of the command: ``explicit``, else env ``GLEITZEIT_SUBMIT``, else
    ``gleitzeit-submit`` on ``PATH``. Raises ``SubmitterNotFound`` with the fix."""
    named = explicit or os.environ.get(ENV_SUBMIT)
    if named:
        found = shutil.which(named) if os.sep not in named else named
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return found
        source = "submitter=" if explicit else ENV_SUBMIT
        raise SubmitterNotFound(
            f"gleitzeit-submit not found: {source} names {named!r}, which is not an "
            f"executable file; {FIX}"
        )
    found = shutil.which("gleitzeit-submit")
    if not found:
        raise SubmitterNotFound(f"gleitzeit-submit not found on PATH or {ENV_SUBMIT}; {FIX}")
    return found


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs): the one of the
    user info, and query parameters named like a password (``sentinel_password=`` of a
    ``redis+sentinel://`` URL, whose several hosts ``urllib`` cannot split)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return "<invalid URL>"
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        params = [
            f"{name}=***" if "password" in name.lower() and eq else f"{name}{eq}{value}"
            for name, eq, value in (p.partition("=") for p in query.split("&"))
        ]
        path = f"{path}?{'&'.join(params)}{hash_}{fragment}"
    return f"{scheme}://{authority}{path}"


def _error_of(doc: Any, returncode: int) -> WorkflowError | None:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return WorkflowError(
            err.get("message", "gleitzeit-submit failed"),
            kind=err.get("kind", "internal"),
            exit_code=int(err.get("exit_code", returncode)),
            errors=err.get("errors"),
        )
    return None


def _no_document(returncode: int, stderr: str) -> WorkflowError:
    # Exit 2 without a document is the argument parser refusing the command line (for
    # example a subcommand this version of the command does not have).
    return WorkflowError(
        f"gleitzeit-submit exited {returncode}: {stderr.strip()[-2000:]}",
        kind="usage" if returncode == 2 else "internal",
        exit_code=returncode,
    )


def parse_document(returncode: int, stdout: str, stderr: str) -> Any:
    """The command's JSON document, or the ``WorkflowError`` it reported (raised)."""
    try:
        doc = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    error = _error_of(doc, returncode)
    if error is not None:
        raise error
    if returncode not in DOCUMENT_CODES or doc is None:
        raise _no_document(returncode, stderr)
    return doc


def parse_lines(returncode: int, stdout: str, stderr: str) -> list[dict]:
    """The JSON lines of ``watch --json`` (the last is the end record), or the error."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    docs: list[dict] = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if docs:
        error = _error_of(docs[-1], returncode)
        if error is not None:
            raise error
    if returncode not in DOCUMENT_CODES or not docs:
        raise _no_document(returncode, stderr)
    return docs


@dataclass(frozen=True)
class Submitter:
    """The command and the deployment it talks to. ``redis_url``/``namespace`` ``None``: the
    command's own defaults (env ``GLEITZEIT_REDIS_URL`` / ``GLEITZEIT_NAMESPACE``)."""

    path: str
    redis_url: str | None = None
    namespace: str | None = None

    @classmethod
    def locate(
        cls,
        path: str | None = None,
        redis_url: str | None = None,
        namespace: str | None = None,
    ) -> Submitter:
        return cls(find_submitter(path), redis_url, namespace)

    def command(self, args: Sequence[str]) -> list[str]:
        cmd = [self.path, "--json"]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        if self.namespace:
            cmd += ["--namespace", self.namespace]
        return cmd + list(args)

    def _exec(self, args: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(
                self.command(args),
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:  # removed after it was found
            raise SubmitterNotFound(f"gleitzeit-submit not found at {self.path}; {FIX}") from exc
        return proc.returncode, proc.stdout, proc.stderr

    async def _exec_async(self, args: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(args),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise SubmitterNotFound(f"gleitzeit-submit not found at {self.path}; {FIX}") from exc
        try:
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        except asyncio.CancelledError:
            # A cancelled wait must not leave the command running behind the caller.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return proc.returncode or 0, out.decode(), err.decode()

    def run(self, args: Sequence[str], stdin: str | None = None) -> Any:
        """Runs one command; returns its JSON document or raises ``WorkflowError``."""
        return parse_document(*self._exec(args, stdin))

    async def run_async(self, args: Sequence[str], stdin: str | None = None) -> Any:
        return parse_document(*await self._exec_async(args, stdin))

    def run_lines(self, args: Sequence[str]) -> list[dict]:
        """Runs a command printing JSON lines (``watch``); returns them."""
        return parse_lines(*self._exec(args, None))

    async def run_lines_async(self, args: Sequence[str]) -> list[dict]:
        return parse_lines(*await self._exec_async(args, None))

    def succeeds(self, args: Sequence[str]) -> bool:
        """Whether the command exits 0 (used to ask whether a subcommand exists)."""
        try:
            proc = subprocess.run(
                [self.path, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
        except OSError:
            return False
        return proc.returncode == 0
