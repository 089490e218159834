"""LiteLLM's Router on the placement benchmark's workload, for comparison with
`gleitzeit-bench placement` (docs/benchmarks.md, "Placement").

The same setup: 4 Ollama simulators (`gleitzeit-sim --stats`, started here) at
200/100/100/50 tokens/s, keeping 2/2/1/1 models loaded, 2 s per load; 40 workflows
A -> (B, C) -> D with the same model draws (xorshift, the same seed and weights
4:3:2:2:1); `llama3:70b` deployed on the two GPU endpoints only; each deployment limited to
the endpoint's `max_concurrent` (LiteLLM limits deployments, not endpoints); at most 16
calls at once (the Gleitzeit fleet's 2 workers x 8). Each call asks for about 100 tokens
(the simulator echoes the prompt, cut to --max-chars). Prints one JSON line per run:
makespan, task latency p50/p95 (ready -> end), loads, duplicate loads, calls LiteLLM
refused because every deployment of the model was at its limit (retried after 50 ms), calls
and the most in flight per endpoint.

Run with a virtual environment that has litellm (never a dependency of the tests):
    python3 -m venv /tmp/venv-litellm && /tmp/venv-litellm/bin/pip install litellm
    cargo build --release -p gleitzeit-testkit --bin gleitzeit-sim
    LITELLM_LOCAL_MODEL_COST_MAP=True /tmp/venv-litellm/bin/python bench/litellm/placement.py \
        --sim target/release/gleitzeit-sim
"""

import argparse
import asyncio
import json
import math
import subprocess
import time

MODELS = ["llama3.2:3b", "qwen2.5:7b", "mistral:7b", "gemma2:9b", "llama3:70b"]
WEIGHTS = [4, 3, 2, 2, 1]
RATES = [200, 100, 100, 50]
MAX_LOADED = [2, 2, 1, 1]
MAX_CONCURRENT = [4, 4, 4, 4]
GPU = [True, True, False, False]
SEED = 0x2545_F491_4F6C_DD1D
MASK = (1 << 64) - 1
# The echo reply "<model>: w w w ..." cut to this many characters is about 100 tokens.
MAX_CHARS = 210
PROMPT = " ".join(["w"] * 120)


def draws(workflows):
    """The models of every task: the same xorshift sequence as gleitzeit-bench."""
    total = sum(WEIGHTS)
    x = SEED

    def nxt():
        nonlocal x
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        pick = x % total
        for m, w in zip(MODELS, WEIGHTS):
            if pick < w:
                return m
            pick -= w
        return MODELS[0]

    return [[nxt() for _ in range(4)] for _ in range(workflows)]


def gpu_only(model):
    tag = model.rsplit(":", 1)[-1]
    return tag.endswith("b") and float(tag[:-1]) * 0.6e9 > 16e9


def start_sims(binary, load_delay):
    sims = []
    for rate, loaded in zip(RATES, MAX_LOADED):
        p = subprocess.Popen(
            [binary, "ollama", "--stats", "--token-delay", f"{1000 / rate}ms",
             "--load-delay", load_delay, "--max-loaded", str(loaded),
             "--max-chars", str(MAX_CHARS), "--models", ",".join(MODELS)],
            stdout=subprocess.PIPE, text=True)
        url = p.stdout.readline().strip()
        sims.append((p, url))
    return sims


def stop_sims(sims):
    stats = []
    for p, _ in sims:
        p.terminate()
        out, _ = p.communicate(timeout=30)
        stats.append(json.loads(out.strip().splitlines()[-1]))
    return stats


def duplicate_loads(stats):
    n = 0
    for i, s in enumerate(stats):
        for load in s["load_log"]:
            n += any(
                o["model"] == load["model"] and o["started_ms"] <= load["started_ms"] < o["done_ms"]
                for j, t in enumerate(stats) if j != i for o in t["load_log"])
    return n


def percentile(sorted_values, p):
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def one_run(strategy, workflows, sims, concurrency):
    import litellm
    from litellm import Router

    model_list = []
    for m in MODELS:
        for i, (_, url) in enumerate(sims):
            if gpu_only(m) and not GPU[i]:
                continue
            model_list.append({
                "model_name": m,
                "litellm_params": {"model": f"ollama_chat/{m}", "api_base": url,
                                   "max_parallel_requests": MAX_CONCURRENT[i],
                                   "timeout": 300},
            })
    router = Router(model_list=model_list, routing_strategy=strategy, num_retries=2)
    gate = asyncio.Semaphore(concurrency)
    latencies = []

    refused = 0

    async def task(model, ready):
        nonlocal refused
        async with gate:
            while True:
                try:
                    await router.acompletion(
                        model=model, messages=[{"role": "user", "content": PROMPT}],
                        stream=False)
                    break
                except litellm.RateLimitError:
                    # Every deployment of the model is at its max_parallel_requests: wait
                    # for a slot, as a Gleitzeit call does inside its router.
                    refused += 1
                    await asyncio.sleep(0.05)
        latencies.append(time.monotonic() - ready)

    async def workflow(models):
        await task(models[0], time.monotonic())
        ready = time.monotonic()
        await asyncio.gather(task(models[1], ready), task(models[2], ready))
        await task(models[3], time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(workflow(m) for m in workflows))
    return time.monotonic() - start, sorted(latencies), refused


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", required=True, help="the gleitzeit-sim binary")
    ap.add_argument("--strategies", default="least-busy,simple-shuffle,latency-based-routing")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workflows", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--load-delay", default="2s")
    args = ap.parse_args()
    import importlib.metadata
    import litellm
    litellm.suppress_debug_info = True
    version = importlib.metadata.version("litellm")
    wfs = draws(args.workflows)
    for run in range(args.runs):
        for strategy in args.strategies.split(","):
            sims = start_sims(args.sim, args.load_delay)
            try:
                makespan, lat, refused = asyncio.run(
                    one_run(strategy, wfs, sims, args.concurrency))
            finally:
                stats = stop_sims(sims)
            print(json.dumps({
                "router": f"litellm {version}",
                "strategy": strategy, "run": run + 1,
                "makespan_s": round(makespan, 2),
                "task_latency_s": {"p50": round(percentile(lat, 50), 2),
                                   "p95": round(percentile(lat, 95), 2)},
                "model_loads": sum(s["loads"] for s in stats),
                "calls_refused_for_slots": refused,
                "duplicate_loads": duplicate_loads(stats),
                "calls_per_endpoint": [s["received"] for s in stats],
                "max_in_flight": [s["max_in_flight"] for s in stats],
            }), flush=True)


if __name__ == "__main__":
    main()
