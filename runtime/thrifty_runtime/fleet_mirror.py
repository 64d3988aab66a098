"""The fleet mirror: one engine per Running pod, for a cluster whose pods run no containers.

On the local cluster, pods land on KWOK's fake GPU nodes: the scheduler, the Deployment controller
and the scale subresource are real, but no container starts. This process gives each Running pod
of a ModelService what its container would have been:

- it watches pods with the label `thrifty.dev/model-service` (Kubernetes watch, relisting when the
  watch expires) and starts an engine per Running pod on a free 127.0.0.1 port (or, with
  `--loopback-pod-network`, on the loopback twin of the pod's IP at the container's port: see
  podnet; then the pod's EndpointSlice address leads to it, and thrifty-gateway reaches it as in a
  cluster), parsing the vLLM arguments the operator rendered into the pod (served name,
  --max-num-seqs, --shutdown-timeout...).
  Simulated (`thrifty_runtime.engine_server`, in this process) by default; the real vLLM CPU build
  for pods annotated `thrifty.dev/engine: vllm` or for all pods with `--engine vllm`;
- it writes a Prometheus file_sd file listing the engines with the labels `namespace`, `pod`,
  `modelservice` and `pool`, the same labels a PodMonitor gives real pods (the label contract of
  `thrifty.adapters.prometheus`);
- when a pod is deleted or starts terminating, the mirror runs the pod's preStop hook as the
  kubelet does before SIGTERM (a sleep, or a command, run here with the pod's own address in
  place of 127.0.0.1, within the pod's grace period) while the terminating pod leaves its
  EndpointSlices and so the gateway; then its engine drains for its `--shutdown-timeout` and
  stops; its target goes last;
- when a Node is deleted (a spot reclaim, a machine lost), the engines of the pods bound to it
  die at once, as the machine's containers do: the port closes, requests in flight are cut, no
  hook runs, and the engine never comes back for those pods (the control plane keeps the pod
  objects, and their endpoints, until the pod garbage collector removes them).

    python -m thrifty_runtime.fleet_mirror --file-sd /path/sd/thrifty-fleet.json \\
        [--kubeconfig K] [--namespace NS] [--engine sim|vllm] [--profile 8b] \\
        [--loopback-pod-network 10.0.0.0/8] [--state-file STATE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thrifty.sim.profiles import profile_by_name
from thrifty_runtime import podnet
from thrifty_runtime.engine_server import EngineServer, settings_from_args

log = logging.getLogger("thrifty_runtime.fleet_mirror")

EVENT_QUEUE_SIZE = 1024
"""Watch events waiting for the mirror: a full queue holds the watch threads back (the API
server then buffers, or ends the watch, and the relist restores what was missed)."""

MODEL_SERVICE_LABEL = "thrifty.dev/model-service"
POOL_LABEL = "thrifty.dev/pool"
ENGINE_ANNOTATION = "thrifty.dev/engine"
"""`vllm` asks for the real engine for this pod; anything else (or none) the simulator."""
PROFILE_ANNOTATION = "thrifty.dev/engine-profile"
"""Engine profile of the simulator (thrifty.sim.profiles) for this pod."""
DEFAULT_JOB = "thrifty-fleet"


@dataclass(frozen=True)
class PodEngineSpec:
    """What the mirror needs from a pod to serve it."""

    namespace: str
    pod: str
    uid: str
    model_service: str
    args: tuple[str, ...]
    engine: str
    profile: str | None
    serving: bool
    """Running and not terminating: it should have an engine that takes requests."""
    pre_stop_seconds: float = 0.0
    """The container's `lifecycle.preStop.sleep`: time between leaving the endpoints and SIGTERM."""
    pre_stop_command: tuple[str, ...] = ()
    """The container's `lifecycle.preStop.exec.command`, run before SIGTERM instead of a sleep."""
    grace_seconds: float = 30.0
    """`terminationGracePeriodSeconds`: how long the hook may take."""
    pool: str = ""
    """The GPUPool it is placed in (the pod label `thrifty.dev/pool`; "" without one)."""
    node: str | None = None
    """`spec.nodeName`: the machine whose loss kills the engine."""
    pod_ip: str | None = None
    """`status.podIP`: with a loopback pod network (`thrifty_runtime.podnet`), the engine
    listens on its loopback twin at the container's own port, so the pod's EndpointSlice
    address leads to it as in a cluster."""

    def engine_host(self, pod_network: ipaddress.IPv4Network | None) -> str | None:
        """The loopback twin of the pod's IP, or None (then a free port on 127.0.0.1)."""
        if not self.pod_ip or pod_network is None:
            return None
        return podnet.loopback_twin(self.pod_ip, pod_network)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.pod, self.uid)


