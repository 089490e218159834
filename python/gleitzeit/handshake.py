"""The mutual challenge-response that opens every connection between a worker and a task service
(``docs/protocol.md``, "Connection"; ``docs/security.md``).

Both sides hold the shared service token and never send it. The worker connects with a fresh
nonce; the service answers in ``service:hello`` with a nonce of its own and a proof
(HMAC-SHA256 keyed with the token) over both nonces, its service name, instance id and
advertised address; the worker checks that proof before it sends anything else and then proves
itself under another label. The Rust worker implements the same functions
(``gleitzeit_core::handshake``); ``tests/protocol/handshake.json`` holds shared test vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .protocol import _HEX64, ProtocolError

NONCE_HEX_LEN = 64
PROOF_HEX_LEN = 64
SERVICE_PROOF_LABEL = "gleitzeit/2 service proof"
WORKER_PROOF_LABEL = "gleitzeit/2 worker proof"


def new_nonce() -> str:
    """A fresh nonce: 32 random bytes as lowercase hex."""
    return secrets.token_hex(32)


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def check_nonce(value: object, what: str) -> str:
    """``value`` if it is a nonce (64 lowercase hex digits), else ``ProtocolError`` naming it."""
    if not is_hex64(value):
        raise ProtocolError(f"{what} must be {NONCE_HEX_LEN} lowercase hex digits")
    assert isinstance(value, str)
    return value


def check_proof(value: object, what: str) -> str:
    """``value`` if it has the shape of a proof, else ``ProtocolError`` naming it."""
    if not is_hex64(value):
        raise ProtocolError(f"{what} must be {PROOF_HEX_LEN} lowercase hex digits")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True)
class ProofInput:
    """What both proofs of one connection cover."""

    service: str
    instance: str
    url: str
    worker_nonce: str
    service_nonce: str

    def message(self, label: str) -> bytes:
        """The label, a zero byte, then every field as ``<byte length>:<bytes>`` (so no choice
        of values makes two inputs collide)."""
        out = bytearray(label.encode("utf-8"))
        out.append(0)
        for value in (self.service, self.instance, self.url, self.worker_nonce, self.service_nonce):
            raw = value.encode("utf-8")
            out += str(len(raw)).encode("ascii") + b":" + raw
        return bytes(out)


def _prove(token: str, label: str, data: ProofInput) -> str:
    return hmac.new(token.encode("utf-8"), data.message(label), hashlib.sha256).hexdigest()


def service_proof(token: str, data: ProofInput) -> str:
    return _prove(token, SERVICE_PROOF_LABEL, data)


def worker_proof(token: str, data: ProofInput) -> str:
    return _prove(token, WORKER_PROOF_LABEL, data)


def _verify(token: str, label: str, data: ProofInput, proof: object) -> bool:
    if not is_hex64(proof):
        return False
    assert isinstance(proof, str)
    return hmac.compare_digest(_prove(token, label, data).encode("ascii"), proof.encode("ascii"))


def verify_service_proof(token: str, data: ProofInput, proof: object) -> bool:
    """Whether ``proof`` is the service's proof for ``data`` (constant-time compare)."""
    return _verify(token, SERVICE_PROOF_LABEL, data, proof)


def verify_worker_proof(token: str, data: ProofInput, proof: object) -> bool:
    """Whether ``proof`` is the worker's proof for ``data`` (constant-time compare)."""
    return _verify(token, WORKER_PROOF_LABEL, data, proof)


__all__ = [
    "NONCE_HEX_LEN",
    "PROOF_HEX_LEN",
    "SERVICE_PROOF_LABEL",
    "WORKER_PROOF_LABEL",
    "ProofInput",
    "check_nonce",
    "check_proof",
    "is_hex64",
    "new_nonce",
    "service_proof",
    "verify_service_proof",
    "verify_worker_proof",
    "worker_proof",
]
