"""``GleitzeitCluster``: the front door of the Python package, in the seed's spelling.

    from gleitzeit import GleitzeitCluster, EndpointConfig, LoadBalancingStrategy

    cluster = GleitzeitCluster(
        ollama_endpoints=[
            EndpointConfig("http://gpu-server-1:11434", priority=1, gpu=True),
            EndpointConfig("http://cpu-server:11434", priority=3, gpu=False),
        ],
        ollama_strategy=LoadBalancingStrategy.LEAST_LOADED,
    )
    workflow = cluster.create_workflow("Analysis")
    workflow.add_text_task("Extract Data", prompt="Extract key points from: ...", model="llama3")
    workflow_id = cluster.submit(workflow)
    result = cluster.wait(workflow_id)            # or: await cluster.wait_async(workflow_id)
    print(result.status, result.results["Extract Data"])

A cluster is a handle on one deployment (a Redis URL and a namespace, from the arguments or
``GLEITZEIT_REDIS_URL`` / ``GLEITZEIT_NAMESPACE``). It holds no connection: every operation
runs ``gleitzeit-submit --json`` (``gleitzeit.submitter``), which is located when the cluster
is constructed, so a missing binary fails there with the fix. Endpoints and a strategy given
to the constructor are published to the fleet at once (``publish_endpoints``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from .endpoints import EndpointConfig, LoadBalancingStrategy
from .runs import (
    CancelResult,
    TaskResult,
    WorkflowResult,
    WorkflowStatus,
    WorkflowTimeout,
    parse_results,
)
from .submitter import (
    ENV_NAMESPACE,
    ENV_REDIS_URL,
    Submitter,
    WorkflowError,
    redact_url,
    warn_about,
)
from .workflow import Workflow

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_NAMESPACE = "gleitzeit"
#: A model for LLM tasks that name none (written into each workflow's ``defaults``).
ENV_DEFAULT_MODEL = "GLEITZEIT_DEFAULT_MODEL"

__all__ = ["EndpointError", "GleitzeitCluster"]


class EndpointError(WorkflowError):
    """An endpoint or strategy was refused by ``gleitzeit-submit endpoints ...`` (``endpoint``
    names it; ``None`` for the strategy). Endpoints published before it stay published;
    publishing is idempotent, so fix it and publish again."""

    def __init__(self, endpoint: str | None, error: WorkflowError):
        what = f"endpoint {endpoint!r}" if endpoint is not None else "the strategy"
        super().__init__(
            f"{what} was not published: {error.args[0] if error.args else error}",
            kind=error.kind,
            exit_code=error.exit_code,
            errors=error.errors,
        )
        self.endpoint = endpoint


class GleitzeitCluster:
    """A deployment: where workflows are submitted and read back by id.

    ``redis_url`` / ``namespace``: default env ``GLEITZEIT_REDIS_URL`` /
    ``GLEITZEIT_NAMESPACE``, else ``redis://127.0.0.1:6379`` / ``gleitzeit``. ``submitter``:
    the path of ``gleitzeit-submit`` (default env ``GLEITZEIT_SUBMIT``, else ``PATH``).
    ``default_model`` (or env ``GLEITZEIT_DEFAULT_MODEL``) is the model of LLM tasks that
    name none in workflows made by ``create_workflow``.

    ``ollama_endpoints``, ``openai_endpoints``, ``anthropic_endpoints`` and
    ``ollama_strategy`` are published to the fleet by the constructor (it calls
    ``publish_endpoints()``); without them the constructor does not touch Redis.

    Every read and write has a blocking form and an ``_async`` form (asyncio subprocesses,
    the same parsing); the seed's coroutine names ``start``, ``submit_workflow``,
    ``wait_for_workflow``, ``execute_workflow`` and ``stop`` work as well.
    """

    def __init__(
        self,
        ollama_endpoints: Iterable[EndpointConfig] | None = None,
        openai_endpoints: Iterable[EndpointConfig] | None = None,
        anthropic_endpoints: Iterable[EndpointConfig] | None = None,
        ollama_strategy: LoadBalancingStrategy | str | None = None,
        *,
        redis_url: str | None = None,
        namespace: str | None = None,
        submitter: str | None = None,
        default_model: str | None = None,
    ) -> None:
        self.redis_url = redis_url or os.environ.get(ENV_REDIS_URL) or DEFAULT_REDIS_URL
        self.namespace = namespace or os.environ.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE
        self.default_model = default_model or os.environ.get(ENV_DEFAULT_MODEL) or None
        # Located now: a missing binary is an error here, with the fix, not at first use.
        self._submitter = Submitter.locate(submitter, self.redis_url, self.namespace)
        self.endpoints: list[tuple[str, EndpointConfig]] = []
        for kind, given in (
            ("ollama", ollama_endpoints),
            ("openai", openai_endpoints),
            ("anthropic", anthropic_endpoints),
        ):
            for endpoint in given or ():
                if not isinstance(endpoint, EndpointConfig):
                    raise TypeError(
                        f"{kind}_endpoints takes EndpointConfig values, got {endpoint!r}"
                    )
                endpoint.resolved_kind(kind)  # a kind that contradicts its list fails here
                self.endpoints.append((kind, endpoint))
        names = [e.endpoint_name for _, e in self.endpoints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"endpoint name(s) {', '.join(map(repr, duplicates))} given more than once; "
                "pass name= to tell them apart"
            )
        self.strategy = (
            LoadBalancingStrategy(ollama_strategy) if ollama_strategy is not None else None
        )
        self.published: dict[str, Any] | None = None
        if self.endpoints or self.strategy is not None:
            self.publish_endpoints()

    def __repr__(self) -> str:
        return (
            f"GleitzeitCluster(redis_url={redact_url(self.redis_url)!r}, "
            f"namespace={self.namespace!r}, endpoints={self.endpoint_names!r})"
        )

    @property
    def endpoint_names(self) -> list[str]:
        return [e.endpoint_name for _, e in self.endpoints]

    @property
    def submitter(self) -> Submitter:
        """The command this cluster runs, with its Redis URL and namespace."""
        return self._submitter

    # ------------------------------------------------------------------------------ endpoints

    def publish_endpoints(self) -> dict[str, Any]:
        """Publishes this cluster's endpoints (``gleitzeit-submit endpoints add``, one per
        endpoint, in the order given) and then its strategy (``endpoints strategy``). Returns
        the published document ``{"published": [...], "strategy": ...}``. An endpoint the
        command refuses raises ``EndpointError`` naming it; the ones before it stay
        published (adding is idempotent: fix it and publish again)."""
        doc: dict[str, Any] | None = None
        for kind, endpoint in self.endpoints:
            try:
                doc = self._submitter.run(endpoint.add_args(kind))
            except WorkflowError as exc:
                raise EndpointError(endpoint.endpoint_name, exc) from exc
        if self.strategy is not None:
            try:
                doc = self._submitter.run(["endpoints", "strategy", self.strategy.value])
            except WorkflowError as exc:
                raise EndpointError(None, exc) from exc
        self.published = _flat(doc) if doc is not None else self.published_endpoints()
        return self.published

    def published_endpoints(self) -> dict[str, Any]:
        """What the fleet has published: ``{"published": [endpoint, ...], "strategy": ...}``,
        each endpoint one flat mapping (``name``, ``kind``, ``url``, ``models``,
        ``api_key_env``, ``priority``, ``gpu``, ...)."""
        return _flat(self._submitter.run(["endpoints", "published"]))

    def remove_endpoint(self, name: str) -> dict[str, Any]:
        """Withdraws a published endpoint by name; returns the published document."""
        return _flat(self._submitter.run(["endpoints", "remove", name]))

    # ------------------------------------------------------------------------------ workflows

    def create_workflow(
        self, name: str, description: str | None = None, **options: Any
    ) -> Workflow:
        """A new workflow bound to this cluster: ``workflow.submit()`` sends it here.
        ``options`` as for ``Workflow`` (``input``, ``failure_policy``, ``defaults``, ...)."""
        if self.default_model is not None:
            defaults = dict(options.pop("defaults", None) or {})
            defaults.setdefault("model", self.default_model)
            options["defaults"] = defaults
        workflow = Workflow(name, description=description, **options)
        workflow._bound = self._submitter
        return workflow

    def submit(self, workflow: Workflow, **options: Any) -> str:
        """Validates and submits ``workflow`` here; returns its id. ``options`` as for
        ``Workflow.submit`` (``inputs``, ``idempotency_key``, ``retention``)."""
        args, stdin = self._submit_args(workflow, options)
        doc = self._submitter.run(args, stdin)
        warn_about(doc)
        return str(doc["id"])

    async def submit_async(self, workflow: Workflow, **options: Any) -> str:
        args, stdin = self._submit_args(workflow, options)
        doc = await self._submitter.run_async(args, stdin)
        warn_about(doc)
        return str(doc["id"])

    def _submit_args(self, workflow: Workflow, options: dict[str, Any]) -> tuple[list, str]:
        unknown = set(options) - {"inputs", "idempotency_key", "retention"}
        if unknown:
            raise TypeError(f"unexpected submit option(s): {', '.join(sorted(unknown))}")
        return workflow.submit_args(**options), workflow.to_json()

    # ------------------------------------------------------------------------- reading by id

    def status(self, workflow_id: str) -> WorkflowStatus:
        """The workflow's record and its tasks' states. Unknown id: ``WorkflowError`` with
        ``kind == "not_found"``."""
        return WorkflowStatus.from_json(self._submitter.run(["status", workflow_id]))

    async def status_async(self, workflow_id: str) -> WorkflowStatus:
        return WorkflowStatus.from_json(await self._submitter.run_async(["status", workflow_id]))

    def results(self, workflow_id: str) -> dict[str, TaskResult]:
        """Each task's status, result, error and meta, by name, in workflow order."""
        return parse_results(self._submitter.run(["results", workflow_id]))

    async def results_async(self, workflow_id: str) -> dict[str, TaskResult]:
        return parse_results(await self._submitter.run_async(["results", workflow_id]))

    def get(self, workflow_id: str, *, raise_on_failure: bool = False) -> WorkflowResult:
        """The workflow as it is now: status and every task's result (it need not have
        ended). ``raise_on_failure``: a failed or cancelled workflow raises
        ``WorkflowFailed``."""
        status = self.status(workflow_id)
        return _result(status, self.results(workflow_id), raise_on_failure)

    async def get_async(
        self, workflow_id: str, *, raise_on_failure: bool = False
    ) -> WorkflowResult:
        status = await self.status_async(workflow_id)
        return _result(status, await self.results_async(workflow_id), raise_on_failure)

    def wait(
        self,
        workflow_id: str,
        timeout: str | float | None = None,
        *,
        raise_on_failure: bool = False,
    ) -> WorkflowResult:
        """Follows the workflow until it ends, then returns it like ``get``. ``timeout`` (a
        duration like ``"5m"``, or seconds) raises ``WorkflowTimeout`` when it runs out; the
        workflow keeps running. A failed workflow is returned (``status == "failed"``) unless
        ``raise_on_failure``."""
        _check_end(workflow_id, self._submitter.run_lines(_watch_args(workflow_id, timeout)))
        return self.get(workflow_id, raise_on_failure=raise_on_failure)

    async def wait_async(
        self,
        workflow_id: str,
        timeout: str | float | None = None,
        *,
        raise_on_failure: bool = False,
    ) -> WorkflowResult:
        lines = await self._submitter.run_lines_async(_watch_args(workflow_id, timeout))
        _check_end(workflow_id, lines)
        return await self.get_async(workflow_id, raise_on_failure=raise_on_failure)

    def cancel(self, workflow_id: str) -> CancelResult:
        """Cancels a running workflow (tasks not started are cancelled, running ones finish
        but release nothing); a workflow that had ended is left as it is
        (``outcome == "already_finished"``)."""
        return CancelResult.from_json(self._submitter.run(["cancel", workflow_id]))

    async def cancel_async(self, workflow_id: str) -> CancelResult:
        return CancelResult.from_json(await self._submitter.run_async(["cancel", workflow_id]))

    # ------------------------------------------------------------------ the seed's coroutines

    async def start(self) -> GleitzeitCluster:
        """Checks that Redis answers (the seed's ``await cluster.start()``); a cluster holds
        no connection, so there is nothing else to start."""
        await self._submitter.run_async(["list", "--limit", "1"])
        return self

    async def stop(self) -> None:
        """Nothing to release (the seed's ``await cluster.stop()``)."""

    async def submit_workflow(self, workflow: Workflow, **options: Any) -> str:
        """``submit_async`` under the seed's name; returns the workflow id."""
        return await self.submit_async(workflow, **options)

    async def wait_for_workflow(
        self,
        workflow_id: str,
        timeout: str | float | None = None,
        *,
        raise_on_failure: bool = False,
    ) -> WorkflowResult:
        """``wait_async`` under the seed's name."""
        return await self.wait_async(workflow_id, timeout, raise_on_failure=raise_on_failure)

    async def execute_workflow(
        self,
        workflow: Workflow,
        timeout: str | float | None = None,
        *,
        raise_on_failure: bool = False,
        **options: Any,
    ) -> WorkflowResult:
        """Submits and waits (the seed's ``await cluster.execute_workflow(workflow)``)."""
        workflow_id = await self.submit_async(workflow, **options)
        return await self.wait_async(workflow_id, timeout, raise_on_failure=raise_on_failure)


