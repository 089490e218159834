"""The Python workflow builder, submitted through the real ``gleitzeit-submit`` binary into a
real Redis (the binary is built by ``cargo build``; the tests skip without it)."""

import os
from pathlib import Path

import pytest
import redis

from gleitzeit import WorkflowError, create_workflow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def submitter():
    path = os.environ.get("GLEITZEIT_SUBMIT") or str(ROOT / "target/debug/gleitzeit-submit")
    if not Path(path).exists():
        pytest.skip(f"gleitzeit-submit not built at {path} (cargo build --bins)")
    return path


def pipeline():
    wf = create_workflow("Pipeline", input={"numbers": [3, 1, 2]})
    wf.add_external_task("Process", "process_data", args=["{{input.numbers}}"])
    wf.add_text_task("Explain", "Explain: {{Process.result}}", model="smollm2")
    wf.add_embed_task("Vector", "{{Explain.result}}", model="nomic-embed-text")
    return wf


def test_document_has_the_file_format():
    doc = pipeline().to_dict()
    assert doc["name"] == "Pipeline"
    assert doc["tasks"][0] == {
        "name": "Process",
        "type": "external",
        "service": "Python Tasks",
        "function": "process_data",
        "args": ["{{input.numbers}}"],
    }
    assert doc["tasks"][1]["type"] == "text"
    assert doc["tasks"][2]["prompt"] == "{{Explain.result}}"


def test_validate_uses_the_submitter(submitter):
    summary = pipeline().validate(submitter=submitter)
    assert summary["valid"] is True
    assert summary["tasks"] == 3
    assert summary["roots"] == ["Process"]
    assert "ext:Python Tasks" in summary["capabilities"]


def test_every_problem_is_reported_with_its_path(submitter):
    wf = create_workflow("Broken")
    wf.add_text_task("A", "uses {{Missing.result}}", model="smollm2")
    wf.add_text_task("A", "dup", model="smollm2", dependencies=["Nowhere"])
    with pytest.raises(WorkflowError) as info:
        wf.validate(submitter=submitter)
    err = info.value
    assert err.kind == "invalid"
    assert err.exit_code == 2
    paths = " ".join(e["path"] for e in err.errors)
    assert "tasks[1]" in paths
    assert len(err.errors) >= 3, err.errors
    assert "Missing" in str(err)


def test_submit_writes_the_workflow(submitter, redis_server):
    run = pipeline().submit(redis_url=redis_server.url, namespace="pyt", submitter=submitter)
    assert run.status == "running"
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert r.hget(f"{{pyt}}:wf:{run.id}", "name") == "Pipeline"
    # The root is queued on its capability stream; the others wait for it.
    assert r.xlen("{pyt}:q:ext:Python Tasks") == 1
    # Task fields live in the workflow hash as `<index>.<field>`; the state is one field,
    # `<index>.s`, whose first part is the status.
    assert r.hget(f"{{pyt}}:wf:{run.id}", "1.s").split("\x1f")[0] == "waiting"


def test_invalid_workflow_writes_nothing(submitter, redis_server):
    wf = create_workflow("Cycle")
    wf.add_text_task("A", "x", model="smollm2", dependencies=["B"])
    wf.add_text_task("B", "y", model="smollm2", dependencies=["A"])
    with pytest.raises(WorkflowError) as info:
        wf.submit(redis_url=redis_server.url, submitter=submitter)
    assert "A" in str(info.value) and "B" in str(info.value)
    assert redis.Redis.from_url(redis_server.url).dbsize() == 0


def test_unreachable_redis_is_its_own_error(submitter):
    with pytest.raises(WorkflowError) as info:
        pipeline().submit(redis_url="redis://127.0.0.1:1", submitter=submitter)
    assert info.value.kind == "unreachable"
    assert info.value.exit_code == 3


def test_retention_from_the_workflow_then_the_submit_call(submitter, redis_server):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    own = create_workflow("Kept", retention="2h")
    own.add_text_task("A", "x", model="smollm2")
    assert own.to_dict()["retention"] == "2h"
    run = own.submit(redis_url=redis_server.url, retention="5m", submitter=submitter)
    assert r.hget(f"{{gleitzeit}}:wf:{run.id}", "retention") == "7200"
    run = pipeline().submit(redis_url=redis_server.url, retention="5m", submitter=submitter)
    assert r.hget(f"{{gleitzeit}}:wf:{run.id}", "retention") == "300"


def test_a_full_redis_is_its_own_error_and_writes_nothing(submitter, redis_server):
    r = redis.Redis.from_url(redis_server.url)
    r.config_set("maxmemory", 1)
    try:
        with pytest.raises(WorkflowError) as info:
            pipeline().submit(redis_url=redis_server.url, submitter=submitter)
        assert info.value.kind == "redis_full"
        assert info.value.exit_code == 11
        assert r.dbsize() == 0
    finally:
        r.config_set("maxmemory", 0)


def test_the_seed_keywords_are_aliases():
    seed = create_workflow("Seed")
    seed.add_external_task(
        "Process",
        service_name="Python Tasks",
        external_parameters={"function_name": "process_data", "args": [1], "kwargs": {"k": 2}},
    )
    seed.add_text_task("Analyze", prompt="x", model="m", temperature=0.1, dependencies=["Process"])
    own = create_workflow("Seed")
    own.add_external_task("Process", "process_data", args=[1], kwargs={"k": 2},
                          service="Python Tasks")
    own.add_text_task("Analyze", "x", model="m", options={"temperature": 0.1},
                      dependencies=["Process"])
    assert seed.to_dict() == own.to_dict()
    # Both spellings agreeing is not a conflict.
    create_workflow("W").add_external_task(
        "P", "f", service="S", service_name="S", external_parameters={"function_name": "f"}
    )


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda wf: wf.add_external_task("P", "f", service="A", service_name="B"),
         ("service=", "service_name=")),
        (lambda wf: wf.add_external_task(
            "P", "f", external_parameters={"function_name": "g"}),
         ("function=", "external_parameters['function_name']")),
        (lambda wf: wf.add_external_task(
            "P", "f", args=[1], external_parameters={"args": [2]}),
         ("args=", "external_parameters['args']")),
        (lambda wf: wf.add_text_task("T", "p", temperature=0.1, options={"temperature": 0.5}),
         ("temperature=", "options=")),
    ],
)
def test_both_spellings_with_different_values_name_both(call, names):
    with pytest.raises(TypeError) as info:
        call(create_workflow("W"))
    for name in names:
        assert name in str(info.value)


def test_external_tasks_need_a_function_and_known_parameters():
    with pytest.raises(TypeError, match="needs the function"):
        create_workflow("W").add_external_task("P", service_name="Python Tasks")
    with pytest.raises(TypeError, match="'function'"):
        create_workflow("W").add_external_task("P", external_parameters={"function": "f"})
