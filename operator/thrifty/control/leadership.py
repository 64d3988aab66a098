"""Leader election: of several operator replicas, only the one holding a Lease runs the autoscaler.

kopf's peering is not leader election (replicas of equal priority all pause), so thrifty follows
client-go's Lease protocol, as KubeAI does: a coordination.k8s.io Lease names the holder and is
renewed every `retry_period_seconds`; a candidate takes it over only when it has seen the Lease
unchanged for the Lease's full duration. Expiry is judged by when *this* process saw the record
change, on its monotonic clock, never by comparing the timestamps written by another machine, so
clock skew cannot elect two leaders.

The holder stops acting `renew_deadline_seconds` after its last successful renewal, which is shorter
than the lease duration: by the time a follower may take over, the old leader has already stopped.
Writes carry the read resourceVersion (see `thrifty.adapters.lease`), so two candidates can never
both acquire the same record.

The election runs in its own thread with its own event loop (`ElectionThread`), and the Lease
store has its own API connection: renewals never wait behind the operator's handlers, passes or
connection pool, so a busy operator (a thousand failing objects, a flood of events) does not lose
the Lease it alone holds. Python switches threads every few milliseconds, so a renewal needs the
API server, not an idle operator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from thrifty.adapters.lease import LeaseError, LeaseRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionSettings:
    """Timings as client-go's defaults: a dead leader is replaced within about 15 s."""

    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0

    def __post_init__(self) -> None:
        lease, deadline, retry = (
            self.lease_duration_seconds,
            self.renew_deadline_seconds,
            self.retry_period_seconds,
        )
        if not lease > deadline > retry > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, "
                f"got {lease} > {deadline} > {retry}"
            )


def default_identity() -> str:
    """Unique per process: the pod name (hostname) plus a random suffix for restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def claim(
    seen: LeaseRecord | None,
    identity: str,
    *,
    seen_unchanged_seconds: float,
    wall_now: datetime,
    lease_duration_seconds: int,
) -> LeaseRecord | None:
    """The record to write to hold the Lease, or None while another holder's Lease is valid.

    `seen_unchanged_seconds` is how long this process has seen `seen` without change.
    """
    if seen is None:
        return LeaseRecord(identity, lease_duration_seconds, wall_now, wall_now, 0)
    if seen.holder == identity:
        return replace(seen, renew_time=wall_now, lease_duration_seconds=lease_duration_seconds)
    held = seen.holder is not None and seen_unchanged_seconds < seen.lease_duration_seconds
    if held:
        return None
    return replace(
        seen,
        holder=identity,
        lease_duration_seconds=lease_duration_seconds,
        acquire_time=wall_now,
        renew_time=wall_now,
        transitions=seen.transitions + 1,
    )


class LeaseBackend(Protocol):
    async def read(self) -> LeaseRecord | None: ...

    async def write(self, record: LeaseRecord) -> bool: ...


def _same(a: LeaseRecord | None, b: LeaseRecord | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.resource_version, a.holder, a.renew_time) == (
        b.resource_version,
        b.holder,
        b.renew_time,
    )


class LeaderElector:
    """Runs the election loop; `is_leader()` tells timers whether to act this instant."""

    def __init__(
        self,
        backend: LeaseBackend,
        identity: str,
        settings: ElectionSettings = ElectionSettings(),
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self._backend = backend
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._on_change = on_change
        self._seen: LeaseRecord | None = None
        self._seen_at = monotonic()
        self._renewed_at: float | None = None
        self._leading = False

    def is_leader(self) -> bool:
        """True only within the renew deadline of the last successful renewal."""
        if self._renewed_at is None:
            return False
        return self._monotonic() - self._renewed_at < self.settings.renew_deadline_seconds

    async def try_once(self) -> bool:
        """One round: read, claim or renew when allowed; returns whether this process leads."""
        try:
            current = await self._backend.read()
            if not _same(current, self._seen):
                self._seen, self._seen_at = current, self._monotonic()
            record = claim(
                current,
                self.identity,
                seen_unchanged_seconds=self._monotonic() - self._seen_at,
                wall_now=self._wall_clock(),
                lease_duration_seconds=self.settings.lease_duration_seconds,
            )
            if record is not None:
                started = self._monotonic()
                if await self._backend.write(record):
                    # Count the deadline from before the write: the API server may have
                    # stored it any time after we sent it.
                    self._renewed_at = started
        except LeaseError as error:
            log.warning("leader election: %s", error)
        self._report()
        return self.is_leader()

    def _report(self) -> None:
        leading = self.is_leader()
        if leading != self._leading:
            self._leading = leading
            log.info("%s %s leading", self.identity, "started" if leading else "stopped")
            self._on_change(leading)

    async def run(self) -> None:
        """Loops until cancelled; then gives the Lease up so a peer takes over at once."""
        try:
            while True:
                await self.try_once()
                await asyncio.sleep(self.settings.retry_period_seconds)
        finally:
            await self.release()

    async def release(self) -> None:
        """Hands the Lease back (empty holder) if held: best effort, like client-go's
        ReleaseOnCancel. Stops acting first, so no timer acts while the release is in flight."""
        was_leading = self.is_leader()
        self._renewed_at = None
        self._report()
        if not was_leading:
            return
        try:
            current = await self._backend.read()
            if current is not None and current.holder == self.identity:
                await self._backend.write(
                    replace(current, holder=None, lease_duration_seconds=1, renew_time=None)
                )
        except LeaseError as error:
            log.warning("leader election: could not release the Lease: %s", error)


class ElectionThread:
    """Runs `LeaderElector.run` on a private event loop in a daemon thread."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self._loop = asyncio.new_event_loop()
        self._task: concurrent.futures.Future[None] | None = None
        self._thread = threading.Thread(target=self._main, name="leader-election", daemon=True)

    def start(self) -> ElectionThread:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self.elector.run(), self._loop)
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def stop_blocking(self, timeout_seconds: float) -> None:
        """Stops the election (its `run` releases the Lease on the way out) and the thread."""
        if self._task is not None:
            self._task.cancel()
            # The cancelled future returns at once; the release in `run`'s finally still runs.
            with contextlib.suppress(concurrent.futures.CancelledError, TimeoutError):
                self._task.result(timeout=timeout_seconds)
        deadline = time.monotonic() + timeout_seconds
        while self._pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=max(deadline - time.monotonic(), 0.1))

    def _pending(self) -> bool:
        """Whether the election's coroutine (the release, after cancellation) still runs."""
        if self._loop.is_closed():
            return False
        check = asyncio.run_coroutine_threadsafe(_others_running(), self._loop)
        try:
            return check.result(timeout=1.0)
        except (TimeoutError, concurrent.futures.CancelledError):
            return True

    async def stop(self, timeout_seconds: float) -> None:
        await asyncio.to_thread(self.stop_blocking, timeout_seconds)


async def _others_running() -> bool:
    current = asyncio.current_task()
    return any(task is not current and not task.done() for task in asyncio.all_tasks())