def pod_engine_spec(pod: Mapping[str, Any], default_engine: str = "sim") -> PodEngineSpec | None:
    """Reads a pod (as JSON, camelCase) into a `PodEngineSpec`; None when it is not a ModelService
    pod. Pure, so the mirror's reading of pods is tested without a cluster."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    model_service = labels.get(MODEL_SERVICE_LABEL)
    if not model_service:
        return None
    annotations = metadata.get("annotations") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    args: list[str] = []
    pre_stop: Mapping[str, Any] = {}
    if containers:
        first = containers[0]
        args = [str(a) for a in (first.get("command") or []) + (first.get("args") or [])]
        pre_stop = (first.get("lifecycle") or {}).get("preStop") or {}
    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    status = pod.get("status") or {}
    phase = status.get("phase")
    terminating = metadata.get("deletionTimestamp") is not None
    return PodEngineSpec(
        namespace=str(metadata.get("namespace", "default")),
        pod=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        model_service=str(model_service),
        args=tuple(args),
        engine=str(annotations.get(ENGINE_ANNOTATION) or default_engine),
        profile=annotations.get(PROFILE_ANNOTATION),
        serving=phase == "Running" and not terminating,
        pre_stop_seconds=float((pre_stop.get("sleep") or {}).get("seconds") or 0),
        pre_stop_command=tuple(str(a) for a in (pre_stop.get("exec") or {}).get("command") or ()),
        grace_seconds=30.0 if grace is None else float(grace),
        pod_ip=status.get("podIP") or None,
        pool=str(labels.get(POOL_LABEL) or ""),
        node=(pod.get("spec") or {}).get("nodeName") or None,
    )


def file_sd_groups(
    engines: Sequence[tuple[PodEngineSpec, str]], job: str = DEFAULT_JOB
) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: one per engine, labelled as a PodMonitor would."""
    return [
        {
            "targets": [address],
            "labels": {
                "job": job,
                "namespace": spec.namespace,
                "pod": spec.pod,
                "modelservice": spec.model_service,
                **({"pool": spec.pool} if spec.pool else {}),
            },
        }
        for spec, address in sorted(engines, key=lambda item: item[0].key)
    ]


@dataclass
class MirroredEngine:
    spec: PodEngineSpec
    url: str
    shutdown_timeout_seconds: float
    sim: EngineServer | None = None
    real: Any = None  # thrifty_runtime.vllm_process.VllmProcess
    stopping: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MirrorSettings:
    file_sd_path: Path
    namespace: str | None = None
    default_engine: str = "sim"
    default_profile: str = "8b"
    job: str = DEFAULT_JOB
    state_path: Path | None = None
    vllm_work_dir: Path = Path("/tmp/thrifty-fleet-vllm")
    loopback_pod_network: ipaddress.IPv4Network | None = None
    """Pods' IPs in this network get engines on their loopback twins (see podnet)."""