def _duration(timeout: str | float) -> str:
    if isinstance(timeout, bool):
        raise TypeError("timeout must be a duration like '5m' or a number of seconds")
    if isinstance(timeout, (int, float)):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        return f"{int(timeout * 1000)}ms"
    return str(timeout)


def _watch_args(workflow_id: str, timeout: str | float | None) -> list[str]:
    args = ["watch", workflow_id]
    if timeout is not None:
        args += ["--timeout", _duration(timeout)]
    return args


def _check_end(workflow_id: str, lines: Sequence[dict]) -> None:
    end = lines[-1]
    if end.get("kind") != "end":
        raise WorkflowError(
            f"watch of workflow {workflow_id} ended without its end record: {end!r}",
            kind="internal",
            exit_code=1,
        )
    if end.get("timed_out"):
        raise WorkflowTimeout(workflow_id, str(end.get("status", "running")))


def _result(
    status: WorkflowStatus, tasks: dict[str, TaskResult], raise_on_failure: bool
) -> WorkflowResult:
    result = WorkflowResult(
        id=status.id, name=status.name, status=status.status, tasks=tasks, workflow=status
    )
    return result.raise_for_status() if raise_on_failure else result


def _flat(doc: dict[str, Any]) -> dict[str, Any]:
    """The CLI's published document with each entry ``{"endpoint": {...}, "routing": {...}}``
    (the worker's file shapes) as one mapping: the endpoint's fields, then its routing
    attributes."""
    entries = []
    for entry in doc.get("published") or []:
        if isinstance(entry, dict) and "endpoint" in entry:
            flat = dict(entry.get("endpoint") or {})
            flat.update(entry.get("routing") or {})
            entries.append(flat)
        else:
            entries.append(entry)
    return {**doc, "published": entries}
