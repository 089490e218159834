"""The seed's spelling against a real fleet: ``GleitzeitCluster``, ``create_workflow``, the
two usage patterns of the design document, workflows read back by id (blocking and async),
cancel, failures raised on request, a missing ``gleitzeit-submit``.

The fleet is real: a private redis-server, ``gleitzeit-worker`` processes, ``gleitzeit-sim``
speaking Ollama's API, and the seed's task service (``seed_service.py``) started by
``await start_task_service()`` from the environment. Model names are the seed's: the simulator
serves any model."""

from __future__ import annotations

import pytest
import redis

from conftest import TOKEN
from fleet import Fleet, binary
from gleitzeit import (
    GleitzeitCluster,
    GleitzeitWarning,
    SubmitterNotFound,
    WorkflowError,
    WorkflowFailed,
    WorkflowTimeout,
)

NAMESPACE = "seed"
DEFAULT_MODEL = "llama3"
#: Bound of a wait in these tests: reached only when the behaviour under test is broken.
GUARD = "60s"


@pytest.fixture
def deployment(monkeypatch, redis_server):
    """The environment a user of the seed's API has: where Redis is, the namespace, the
    submitter, the default model. ``GleitzeitCluster()`` reads it."""
    monkeypatch.setenv("GLEITZEIT_REDIS_URL", redis_server.url)
    monkeypatch.setenv("GLEITZEIT_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("GLEITZEIT_SUBMIT", binary("gleitzeit-submit"))
    monkeypatch.setenv("GLEITZEIT_DEFAULT_MODEL", DEFAULT_MODEL)
    return redis_server


@pytest.fixture
def fleet(deployment):
    fleet = Fleet(deployment.url, NAMESPACE, TOKEN)
    yield fleet
    fleet.stop()


@pytest.fixture
def llm_worker(fleet):
    """One worker with one Ollama simulator serving any model."""
    url = fleet.simulator("ollama")
    return fleet.worker([{"name": "sim", "kind": "ollama", "url": url, "models": ["*"]}])


def start_seed_service(fleet: Fleet) -> str:
    """Runs ``seed_service.py`` (``await start_task_service()`` with no arguments) with the
    deployment in its environment; returns the line it printed once it listened."""
    child = fleet.python(
        "seed_service.py",
        {
            "GLEITZEIT_REDIS_URL": fleet.redis_url,
            "GLEITZEIT_NAMESPACE": fleet.namespace,
            "GLEITZEIT_SERVICE_TOKEN": fleet.token,
            "GLEITZEIT_SERVICE_PORT": "0",
        },
    )
    return child.readline()


# -- usage pattern 1: pure LLM workflows -----------------------------------------------------


def test_pattern_1_pure_llm_workflow_read_back_by_id(deployment, llm_worker):
    cluster = GleitzeitCluster()

    # The design document's Pattern 1, verbatim.
    workflow = cluster.create_workflow("Analysis")

    # Chain multiple LLM tasks
    extract = workflow.add_text_task(
        "Extract Data",
        prompt="Extract key points from: {input}",
        model="llama3"
    )

    analyze = workflow.add_text_task(
        "Analyze",
        prompt="Analyze: {{Extract Data.result}}",
        model="mixtral",
        dependencies=["Extract Data"]
    )
    assert extract is analyze is workflow  # the builder chains

    # The seed's single-brace {input} is accepted, with a warning naming the real form.
    with pytest.warns(GleitzeitWarning, match=r"Extract Data.*\{\{input\}\}") as caught:
        workflow_id = cluster.submit(workflow)
    assert caught[0].filename == __file__, "the warning points at the caller's line"
    done = cluster.wait(workflow_id, timeout=GUARD)
    assert done.status == "completed", done
    assert done.ok and done.finished

    # Read back by id, as another process would.
    again = GleitzeitCluster().get(workflow_id)
    assert again.status == "completed"
    assert list(again.tasks) == ["Extract Data", "Analyze"]
    extracted = again.results["Extract Data"]
    assert "{input}" in extracted  # single braces are text, not a template
    assert extracted in again.results["Analyze"]
    assert again.tasks["Analyze"].meta["model"] == "mixtral"
    assert again.tasks["Extract Data"].meta["endpoint"] == "sim"
    assert again.errors == {}

    status = cluster.status(workflow_id)
    assert (status.name, status.status, status.total, status.completed) == (
        "Analysis", "completed", 2, 2
    )
    assert [t.status for t in status.tasks] == ["completed", "completed"]
    assert [t.capability for t in status.tasks] == ["llm:llama3", "llm:mixtral"]

    results = cluster.results(workflow_id)
    assert results["Analyze"].ok and results["Analyze"].result == again.results["Analyze"]


# -- usage pattern 2: mixed LLM + Python workflows --------------------------------------------


async def test_pattern_2_mixed_workflow_with_the_seed_service(deployment, fleet, llm_worker):
    line = start_seed_service(fleet)
    assert line.startswith("gleitzeit service 'Python Tasks' listening on http://127.0.0.1:")
    assert line.endswith(f"registered in {fleet.redis_url} (namespace {NAMESPACE})")

    cluster = GleitzeitCluster()
    await cluster.start()

    # The design document's Pattern 2, verbatim (process_data is in seed_service.py).
    # Mix Python and LLM tasks
    workflow = cluster.create_workflow("Pipeline")

    python_task = workflow.add_external_task(
        "Process",
        service_name="Python Tasks",
        external_parameters={"function_name": "process_data"}
    )

    llm_task = workflow.add_text_task(
        "Generate",
        prompt="Based on {{Process.result}}, generate...",
        dependencies=["Process"]
    )
    assert python_task is llm_task is workflow

    # The seed's coroutines.
    workflow_id = await cluster.submit_workflow(workflow)
    result = await cluster.wait_for_workflow(workflow_id, timeout=GUARD)
    assert result.status == "completed", result
    assert result.results["Process"] == {"words": 4, "first": "Gleitzeit"}
    # The simulator echoes the prompt: the function's result reached it as JSON text.
    assert 'Based on {"first":"Gleitzeit","words":4}, generate...' in result.results["Generate"]

    # Read back by id with the async variants.
    status = await cluster.status_async(workflow_id)
    assert status.status == "completed"
    assert [t.capability for t in status.tasks] == ["ext:Python Tasks", f"llm:{DEFAULT_MODEL}"]
    results = await cluster.results_async(workflow_id)
    assert results["Generate"].meta["model"] == DEFAULT_MODEL  # from GLEITZEIT_DEFAULT_MODEL
    got = await cluster.get_async(workflow_id, raise_on_failure=True)
    assert got.results == result.results
    await cluster.stop()


async def test_a_failed_workflow_raises_on_request_with_the_traceback(
    deployment, fleet, llm_worker
):
    start_seed_service(fleet)
    cluster = GleitzeitCluster()
    workflow = cluster.create_workflow("Breaks")
    workflow.add_external_task(
        "Explode",
        service_name="Python Tasks",
        external_parameters={"function_name": "explode", "args": ["no numbers in here"]},
    )
    workflow.add_text_task("After", prompt="{{Explode.result}}", dependencies=["Explode"])
    workflow_id = cluster.submit(workflow)

    # Returned as it is unless raising is asked for.
    result = cluster.wait(workflow_id, timeout=GUARD)
    assert result.status == "failed"
    assert not result.ok
    error = result.tasks["Explode"].error
    assert error is not None and error.kind == "permanent"
    assert error.type == "ValueError"
    assert "no numbers in here" in error.message
    assert 'raise ValueError(reason)' in error.traceback
    assert result.tasks["After"].status == "cancelled"
    assert result.tasks["After"].reason == (
        'task "Explode" failed and the policy fail_fast cancels the rest'
    )
    assert result.tasks["Explode"].reason is None

    with pytest.raises(WorkflowFailed) as info:
        await cluster.wait_async(workflow_id, timeout=GUARD, raise_on_failure=True)
    assert info.value.result.id == workflow_id
    assert "Explode" in str(info.value) and "ValueError: no numbers in here" in str(info.value)
    with pytest.raises(WorkflowFailed):
        cluster.get(workflow_id).raise_for_status()


# -- by id without a fleet: cancel, timeouts, unknown ids -------------------------------------


def unserved_workflow(cluster: GleitzeitCluster):
    """A workflow no worker takes: its external service does not exist."""
    workflow = cluster.create_workflow("Waits")
    workflow.add_external_task("Never", function="nothing", service="Nobody Serves This")
    workflow.add_text_task("Later", "{{Never.result}}", dependencies=["Never"])
    return workflow


def test_cancel_by_id_and_a_wait_that_times_out(deployment):
    cluster = GleitzeitCluster()
    # Said at once, as a warning: nothing serves the task, so it will wait.
    with pytest.warns(GleitzeitWarning, match="no live worker"):
        workflow_id = cluster.submit(unserved_workflow(cluster))
    assert cluster.status(workflow_id).status == "running"

    with pytest.raises(WorkflowTimeout) as info:
        cluster.wait(workflow_id, timeout="1s")
    assert info.value.status == "running"
    assert isinstance(info.value, TimeoutError)

    cancelled = cluster.cancel(workflow_id)
    assert (cancelled.id, cancelled.outcome, cancelled.status) == (
        workflow_id, "cancelled", "cancelled"
    )
    assert cancelled.cancelled
    assert cluster.cancel(workflow_id).outcome == "already_finished"

    done = cluster.wait(workflow_id, timeout=GUARD)
    assert done.status == "cancelled"
    assert {t.status for t in done.tasks.values()} == {"cancelled"}
    assert {t.reason for t in done.tasks.values()} == {"the workflow was cancelled"}
    assert {t.reason for t in cluster.status(workflow_id).tasks} == {"the workflow was cancelled"}
    with pytest.raises(WorkflowFailed):
        cluster.get(workflow_id, raise_on_failure=True)


@pytest.mark.filterwarnings("ignore::gleitzeit.GleitzeitWarning")
async def test_async_cancel_and_timeout(deployment):
    cluster = GleitzeitCluster()
    workflow_id = await cluster.submit_async(unserved_workflow(cluster))
    with pytest.raises(WorkflowTimeout):
        await cluster.wait_async(workflow_id, timeout=0.5)
    cancelled = await cluster.cancel_async(workflow_id)
    assert cancelled.outcome == "cancelled"
    assert (await cluster.status_async(workflow_id)).status == "cancelled"
    assert (await cluster.wait_for_workflow(workflow_id)).status == "cancelled"


async def test_unknown_ids_are_not_found(deployment):
    cluster = GleitzeitCluster()
    for call in (cluster.status, cluster.results, cluster.get, cluster.wait, cluster.cancel):
        with pytest.raises(WorkflowError) as info:
            call("no-such-workflow")
        assert (info.value.kind, info.value.exit_code) == ("not_found", 5), call
    with pytest.raises(WorkflowError) as info:
        await cluster.get_async("no-such-workflow")
    assert info.value.kind == "not_found"


@pytest.mark.filterwarnings("ignore::gleitzeit.GleitzeitWarning")
def test_arguments_win_over_the_environment(deployment, redis_server):
    cluster = GleitzeitCluster(namespace="other", default_model="mixtral")
    assert cluster.redis_url == redis_server.url
    workflow = cluster.create_workflow("Elsewhere", "a description")
    workflow.add_text_task("Only", "hello")
    assert workflow.to_dict()["defaults"] == {"model": "mixtral"}
    assert workflow.to_dict()["description"] == "a description"
    run = workflow.submit()  # bound to the cluster: its Redis and namespace
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert r.hget(f"{{other}}:wf:{run.id}", "name") == "Elsewhere"
    assert r.exists(f"{{{NAMESPACE}}}:wf:{run.id}") == 0


async def test_an_unreachable_redis_fails_at_start(deployment):
    cluster = GleitzeitCluster(redis_url="redis://127.0.0.1:1")
    with pytest.raises(WorkflowError) as info:
        await cluster.start()
    assert info.value.kind == "unreachable"


# -- a missing gleitzeit-submit ---------------------------------------------------------------


def test_a_missing_submitter_is_an_early_error_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("GLEITZEIT_SUBMIT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SubmitterNotFound) as info:
        GleitzeitCluster()
    message = str(info.value)
    assert "gleitzeit-submit not found on PATH or GLEITZEIT_SUBMIT" in message
    assert "cargo build --release -p gleitzeit-submit" in message
    assert "target/release on PATH" in message
    assert info.value.kind == "usage"

    monkeypatch.setenv("GLEITZEIT_SUBMIT", str(tmp_path / "gone"))
    with pytest.raises(SubmitterNotFound) as info:
        GleitzeitCluster()
    assert "GLEITZEIT_SUBMIT names" in str(info.value) and "gone" in str(info.value)

    with pytest.raises(SubmitterNotFound):
        GleitzeitCluster(submitter=str(tmp_path / "also-gone"))
