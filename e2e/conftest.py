"""pytest integration of the local cluster harness: the `cluster` and `namespace` fixtures.

Every test collected under e2e/ gets the `e2e` marker here, so `-m e2e` / `-m "not e2e"` select them
without each test remembering to. The session's cluster and Prometheus are always stopped, also when
tests fail or the run is interrupted; a failing test's report carries `kubectl get all,events -A`.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType

import pytest

from harness import Cluster, HarnessError, Session, chaos, connect_existing, start_local

# Test modules import the operator fixtures directly and two also list them as a plugin: marked
# before the first import, the module's asserts are rewritten wherever it is imported from.
pytest.register_assert_rewrite("operator_process")

E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (CI cancelling a job, `timeout`) would end pytest without running fixture teardown
    # and leave a control plane running; as KeyboardInterrupt, pytest tears the session down first.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


def _start_session() -> Session:
    existing = os.environ.get("THRIFTY_E2E_KUBECONFIG")
    if existing:
        return connect_existing(Path(existing))
    return start_local(keep_run_dir=os.environ.get("THRIFTY_E2E_KEEP", "") == "1")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A running cluster with the fake GPU nodes of e2e/nodes/ and a Prometheus (see harness)."""
    try:
        session = _start_session()
    except (HarnessError, RuntimeError, OSError) as error:
        # The message names the step and how to retry; a traceback into the harness adds nothing.
        pytest.fail(f"{type(error).__name__}: {error}", pytrace=False)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(session.cluster.kubeconfig)
    try:
        yield session.cluster
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        for problem in session.stop():
            warnings.warn(f"stopping the e2e cluster: {problem}", stacklevel=1)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (without waiting)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        _release_thrifty_finalizers(cluster, name)
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _release_thrifty_finalizers(cluster: Cluster, namespace: str) -> None:
    """The operator's finalizers outlive a test's operator process; without it nobody removes
    them, the namespace stays Terminating, and a later cluster-wide operator keeps acting on it."""
    for kind in ("modelservices.thrifty.dev", "costbudgets.thrifty.dev"):
        found = cluster.kubectl("get", kind, "-n", namespace, "-o", "name", check=False)
        for obj in found.stdout.split():
            cluster.kubectl(
                "patch",
                obj,
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    funcargs = getattr(item, "funcargs", {})
    if report.failed and report.when == "call" and isinstance(funcargs.get("cluster"), Cluster):
        try:
            state = funcargs["cluster"].kubectl(
                "get", "all,events", "-A", "-o", "wide", check=False, timeout=30
            )
            report.sections.append(("kubectl get all,events -A", state.stdout + state.stderr))
            if funcargs["cluster"].local:
                dead = chaos.dead_components(funcargs["cluster"])
                report.sections.append(("control plane", f"ended: {dead}" if dead else "all up"))
        except Exception as error:  # the dump is a courtesy; never mask the test's own failure
            report.sections.append(("kubectl get all,events -A", f"could not dump: {error}"))
    return report
