"""Group commit: concurrent callers on one event loop share one batch (one worker-thread trip,
one transaction), so a serialized resource (the audit chain's lock, a commit's WAL flush) is paid
once per batch instead of once per caller. Every caller still waits for its own outcome.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from mcp_auth.errors import ServiceUnavailable

T = TypeVar("T")
R = TypeVar("R")

RunBatch = Callable[[list[T]], Awaitable[list[R | BaseException]]]
"""Runs one batch; returns one outcome per item, in order: its result or the exception to raise."""


class GroupCommit(Generic[T, R]):
    """Items submitted while a batch is in flight queue up for the next one (per event loop)."""

    def __init__(self, run_batch: RunBatch[T, R]) -> None:
        self._run_batch = run_batch
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue[T, R]] = weakref.WeakKeyDictionary()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue(self._run_batch)
        return await queue.submit(item)


def each_its_own(error: BaseException, count: int) -> list[BaseException]:
    """One failure for every item of a batch, each caller raising an instance of its own (one
    shared instance would collect every caller's traceback). Wrap in ``list()`` where a list of
    outcomes is expected (lists are invariant)."""
    if isinstance(error, ServiceUnavailable):
        return [ServiceUnavailable(error.message, error.detail) for _ in range(count)]
    return [error] * count


class _Queue(Generic[T, R]):
    def __init__(self, run_batch: RunBatch[T, R]) -> None:
        self._run_batch = run_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            # A task of its own: a caller that is cancelled must not abort the others' batch.
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._run_batch([item for item, _ in batch])
            except Exception as exc:  # a runner is meant to return failures; never strand a caller
                outcomes = list(each_its_own(exc, len(batch)))
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
