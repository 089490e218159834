"""The seed's task service, as its design document writes it: decorate, then
``await start_task_service()`` with everything from the environment. Run as a script by
``test_cluster.py`` (the ``raw_data`` default is the one change: the seed's workflow calls
``process_data`` without arguments)."""

import asyncio

from gleitzeit import gleitzeit_task, start_task_service


def transform(raw_data):
    words = raw_data.split()
    return {"words": len(words), "first": words[0]}


# Define Python task with decorator
@gleitzeit_task()
def process_data(raw_data="Gleitzeit orchestrates LLM workflows"):
    return transform(raw_data)


@gleitzeit_task()
def explode(reason="bad input"):
    raise ValueError(reason)


async def main():
    # Start service (once)
    await start_task_service()


if __name__ == "__main__":
    asyncio.run(main())
