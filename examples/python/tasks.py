"""Task functions for examples/pipeline.yaml, served as the service "Python Tasks":

    cd examples/python
    GLEITZEIT_SERVICE_TOKEN=... gleitzeit-service --name "Python Tasks" --port 8765 \
        --redis-url redis://127.0.0.1:6379 tasks
"""

import asyncio

from gleitzeit import gleitzeit_task


@gleitzeit_task(description="Sort numbers and summarise them.")
def process_data(numbers, mode="fast"):
    """Sorts the numbers and returns simple statistics (a sync function: it runs in a thread)."""
    values = sorted(float(n) for n in numbers)
    if not values:
        raise ValueError("process_data needs at least one number")
    return {
        "mode": mode,
        "count": len(values),
        "min": values[0],
        "max": values[-1],
        "mean": sum(values) / len(values),
        "sorted": values,
    }


@gleitzeit_task(description="Count the words of a text.")
async def word_count(text: str):
    """An async function: awaited on the service's event loop."""
    await asyncio.sleep(0)
    return {"words": len(text.split())}