class FleetMirror:
    def __init__(self, settings: MirrorSettings, core_api: Any) -> None:
        self.settings = settings
        self._api = core_api
        self._engines: dict[tuple[str, str, str], MirroredEngine] = {}
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._stop = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._vllm: tuple[Path, Path] | None = None  # (python, tiny model) once installed
        self._vllm_lock = asyncio.Lock()
        self._starting: dict[tuple[str, str, str], tuple[PodEngineSpec, asyncio.Task[None]]] = {}
        self._gone_while_starting: set[tuple[str, str, str]] = set()
        self._gone_nodes: set[str] = set()
        """Deleted nodes (forgotten when one of the name is added back)."""
        self._lost: set[tuple[str, str, str]] = set()
        """Pods whose node was deleted under them: never served again (forgotten with them)."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._write_targets()
        self._write_state()
        loop = asyncio.get_running_loop()
        self._watch_thread = threading.Thread(
            target=self._watch, args=(loop, "pods"), name="pod-watch", daemon=True
        )
        self._watch_thread.start()
        threading.Thread(
            target=self._watch, args=(loop, "nodes"), name="node-watch", daemon=True
        ).start()
        consumer = asyncio.create_task(self._consume())
        await stop.wait()
        self._stop.set()
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        for key in list(self._starting):
            self._gone_while_starting.add(key)
        await self.started()
        await asyncio.gather(*(self._retire(key) for key in list(self._engines)))
        self._write_targets()

    async def started(self) -> None:
        """Waits for the engines being started now (each ends serving, retired or failed)."""
        launches = [task for _, task in self._starting.values()]
        await asyncio.gather(*launches, return_exceptions=True)

    # -- watching pods and nodes (threads: the client's watch blocks) ---------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop, what: str) -> None:
        """Lists then watches ``what`` (pods or nodes), relisting when the watch expires; queues
        (SYNC or NODES, the listing) and then (event type, object), node events prefixed."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        function, kwargs = self._source(what)
        prefix, sync = ("", "SYNC") if what == "pods" else ("NODE_", "NODES")

        def put(kind: str, body: Any) -> None:
            self._put(loop, (kind, body))

        while not self._stop.is_set():
            try:
                listing = function(**kwargs)
                items = self._api.api_client.sanitize_for_serialization(listing.items)
                put(sync, {"items": items})
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    function,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=30,
                    **kwargs,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    body = self._api.api_client.sanitize_for_serialization(event["object"])
                    put(prefix + str(event["type"]), body)
            except ApiException as error:
                if what == "nodes" and error.status == 403:
                    log.warning("may not watch nodes: engines will not die with their node")
                    return
                # 410 Gone: our resource version expired; relist. Anything else: back off.
                if error.status != 410:
                    log.warning("%s watch failed (%s); retrying", what, error.status)
                    time.sleep(1.0)
            except Exception as error:  # the API server may restart; never let the thread die
                log.warning("%s watch failed (%s); retrying", what, error)
                time.sleep(1.0)

    def _put(self, loop: asyncio.AbstractEventLoop, item: tuple[str, dict[str, Any]]) -> None:
        """Queues from a watch thread, waiting while the queue is full (never dropping: a lost
        DELETED would leave an engine serving for a pod that is gone) until the mirror stops."""
        queued = asyncio.run_coroutine_threadsafe(self._queue.put(item), loop)
        while not self._stop.is_set():
            try:
                queued.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                continue
        queued.cancel()

    def _source(self, what: str) -> tuple[Any, dict[str, str]]:
        if what == "nodes":
            return self._api.list_node, {}
        if self.settings.namespace:
            return self._api.list_namespaced_pod, {
                "namespace": self.settings.namespace,
                "label_selector": MODEL_SERVICE_LABEL,
            }
        return self._api.list_pod_for_all_namespaces, {"label_selector": MODEL_SERVICE_LABEL}

    # -- reconciling engines with pods ----------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            kind, body = await self._queue.get()
            try:
                if kind == "SYNC":
                    await self._sync(body["items"])
                elif kind == "NODES":
                    await self._sync_nodes(body["items"])
                elif kind.startswith("NODE_"):
                    await self._on_node_event(kind.removeprefix("NODE_"), body)
                else:
                    await self._on_event(kind, body)
            except Exception:
                log.exception("could not mirror a pod event")

    async def _sync(self, pods: list[dict[str, Any]]) -> None:
        specs = [pod_engine_spec(p, self.settings.default_engine) for p in pods]
        serving = {s.key: s for s in specs if s is not None and s.serving}
        for key in [k for k in self._engines if k not in serving]:
            self._begin_retire(key)
        self._lost &= {s.key for s in specs if s is not None}
        for spec in serving.values():
            await self._ensure(spec)

    async def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        spec = pod_engine_spec(pod, self.settings.default_engine)
        if spec is None:
            return
        if kind == "DELETED":
            self._lost.discard(spec.key)
        if kind == "DELETED" or not spec.serving:
            self._begin_retire(spec.key)
        else:
            await self._ensure(spec)

    async def _sync_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """A relist: the nodes the engines run on that are no longer listed were deleted."""
        names = {str((n.get("metadata") or {}).get("name")) for n in nodes}
        self._gone_nodes -= names
        bound = {e.spec.node for e in self._engines.values() if e.spec.node}
        for name in sorted(bound - names):
            await self._lose_node(name)

    async def _on_node_event(self, kind: str, node: dict[str, Any]) -> None:
        name = str((node.get("metadata") or {}).get("name"))
        if kind == "DELETED":
            await self._lose_node(name)
        else:
            self._gone_nodes.discard(name)

    async def _lose_node(self, name: str) -> None:
        """The machine is gone: its engines die at once, requests in flight with them."""
        self._gone_nodes.add(name)
        for key, (spec, _) in self._starting.items():
            if spec.node == name:
                self._lost.add(key)  # killed as soon as it has started
        doomed = [k for k, e in self._engines.items() if e.spec.node == name]
        for key in doomed:
            self._lost.add(key)
            await self._kill(key)
        if doomed:
            pods = ", ".join(f"{ns}/{pod}" for ns, pod, _ in doomed)
            log.info("node %s is gone: killed the engines of %s without a drain", name, pods)

    async def _kill(self, key: tuple[str, str, str]) -> None:
        engine = self._engines.pop(key, None)
        if engine is None:
            return
        if engine.stopping is not None:
            engine.stopping.cancel()
        if engine.sim is not None:
            await engine.sim.kill()
        elif engine.real is not None:
            engine.real.kill()
        self._write_targets()
        self._write_state()

    async def _ensure(self, spec: PodEngineSpec) -> None:
        """Starts an engine for a serving pod, in the background: a real vLLM takes minutes to
        become healthy and other pods must not wait for it. A pod whose node is gone gets none,
        as a pod bound to a lost machine runs nowhere."""
        if spec.key in self._engines or spec.key in self._starting:
            return
        if spec.key in self._lost or spec.node in self._gone_nodes:
            return
        self._starting[spec.key] = (spec, asyncio.create_task(self._launch(spec)))

    async def _launch(self, spec: PodEngineSpec) -> None:
        try:
            if spec.engine == "vllm":
                engine = await self._start_vllm(spec)
            else:
                engine = await self._start_sim(spec)
        except Exception:
            log.exception("could not start an engine for %s/%s", spec.namespace, spec.pod)
            return
        finally:
            self._starting.pop(spec.key, None)
        self._engines[spec.key] = engine
        if spec.key in self._lost:
            await self._kill(spec.key)
            return
        if spec.key in self._gone_while_starting:
            # The pod went away during start-up: stop the engine without ever listing it.
            self._gone_while_starting.discard(spec.key)
            await self._retire(spec.key)
            return
        self._write_targets()
        self._write_state()
        log.info("serving %s/%s on %s (%s)", spec.namespace, spec.pod, engine.url, spec.engine)

    async def _start_sim(self, spec: PodEngineSpec) -> MirroredEngine:
        rendered = _without_vllm_serve(spec.args)
        host = spec.engine_host(self.settings.loopback_pod_network)
        if host:  # the pod's own address, at the port its container declares
            args = [*rendered, "--host", host]
        else:
            args = [*rendered, "--port", "0", "--host", "127.0.0.1"]
        # A pod names a built-in profile only: a path in a cluster object would have this
        # machine's files read. (The mirror's own setting may be a file.)
        profile = self.settings.default_profile
        if spec.profile is not None:
            profile = profile_by_name(spec.profile).name
        args += ["--profile", profile]
        settings, _ = settings_from_args(args)
        server = EngineServer(settings, process_metrics=False)
        await server.start()
        return MirroredEngine(spec, server.url, settings.shutdown_timeout_seconds, sim=server)

    async def _start_vllm(self, spec: PodEngineSpec) -> MirroredEngine:
        from thrifty_runtime import vllm_process

        async with self._vllm_lock:  # one install and model build, however many pods start
            if self._vllm is None:
                python = await asyncio.to_thread(vllm_process.ensure_installed)
                model = await asyncio.to_thread(vllm_process.ensure_tiny_model, python)
                self._vllm = (python, model)
        python, model = self._vllm
        settings, _ = settings_from_args(list(_without_vllm_serve(spec.args)))
        host = spec.engine_host(self.settings.loopback_pod_network)
        # The pod's own address at its container's port, or a free port on 127.0.0.1.
        port = settings.port if host else _free_port()
        host = host or "127.0.0.1"
        args = vllm_process.cpu_engine_args(spec.args, model_dir=model, port=port, host=host)
        work = self.settings.vllm_work_dir / f"{spec.namespace}-{spec.pod}"
        work.mkdir(parents=True, exist_ok=True)
        process = vllm_process.VllmProcess(python, args, port, work, host=host)
        process.start()
        try:
            await asyncio.to_thread(process.wait_healthy, 900)
        except BaseException:
            process.kill()
            raise
        return MirroredEngine(spec, process.url, settings.shutdown_timeout_seconds, real=process)

    def _begin_retire(self, key: tuple[str, str, str]) -> None:
        if key in self._starting:
            self._gone_while_starting.add(key)
        engine = self._engines.get(key)
        if engine is None or engine.stopping is not None:
            return
        engine.stopping = asyncio.create_task(self._retire(key))

    async def _retire(self, key: tuple[str, str, str]) -> None:
        engine = self._engines.get(key)
        if engine is None:
            return
        # As the kubelet runs the preStop hook before SIGTERM: the terminating pod leaves its
        # EndpointSlices meanwhile, and requests a gateway sent just before it learnt so reach
        # the engine before it starts refusing new work.
        if engine.spec.pre_stop_command:
            await _run_hook(engine.spec, engine.url)
        else:
            await asyncio.sleep(engine.spec.pre_stop_seconds)
        log.info("draining %s/%s", engine.spec.namespace, engine.spec.pod)
        if engine.sim is not None:
            await engine.sim.shutdown()
        elif engine.real is not None:
            engine.real.terminate()
            code = await asyncio.to_thread(engine.real.wait, engine.shutdown_timeout_seconds + 30)
            if code is None:
                engine.real.kill()
        self._engines.pop(key, None)
        self._write_targets()
        self._write_state()
        log.info("stopped %s/%s", engine.spec.namespace, engine.spec.pod)

    # -- outputs --------------------------------------------------------------------------------

    def _write_targets(self) -> None:
        engines = [(e.spec, e.url.removeprefix("http://")) for e in self._engines.values()]
        groups = file_sd_groups(engines, self.settings.job)
        _write_atomically(self.settings.file_sd_path, json.dumps(groups))

    def _write_state(self) -> None:
        if self.settings.state_path is None:
            return
        state = {
            "engines": [
                {
                    "namespace": e.spec.namespace,
                    "pod": e.spec.pod,
                    "model_service": e.spec.model_service,
                    "url": e.url,
                    "engine": e.spec.engine,
                    "draining": e.stopping is not None,
                }
                for e in self._engines.values()
            ],
        }
        _write_atomically(self.settings.state_path, json.dumps(state, indent=2))


