"""Running one CLI command's work with a :class:`~durable.Client` (and nothing else)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from durable.client import Client
from statewf.cli import CliContext, errors_as_messages

T = TypeVar("T")


def call(obj: CliContext, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client: the CLI reads and steers runs, it never executes one."""

    async def main() -> T:
        store = obj.engine()
        client = Client(store)
        try:
            return await work(client)
        finally:
            await client.close()
            store.close()  # one command per process: release the pool's connections

    with errors_as_messages():
        return asyncio.run(main())
