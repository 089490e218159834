"""The package's encoders/decoders against every fixture in tests/protocol/ (shared with the
Rust worker), and the discovery key builders against keys.json."""

from __future__ import annotations

import json
import pathlib

import pytest

from gleitzeit import discovery, handshake
from gleitzeit.protocol import (
    ERROR_KINDS,
    EVENT_CALL,
    EVENT_HELLO,
    EVENT_RESULT,
    EVENT_SERVICE_AUTH,
    EVENT_WORKER_AUTH,
    Call,
    ConnectAuth,
    Hello,
    ProtocolError,
    Result,
    ServiceAuth,
    WorkerAuth,
    unwrap_payload,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "protocol"
CODECS = {
    "hello.json": Hello,
    "call.json": Call,
    "connect_auth.json": ConnectAuth,
    "worker_auth.json": WorkerAuth,
    "service_auth.json": ServiceAuth,
}
CODECS.update({p.name: Result for p in FIXTURES.glob("result_*.json")})


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def cases(kind: str):
    for name, codec in sorted(CODECS.items()):
        for example in load(name)[kind]:
            yield pytest.param(codec, example, id=f"{name}:{example['name']}")


def test_every_message_kind_has_a_fixture():
    expected = {"hello.json", "call.json", "result_ok.json", "keys.json", "event_args.json"}
    expected |= {"connect_auth.json", "worker_auth.json", "service_auth.json", "handshake.json"}
    expected |= {f"result_error_{kind}.json" for kind in ERROR_KINDS}
    assert expected == {p.name for p in FIXTURES.glob("*.json")}
    for kind in ERROR_KINDS:
        fixture = load(f"result_error_{kind}.json")
        assert fixture["kind"] == kind
        assert all(ex["message"]["error"]["kind"] == kind for ex in fixture["valid"])
    assert load("hello.json")["event"] == EVENT_HELLO
    assert load("call.json")["event"] == EVENT_CALL
    assert load("result_ok.json")["event"] == EVENT_RESULT
    assert load("worker_auth.json")["event"] == EVENT_WORKER_AUTH
    assert load("service_auth.json")["event"] == EVENT_SERVICE_AUTH


@pytest.mark.parametrize("vector", load("handshake.json")["vectors"], ids=lambda v: v["name"])
def test_handshake_vectors(vector):
    fixture = load("handshake.json")
    assert fixture["service_label"] == handshake.SERVICE_PROOF_LABEL
    assert fixture["worker_label"] == handshake.WORKER_PROOF_LABEL
    data = handshake.ProofInput(
        vector["service"],
        vector["instance"],
        vector["url"],
        vector["worker_nonce"],
        vector["service_nonce"],
    )
    token = vector["token"]
    assert data.message(handshake.SERVICE_PROOF_LABEL).hex() == vector["service_message_hex"]
    assert handshake.service_proof(token, data) == vector["service_proof"]
    assert handshake.worker_proof(token, data) == vector["worker_proof"]
    assert handshake.verify_service_proof(token, data, vector["service_proof"])
    assert handshake.verify_worker_proof(token, data, vector["worker_proof"])
    assert not handshake.verify_worker_proof(token, data, vector["service_proof"])
    assert not handshake.verify_service_proof("wrong", data, vector["service_proof"])
    assert not handshake.verify_service_proof(token, data, vector["service_proof"].upper())


@pytest.mark.parametrize("codec, example", list(cases("valid")))
def test_valid_examples_round_trip(codec, example):
    decoded = codec.from_json(example["message"])
    encoded = decoded.to_json()
    assert encoded == example.get("normalized", example["message"])
    # The canonical form survives JSON text and decodes to the same value.
    assert codec.from_json(json.loads(json.dumps(encoded))) == decoded


@pytest.mark.parametrize("codec, example", list(cases("invalid")))
def test_invalid_examples_are_rejected(codec, example):
    with pytest.raises(ProtocolError) as info:
        codec.from_json(example["message"])
    if "request_id" in example:  # call.json says which request id is still answerable
        assert info.value.request_id == example["request_id"]


def test_retryable_flags_follow_the_kind():
    for kind, retryable in [
        ("unknown_function", {False}),
        ("bad_request", {False}),
        ("not_json", {False}),
        ("timeout", {True}),
        ("overloaded", {True}),
        ("exception", {False, True}),
    ]:
        seen = {
            Result.from_json(ex["message"]).error.retryable
            for ex in load(f"result_error_{kind}.json")["valid"]
        }
        assert seen == retryable, kind


@pytest.mark.parametrize("example", load("event_args.json")["valid"], ids=lambda e: e["name"])
def test_event_args_unwrap(example):
    assert unwrap_payload(tuple(example["args"])) == example["payload"]


@pytest.mark.parametrize("example", load("event_args.json")["invalid"], ids=lambda e: e["name"])
def test_event_args_invalid(example):
    with pytest.raises(ProtocolError):
        unwrap_payload(tuple(example["args"]))


def test_key_patterns_match_keys_fixture():
    keys = load("keys.json")
    assert keys["ttl_ms_default"] == int(discovery.DEFAULT_TTL * 1000)
    for ex in keys["examples"]:
        assert discovery.service_key(ex["namespace"], ex["service"]) == ex["service_key"]
        assert (
            discovery.instance_key(ex["namespace"], ex["service"], ex["instance"])
            == ex["instance_key"]
        )
        assert (
            discovery.service_key(ex["namespace"], ex["service"], spread=True)
            == ex["spread_service_key"]
        )
        assert (
            discovery.instance_key(ex["namespace"], ex["service"], ex["instance"], spread=True)
            == ex["spread_instance_key"]
        )
    fields = set(keys["patterns"]["instance"]["fields"])
    sample = keys["instance_hash_example"]
    assert set(sample) == fields
    registration = discovery.Registration.from_hash(sample)
    assert registration.to_hash() == sample  # the service writes exactly this shape
    for bad in keys["invalid_names"]:
        with pytest.raises(discovery.DiscoveryError):
            if bad["what"] == "namespace":
                discovery.service_key(bad["value"], "svc")
            else:
                discovery.service_key("gleitzeit", bad["value"])


async def test_service_messages_match_the_codecs(make_service):
    """What the service itself sends decodes with the same codecs (hello built by a service)."""
    service = await make_service(
        name="Fixture Svc", auth_token="t", functions=["process_data", "fetch_async"]
    )
    nonces = handshake.new_nonce(), handshake.new_nonce()
    hello = service.hello(*nonces).to_json()
    assert Hello.from_json(hello).to_json() == hello
    assert hello["protocol"] == 2 and hello["service"] == "Fixture Svc"
    assert hello["url"] == service.url and hello["nonce"] == nonces[1]
    data = handshake.ProofInput("Fixture Svc", service.instance_id, service.url, *nonces)
    assert handshake.verify_service_proof("t", data, hello["proof"])
