"""A real fleet for end-to-end tests driven from Python: the Rust binaries built by
``cargo build`` (``gleitzeit-submit``, ``gleitzeit-worker``, and ``gleitzeit-sim``, the Ollama /
OpenAI / Anthropic API simulator of the testkit), each a child process killed when the test
ends. Tests that need them skip when they are not built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent


def binary(name: str) -> str:
    """A binary of this checkout (``GLEITZEIT_BIN_DIR`` or ``target/debug``); skips the test
    when it is not built."""
    directory = Path(os.environ.get("GLEITZEIT_BIN_DIR") or ROOT / "target/debug")
    path = directory / name
    if not path.exists():
        pytest.skip(f"{name} not built at {path} (cargo build --bins)")
    return str(path)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child: no inherited ``GLEITZEIT_*`` variable (the binaries read
    them), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLEITZEIT_")}
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


class Child:
    """A child process whose stdout lines are read on demand and whose stderr goes to a log
    file (printed by ``log()``)."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], label: str, read_stdout: bool = True
    ) -> None:
        self.log_file = tempfile.NamedTemporaryFile(
            prefix=f"gleitzeit-{label}-", suffix=".log", delete=False
        )
        self.label = label
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            # A child whose stdout nobody reads writes it to the log: a full pipe would stop it.
            stdout=subprocess.PIPE if read_stdout else self.log_file,
            stderr=self.log_file,
            text=True,
        )

    def readline(self) -> str:
        """The next stdout line (blocks until the child writes it or exits)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"{self.label} exited ({self.proc.wait()}): {self.log()}")
        return line.strip()

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log_file.close()
        os.unlink(self.log_file.name)


class Fleet:
    """Children of one test: simulators, workers and task services."""

    def __init__(self, redis_url: str, namespace: str, token: str) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.token = token
        self.children: list[Child] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="gleitzeit-fleet-")

    def simulator(self, kind: str = "ollama", *args: str) -> str:
        """Starts ``gleitzeit-sim`` on a free port; returns its URL (its first stdout line)."""
        child = Child(
            [binary("gleitzeit-sim"), "--kind", kind, "--port", "0", *args],
            clean_env(),
            f"sim-{kind}",
        )
        self.children.append(child)
        return child.readline()

    def worker(self, endpoints: list[dict[str, Any]], **config: Any) -> Child:
        """Starts ``gleitzeit-worker`` with these file endpoints, serving external tasks with
        the fleet's token."""
        doc = {
            "redis_url": self.redis_url,
            "namespace": self.namespace,
            "concurrency": 4,
            "caps_refresh": "200ms",
            "claim_idle": "5s",
            "promote_interval_max": "200ms",
            "metrics_addr": "off",
            "endpoints": endpoints,
            **config,
        }
        path = Path(self.tmp.name) / f"worker-{len(self.children)}.yaml"
        path.write_text(json.dumps(doc))
        child = Child(
            [binary("gleitzeit-worker"), "--config", str(path)],
            clean_env(GLEITZEIT_SERVICE_TOKEN=self.token, RUST_LOG="info"),
            "worker",
            read_stdout=False,
        )
        self.children.append(child)
        return child

    def python(self, script: str, env: dict[str, str]) -> Child:
        """Runs a Python script of the tests directory with this checkout's package."""
        pythonpath = os.pathsep.join([str(ROOT / "python"), str(TESTS)])
        child = Child(
            [sys.executable, str(TESTS / script)],
            clean_env(PYTHONPATH=pythonpath, PYTHONUNBUFFERED="1", **env),
            Path(script).stem,
        )
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.tmp.cleanup()
