"""Endpoints published from Python: ``EndpointConfig``, ``LoadBalancingStrategy`` and the
seed's endpoint example against a real fleet.

Publishing runs ``gleitzeit-submit endpoints add|strategy|published``; the tests that need
those subcommands skip while the built ``gleitzeit-submit`` does not have them
(``gleitzeit-submit endpoints add --help`` exits non-zero)."""

from __future__ import annotations

import subprocess

import pytest
import redis

from conftest import TOKEN
from fleet import Fleet, binary
from gleitzeit import EndpointConfig, EndpointError, GleitzeitCluster, LoadBalancingStrategy

NAMESPACE = "eps"
GUARD = "60s"


def has_publishing() -> bool:
    proc = subprocess.run(
        [binary("gleitzeit-submit"), "endpoints", "add", "--help"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture
def publishing(monkeypatch, redis_server):
    if not has_publishing():
        pytest.skip("this gleitzeit-submit cannot publish endpoints (no `endpoints add`)")
    monkeypatch.setenv("GLEITZEIT_REDIS_URL", redis_server.url)
    monkeypatch.setenv("GLEITZEIT_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("GLEITZEIT_SUBMIT", binary("gleitzeit-submit"))
    return redis_server


# -- without Redis ----------------------------------------------------------------------------


def test_strategies_are_the_workers_names():
    assert [s.value for s in LoadBalancingStrategy] == [
        "round_robin", "least_loaded", "priority", "fastest", "model_affinity"
    ]
    assert LoadBalancingStrategy("least_loaded") is LoadBalancingStrategy.LEAST_LOADED
    assert str(LoadBalancingStrategy.PRIORITY) == "priority"


def test_the_seed_spelling_becomes_the_command_line():
    endpoint = EndpointConfig("http://gpu-server-1:11434", priority=1, gpu=True)
    assert endpoint.endpoint_name == "gpu-server-1-11434"
    assert endpoint.add_args("ollama") == [
        "endpoints", "add", "gpu-server-1-11434", "--kind", "ollama",
        "--url", "http://gpu-server-1:11434", "--priority", "1", "--gpu",
    ]
    full = EndpointConfig(
        name="main_server",
        url="https://llm.example.com/v1",
        priority=5,
        max_concurrent=8,
        models=["gpt-4o", "gpt-4o-mini"],
        tags={"general", "code"},
        api_key_env="OPENAI_API_KEY",
        memory_gb=24.0,
        max_loaded=2,
        timeout="120s",
    )
    assert full.add_args("openai") == [
        "endpoints", "add", "main_server", "--kind", "openai",
        "--url", "https://llm.example.com/v1", "--models", "gpt-4o,gpt-4o-mini",
        "--api-key-env", "OPENAI_API_KEY", "--priority", "5",
        "--max-concurrent", "8", "--memory-gb", "24.0", "--max-loaded", "2",
        "--timeout", "120s", "--tag", "code", "--tag", "general",
    ]
    assert EndpointConfig("http://[::1]:8080").endpoint_name == "1-8080"
    assert EndpointConfig("http://cpu-server").endpoint_name == "cpu-server"


def test_keys_are_never_accepted():
    with pytest.raises(TypeError):
        EndpointConfig("https://api.openai.com", api_key="sk-secret")  # type: ignore[call-arg]


def test_list_and_kind_must_agree_and_names_be_unique(monkeypatch):
    monkeypatch.setenv("GLEITZEIT_SUBMIT", binary("gleitzeit-submit"))
    with pytest.raises(ValueError, match="kind='ollama' but is in openai_endpoints"):
        GleitzeitCluster(openai_endpoints=[EndpointConfig("http://h:1", kind="ollama")])
    with pytest.raises(ValueError, match="'h-1' given more than once"):
        GleitzeitCluster(
            ollama_endpoints=[EndpointConfig("http://h:1"), EndpointConfig("http://H:1/x")]
        )
    with pytest.raises(ValueError):
        GleitzeitCluster(ollama_strategy="sideways")
    with pytest.raises(TypeError, match="EndpointConfig"):
        GleitzeitCluster(ollama_endpoints=["http://h:1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of strings"):
        EndpointConfig("http://h:1", models="llama3").add_args("ollama")


def test_no_endpoints_no_publishing(monkeypatch):
    # Nothing to publish: the constructor does not run the command against Redis at all.
    monkeypatch.setenv("GLEITZEIT_SUBMIT", binary("gleitzeit-submit"))
    cluster = GleitzeitCluster(redis_url="redis://127.0.0.1:1")
    assert cluster.published is None and cluster.endpoint_names == []


# -- publishing (needs `gleitzeit-submit endpoints add`) ----------------------------------------


def test_the_seed_endpoint_example_publishes_and_serves(publishing):
    fleet = Fleet(publishing.url, NAMESPACE, TOKEN)
    try:
        urls = [fleet.simulator("ollama") for _ in range(3)]
        gpu1, gpu2, cpu = urls

        # The design document's endpoint example, verbatim but for the URLs.
        # Configure multiple Ollama endpoints
        cluster = GleitzeitCluster(
            ollama_endpoints=[
                EndpointConfig(gpu1, priority=1, gpu=True),
                EndpointConfig(gpu2, priority=2, gpu=True),
                EndpointConfig(cpu, priority=3, gpu=False),
            ],
            ollama_strategy=LoadBalancingStrategy.LEAST_LOADED
        )

        names = cluster.endpoint_names
        published = cluster.published_endpoints()
        assert published == cluster.published
        assert sorted(e["name"] for e in published["published"]) == sorted(names)
        assert published["strategy"] == "least_loaded"
        by_name = {e["name"]: e for e in published["published"]}
        assert by_name[names[0]]["url"].rstrip("/") == gpu1.rstrip("/")

        # A worker whose own file endpoint serves another model only: the task below can
        # run only on a published endpoint.
        own = fleet.simulator("ollama", "--models", "file-only")
        # The worker opts in to the endpoints published to the fleet.
        fleet.worker(
            [{"name": "file", "kind": "ollama", "url": own, "models": ["file-only"]}],
            published_endpoints="adopt",
        )

        workflow = cluster.create_workflow("Heavy")
        # Tasks automatically distributed across endpoints
        workflow.add_text_task(
            "Heavy Task",
            prompt="Complex prompt...",
            model="llama3:70b",  # Automatically routed to GPU server
        )
        workflow_id = cluster.submit(workflow)
        result = cluster.wait(workflow_id, timeout=GUARD, raise_on_failure=True)
        assert "Complex prompt..." in result.results["Heavy Task"]
        assert result.tasks["Heavy Task"].meta["endpoint"] in names
    finally:
        fleet.stop()


def test_a_refused_endpoint_names_itself_and_publishing_is_idempotent(publishing):
    good = EndpointConfig("http://127.0.0.1:11434", name="good")
    cluster = GleitzeitCluster(ollama_endpoints=[good])
    again = GleitzeitCluster(ollama_endpoints=[good])  # the same endpoint again: replaced
    assert [e["name"] for e in again.published["published"]] == ["good"]
    with pytest.raises(EndpointError) as info:
        GleitzeitCluster(ollama_endpoints=[EndpointConfig("not a url", name="broken")])
    assert info.value.endpoint == "broken"
    assert info.value.exit_code == 2
    assert "broken" in str(info.value)
    assert [e["name"] for e in cluster.published_endpoints()["published"]] == ["good"]
    assert cluster.remove_endpoint("good")["published"] == []


def test_api_keys_are_published_by_variable_name_only(publishing, monkeypatch):
    monkeypatch.setenv("PY_TEST_OPENAI_KEY", "sk-never-in-redis")
    cluster = GleitzeitCluster(
        openai_endpoints=[
            EndpointConfig("https://llm.example.com/v1", api_key_env="PY_TEST_OPENAI_KEY")
        ]
    )
    (endpoint,) = cluster.published["published"]
    assert endpoint["api_key_env"] == "PY_TEST_OPENAI_KEY"
    r = redis.Redis.from_url(publishing.url, decode_responses=True)
    assert r.keys("*"), "nothing was published"
    for key in r.keys("*"):
        assert "sk-never-in-redis" not in repr(everything_in(r, key)), key


def everything_in(r: redis.Redis, key: str):
    kind = r.type(key)
    read = {
        "string": lambda: r.get(key),
        "hash": lambda: r.hgetall(key),
        "set": lambda: r.smembers(key),
        "zset": lambda: r.zrange(key, 0, -1, withscores=True),
        "list": lambda: r.lrange(key, 0, -1),
        "stream": lambda: r.xrange(key),
    }
    return read[kind]()
