"""The gleitzeit-service command, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap

from conftest import GUARD, TOKEN, Client, env_with_package
from gleitzeit import discovery

MODULE = textwrap.dedent(
    """
    from gleitzeit import gleitzeit_task, RetryableError

    @gleitzeit_task(description="Add two numbers.")
    def add(a, b):
        return a + b

    @gleitzeit_task(name="shout", timeout=5)
    async def shout_it(text):
        return text.upper() + "!"
    """
)


async def start_cli(tmp_path, *args, env_extra=None):
    (tmp_path / "my_tasks.py").write_text(MODULE)
    env = env_with_package()
    env.update(env_extra or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gleitzeit.service",
        *args,
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return proc


async def read_ready(proc) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), GUARD)
    if not line:
        err = await proc.stderr.read()
        raise AssertionError(f"service exited before ready: {err.decode()}")
    ready = json.loads(line)
    assert ready["event"] == "ready"
    return ready


async def test_cli_imports_module_serves_it_registers_and_stops_on_sigterm(
    tmp_path, redis_server, redis_client
):
    proc = await start_cli(
        tmp_path,
        "--name",
        "CLI Tasks",
        "--port",
        "0",
        "--redis-url",
        redis_server.url,
        "--max-concurrency",
        "3",
        "my_tasks",
        env_extra={"GLEITZEIT_SERVICE_TOKEN": TOKEN},
    )
    try:
        ready = await read_ready(proc)
        assert ready["service"] == "CLI Tasks"
        assert ready["functions"] == ["add", "shout"]
        client = Client()
        await client.connect(f"http://127.0.0.1:{ready['port']}")
        hello = await asyncio.wait_for(client.hello, GUARD)
        assert hello.max_concurrency == 3
        assert {f.name: f.timeout_ms for f in hello.functions} == {"add": None, "shout": 5000}
        assert (await client.call("add", 2, 3)).result == 5
        assert (await client.call("shout", "hi")).result == "HI!"
        live = await discovery.live_instances(redis_client, "gleitzeit", "CLI Tasks")
        assert [r.instance for r in live] == [ready["instance"]]
        assert live[0].url == ready["url"]
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(client.disconnected.wait(), GUARD)
        await client.close()
        code = await asyncio.wait_for(proc.wait(), GUARD)
        stderr = (await proc.stderr.read()).decode()
        assert code == 0, stderr
        assert TOKEN not in stderr
        assert "SIGTERM received" in stderr
        assert (
            await redis_client.zscore(
                discovery.service_key("gleitzeit", "CLI Tasks"), ready["instance"]
            )
            is None
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_token_file_and_sigint(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    proc = await start_cli(tmp_path, "--port", "0", "--token-file", str(token_file), "my_tasks")
    try:
        ready = await read_ready(proc)
        client = Client()
        await client.connect(f"http://127.0.0.1:{ready['port']}", token="file-token")
        assert (await client.call("add", "a", "b")).result == "ab"
        await client.close()
        proc.send_signal(signal.SIGINT)
        try:
            assert await asyncio.wait_for(proc.wait(), GUARD) == 0
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError((await proc.stderr.read()).decode()) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run_to_exit(tmp_path, *args, env_extra=None):
    proc = await start_cli(tmp_path, *args, env_extra=env_extra)
    out, err = await asyncio.wait_for(proc.communicate(), GUARD)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_refuses_to_start_without_token(tmp_path):
    code, out, err = await run_to_exit(tmp_path, "--port", "0", "my_tasks")
    assert code == 2
    assert "no service token configured" in err
    assert out == ""


async def test_cli_unknown_module_is_a_usage_error(tmp_path):
    code, _, err = await run_to_exit(
        tmp_path, "--port", "0", "no_such_module_xyz", env_extra={"GLEITZEIT_SERVICE_TOKEN": TOKEN}
    )
    assert code == 2
    assert "no_such_module_xyz" in err


async def test_cli_module_without_tasks_is_a_usage_error(tmp_path):
    (tmp_path / "empty_mod.py").write_text("X = 1\n")
    code, _, err = await run_to_exit(
        tmp_path, "--port", "0", "empty_mod", env_extra={"GLEITZEIT_SERVICE_TOKEN": TOKEN}
    )
    assert code == 2
    assert "no @gleitzeit_task functions found" in err


async def test_cli_port_in_use_fails(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = await run_to_exit(
            tmp_path, "--port", str(port), "my_tasks", env_extra={"GLEITZEIT_SERVICE_TOKEN": TOKEN}
        )
    assert code == 1
    assert "cannot listen" in err