def hook_command(command: Sequence[str], engine_url: str) -> list[str]:
    """The hook's command as it runs beside this engine: an argument naming the pod's own
    loopback (``http://127.0.0.1:PORT``, ``http://localhost:PORT``) names the engine's address."""
    own = re.compile(r"^http://(127\.0\.0\.1|localhost):\d+")
    address = engine_url.rstrip("/")
    return [own.sub(lambda _: address, arg) for arg in command]


async def _run_hook(spec: PodEngineSpec, engine_url: str) -> None:
    """Runs the preStop command to its end or the grace period's, as the kubelet does; a hook
    that fails or cannot start is logged and SIGTERM follows all the same."""
    command = hook_command(spec.pre_stop_command, engine_url)
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except OSError as error:
        log.warning("preStop of %s/%s did not start: %s", spec.namespace, spec.pod, error)
        return
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), spec.grace_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.warning("preStop of %s/%s outlived the grace period", spec.namespace, spec.pod)
        return
    if process.returncode != 0:
        tail = stderr.decode(errors="replace")[-500:]
        log.warning("preStop of %s/%s failed: %s", spec.namespace, spec.pod, tail)


def _without_vllm_serve(args: Sequence[str]) -> list[str]:
    """Drops a leading `vllm serve` (an image's command) so only flags and the model remain."""
    rest = list(args)
    if rest[:2] == ["vllm", "serve"]:
        rest = rest[2:]
    return rest


