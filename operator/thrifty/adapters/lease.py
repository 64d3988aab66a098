"""Reads and writes the coordination.k8s.io Lease that elects the acting operator replica.

The only module that knows the Lease API. Writes carry the resourceVersion that was read, so two
candidates racing for the same Lease cannot both win: the API server answers the loser with 409
Conflict, which becomes `False` here. Blocking client calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


class LeaseError(Exception):
    """The API server could not be asked (not a lost race): the caller retries next period."""


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that leader election reads and writes."""

    holder: str | None
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str | None = None
    """None for a Lease not yet created."""


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or None,
        lease_duration_seconds=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
        resource_version=lease.metadata.resource_version if lease.metadata else None,
    )


def _body(name: str, record: LeaseRecord) -> client.V1Lease:
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name, resource_version=record.resource_version),
        spec=client.V1LeaseSpec(
            holder_identity=record.holder or "",
            lease_duration_seconds=record.lease_duration_seconds,
            acquire_time=record.acquire_time,
            renew_time=record.renew_time,
            lease_transitions=record.transitions,
        ),
    )


class LeaseStore:
    """One named Lease in one namespace."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        *,
        timeout_seconds: float | None = None,
    ) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self._timeout = timeout_seconds
        """A hung request must not outlast the renew deadline: the next round retries."""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def read_blocking(self) -> LeaseRecord | None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise LeaseError(
                f"reading Lease {self.namespace}/{self.name}: {error.reason}"
            ) from error
        except urllib3.exceptions.HTTPError as error:
            raise LeaseError(f"reading Lease {self}: {error}") from error
        return _record(lease)

    def write_blocking(self, record: LeaseRecord) -> bool:
        """Creates or replaces the Lease; False when another candidate wrote first."""
        body = _body(self.name, record)
        try:
            if record.resource_version is None:
                self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout
                )
            else:
                self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                )
        except ApiException as error:
            if error.status == HTTP_CONFLICT:  # AlreadyExists on create, stale version on replace
                return False
            raise LeaseError(
                f"writing Lease {self.namespace}/{self.name}: {error.reason}"
            ) from error
        except urllib3.exceptions.HTTPError as error:
            raise LeaseError(f"writing Lease {self}: {error}") from error
        return True

    async def read(self) -> LeaseRecord | None:
        return await asyncio.to_thread(self.read_blocking)

    async def write(self, record: LeaseRecord) -> bool:
        return await asyncio.to_thread(self.write_blocking, record)