def _write_atomically(path: Path, text: str) -> None:
    # Prometheus reads every *.json of its file_sd directory: never let it see half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thrifty_runtime.fleet_mirror",
        description="Serve one vLLM-compatible engine per Running ModelService pod (for KWOK).",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--file-sd", required=True, type=Path, help="file_sd JSON to write")
    parser.add_argument("--namespace", help="only this namespace (default: all)")
    parser.add_argument("--engine", choices=["sim", "vllm"], default="sim")
    parser.add_argument("--profile", default="8b", help="simulator profile when pods name none")
    parser.add_argument("--job", default=DEFAULT_JOB, help="Prometheus job label of the targets")
    parser.add_argument("--state-file", type=Path, help="JSON listing the engines and their URLs")
    parser.add_argument("--vllm-work-dir", type=Path, default=Path("/tmp/thrifty-fleet-vllm"))
    parser.add_argument(
        "--loopback-pod-network",
        type=podnet.parse_network,
        help="pods' IPs in this network (e.g. 10.0.0.0/8) get engines on their 127/8 twins",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes import client, config

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    settings = MirrorSettings(
        file_sd_path=args.file_sd,
        namespace=args.namespace,
        default_engine=args.engine,
        default_profile=args.profile,
        job=args.job,
        state_path=args.state_file,
        vllm_work_dir=args.vllm_work_dir,
        loopback_pod_network=args.loopback_pod_network,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await FleetMirror(settings, client.CoreV1Api()).run(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
