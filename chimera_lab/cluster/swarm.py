"""SwarmCluster: workers as the replicas of one Docker Swarm service.

::

    with cp.Manager(port=0) as manager:
        cluster = manager.add_workers(cp.SwarmCluster(2, docker_url="unix:///var/run/docker.sock"))
        cluster.scale(4)

The service runs the worker image DockerCluster builds (``chimera-lab-worker:<hash>``, made on the swarm's engine
if it is not there; on a swarm of several machines give ``image=`` one that every node can pull from your
registry). Its replicas use the host's network (they reach a Manager on 127.0.0.1 when the swarm is this
machine), are labelled ``chimera-lab.cluster=<id>``, are never restarted by the swarm (a replica that dies is
reported lost, with the task's error; ``scale(n)`` brings the count back), and take the Manager's token from a
swarm secret mounted as a file (never from an environment variable that ``docker inspect`` would show). Replica
``k`` is the worker ``swarm-<k>``. ``close()`` removes the service, waits until its containers are gone, and
removes the secret; ``SwarmCluster.cleanup()`` removes what a crashed process left.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..manager import Manager
from .base import Launcher, LauncherError, owner_alive, owner_id
from .docker import LABEL, LABEL_OWNER, docker_client
from .image import DEFAULT_BASE_IMAGE, HEALTH_FILE, _short, ensure_image

log = logging.getLogger("chimera_lab.swarm")

__all__ = ["SwarmCluster", "SwarmError"]

TOKEN_FILE = "/run/secrets/chimera-token"
ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")


def _version(task: dict[str, Any]) -> int:
    """A task's version in the swarm's store: later tasks of a slot have higher ones."""
    return int((task.get("Version") or {}).get("Index", 0))


class SwarmError(LauncherError):
    """The swarm cannot run the workers' service; the message names the cause and the fix."""


class SwarmCluster(Launcher):
    """Workers as the replicas of a Docker Swarm service (``swarm-1``, ``swarm-2``, ...).

    ``SwarmCluster(n_workers=2, manager=None, docker_url=None, base_image=None, image=None, mem_limit=None,
    cpus=None, env=None)``

    - ``docker_url`` (else ``CHIMERA_SWARM_URL``, else ``DOCKER_HOST``, else the local socket): the engine of a swarm
      manager node. ``CHIMERA_SWARM_URL`` lets DockerCluster and SwarmCluster use different engines.
    - ``image``: the worker image to run (default: the one DockerCluster builds, from ``base_image``).
    - ``mem_limit`` (``"512m"``, bytes) and ``cpus`` (e.g. ``0.5``): limits per replica.
    - ``manager_address``: where replicas reach the Manager (default 127.0.0.1 on a one-machine swarm).
    """

    kind = "swarm"
    error = SwarmError

    def __init__(self, n_workers: int = 2, manager: Manager | None = None, docker_url: str | None = None,
                 base_image: str | None = None, image: str | None = None, mem_limit: str | int | None = None,
                 cpus: float | None = None, env: Mapping[str, str] | None = None, *, prefix: str = "swarm",
                 manager_address: str | None = None, mode: str = "process", timeout: float = 120.0,
                 progress: bool = True) -> None:
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0):
            raise ValueError(f"SwarmCluster: cpus must be a positive number of CPUs per replica, got {cpus!r}")
        self.docker_url = docker_url or os.environ.get("CHIMERA_SWARM_URL") or None
        self.base_image = base_image or os.environ.get("CHIMERA_DOCKER_BASE_IMAGE") or DEFAULT_BASE_IMAGE
        self.image = image
        self.image_built = False
        self.mem_limit, self.cpus = mem_limit, cpus
        self.env = dict(env or {})
        self.manager_address = manager_address
        self.mode = mode
        self.progress = progress
        self.id = uuid.uuid4().hex[:12]
        self.service: Any = None
        self.secret: Any = None
        self._client: Any = None
        self._replicas = 0
        self._tasks: dict[str, dict[str, Any]] = {}  # worker name -> its newest task (from the last look)
        super().__init__(n_workers, manager, prefix=prefix, timeout=timeout)

    # -- the hooks ---------------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._client is None:
            self._client = docker_client(self.docker_url)
        swarm = self._client.info().get("Swarm") or {}
        where = self.docker_url or os.environ.get("DOCKER_HOST") or "the local Docker engine"
        if swarm.get("LocalNodeState") != "active":
            raise SwarmError(f"{where} is not part of a swarm (state: {swarm.get('LocalNodeState') or 'inactive'}): "
                             "run `docker swarm init` on it, or point docker_url= / DOCKER_HOST at a swarm manager")
        if not swarm.get("ControlAvailable"):
            raise SwarmError(f"{where} is a swarm worker node, which cannot create services: point docker_url= at a "
                             "manager node (docker node ls there shows 'Leader' or 'Reachable')")

    def _setup(self) -> None:
        import docker

        m = self.manager
        client = self._client
        t = time.perf_counter()
        if self.image is None:
            self.image, self.image_built = ensure_image(client, self.base_image, self.progress)
        self.timings["image"] = time.perf_counter() - t
        nodes = client.nodes.list()
        address = self.manager_address or m.host
        if address in ("0.0.0.0", "localhost") or address.startswith("127."):
            if len(nodes) > 1 and not self.manager_address:
                raise SwarmError(f"the swarm has {len(nodes)} nodes, and replicas on the others cannot reach a Manager "
                                 f"on {m.host}: create the Manager with an address they can reach (Manager(host=...)) "
                                 "or give manager_address=")
            address = "127.0.0.1"
        owner = owner_id()
        labels = {LABEL: self.id, LABEL_OWNER: owner}
        self.secret = client.secrets.create(name=f"chimera-{self.id}-token", data=m.token.encode(), labels=labels)
        slot = "{{.Task.Slot}}"  # a swarm template: each replica's slot number
        env = {**self.env, **{k: v for k, v in m.worker_environment().items() if k != "CHIMERA_TOKEN"},
               "CHIMERA_TOKEN_FILE": TOKEN_FILE, "CHIMERA_LAB_WORKER_NAME": f"{self.prefix}-{slot}",
               "CHIMERA_LAB_MANAGER": f"{address}:{m.port}", "CHIMERA_LAB_HEALTH_FILE": HEALTH_FILE}
        resources = None
        if self.mem_limit is not None or self.cpus is not None:
            resources = docker.types.Resources(
                cpu_limit=None if self.cpus is None else int(self.cpus * 1e9),
                mem_limit=None if self.mem_limit is None else docker.utils.parse_bytes(self.mem_limit))
        try:
            self.service = client.services.create(
                self.image, args=["--ip", address, "--port", str(m.port), "--mode", self.mode, "--timeout", "30",
                                  "--data-dir", "/home/chimera/data", "--health-file", HEALTH_FILE],
                name=f"chimera-{self.id}", env=[f"{k}={v}" for k, v in env.items()], labels=labels,
                container_labels=labels, networks=["host"], mode=docker.types.ServiceMode("replicated", replicas=0),
                restart_policy=docker.types.RestartPolicy(condition="none"), resources=resources,
                secrets=[docker.types.SecretReference(self.secret.id, self.secret.name, uid="10001", gid="10001",
                                                      filename=TOKEN_FILE.rsplit("/", 1)[1], mode=0o400)])
        except docker.errors.APIError as exc:
            raise SwarmError(f"the swarm refused the workers' service: {_short(exc)}") from None

    def _grow(self, count: int) -> list[str]:
        before = {t["ID"] for t in self._look().values()}
        self._replicas += count
        self._update(self._replicas)
        deadline = time.monotonic() + self.timeout
        while True:  # the swarm numbers the new replicas' slots (a new one, or a lost replica's): read them back
            new = sorted((n for n, t in self._look().items() if t["ID"] not in before
                          and t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") not in ENDED),
                         key=lambda n: int(n.rsplit("-")[-1]))
            if len(new) >= count:
                return new[:count]
            if time.monotonic() > deadline:
                raise SwarmError(f"the swarm made {len(new)} of {count} new replicas within {self.timeout:.0f} s; "
                                 f"docker service ps {self.service.name} says why")
            time.sleep(0.1)

    def _update(self, replicas: int) -> None:
        import docker

        for attempt in range(5):  # an update races the swarm's own updates of the service's version: retry
            try:
                self.service.reload()
                self.service.scale(replicas)
                return
            except docker.errors.APIError as exc:
                if "update out of sequence" not in str(exc) or attempt == 4:
                    raise SwarmError(f"the swarm refused to scale the service to {replicas}: {_short(exc)}") from None

    def _retire(self, names: list[str]) -> None:
        """Scale down: the swarm picks which replicas end; those are the workers that leave."""
        m = self.manager
        before = {n for n in self.alive if m.workers.get(n) is not None and m.workers[n].state == "connected"}
        self._replicas -= len(names)
        self._update(self._replicas)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = {n for n in before if m.workers[n].state != "connected"}
            if len(left) >= len(names):
                break
            time.sleep(0.05)
        self.worker_names = [n for n in self.worker_names if n not in left]

    def _look(self) -> dict[str, dict[str, Any]]:
        """Each worker's newest task (by slot), from the swarm."""
        tasks: dict[str, dict[str, Any]] = {}
        for task in self.service.tasks():
            name = f"{self.prefix}-{task.get('Slot')}"
            if name not in tasks or _version(task) > _version(tasks[name]):
                tasks[name] = task
        self._tasks = tasks
        return tasks

    def _dead(self, names: list[str]) -> dict[str, str]:
        if self.service is None:
            return {}
        tasks = self._look()
        out = {}
        for name in names:
            task = tasks.get(name)
            if task is None:
                continue
            status = task.get("Status") or {}
            state = status.get("State", "")
            # a replica the swarm was asked to stop (scale down, removal) ends with desired state shutdown and
            # exit code 0: not a loss; any other end, and any failure, is
            stopped = task.get("DesiredState") in ("shutdown", "remove") and state not in ("failed", "rejected")
            if state in ENDED and not stopped:
                code = (status.get("ContainerStatus") or {}).get("ExitCode")
                err = status.get("Err") or status.get("Message") or ""
                out[name] = (f"its swarm task {task['ID'][:12]} is {state}"
                             f"{f' ({err})' if err else ''}{'' if code is None else f', exit code {code}'}")
        return out

    def _container(self, worker: str) -> Any:
        task = self._tasks.get(worker) or self._look().get(worker)
        if task is None:
            return None
        import docker

        found = self._client.api.containers(all=True, filters={"label": f"com.docker.swarm.task.id={task['ID']}"})
        try:
            return self._client.containers.get(found[0]["Id"]) if found else None
        except docker.errors.NotFound:  # removed in between
            return None

    def container(self, worker: str) -> Any:
        """The docker SDK Container of a worker's replica (on this engine), to inspect or kill it."""
        c = self._container(worker)
        if c is None:
            raise KeyError(f"no container for worker {worker!r} on this engine (it may run on another swarm node)")
        return c

    def _logs(self, worker: str, tail: int | None) -> str:
        c = self._container(worker)
        if c is None:
            return (f"(no container of {worker!r} on this engine; it may run on another node: "
                    f"docker service logs chimera-{self.id})")
        try:
            return str(c.logs(tail="all" if tail is None else tail).decode(errors="replace"))
        except Exception as exc:
            return f"(the log of {worker!r} cannot be read: {_short(exc)})"

    def _describe(self, worker: str) -> dict[str, Any]:
        task = self._tasks.get(worker) or {}
        return {"task": (task.get("ID") or "")[:12] or None, "task state": (task.get("Status") or {}).get("State")}

    def _details(self) -> dict[str, Any]:
        return {"service": None if self.service is None else self.service.name, "image": self.image,
                "engine": self.docker_url or os.environ.get("DOCKER_HOST") or "local"}

    def _teardown(self) -> None:
        import docker

        if self._client is None:
            return
        if self.service is not None:
            try:
                self.service.remove()
            except docker.errors.NotFound:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the engine stops the replicas after the service is gone
            # (the low-level call: containers.list inspects each one, which races their removal)
            if not self._client.api.containers(all=True, filters={"label": f"{LABEL}={self.id}"}):
                break
            time.sleep(0.2)
        if self.secret is not None:
            while True:
                try:
                    self.secret.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as exc:  # still in use by a task that is ending
                    if time.monotonic() > deadline:
                        log.warning("SwarmCluster %s: could not remove secret %s: %s", self.id, self.secret.name,
                                    _short(exc))
                        break
                    time.sleep(0.2)
        self._client.close()

    @staticmethod
    def cleanup(docker_url: str | None = None, everything: bool = False) -> list[str]:
        """Remove the services and secrets SwarmClusters left when their process died (found by the
        ``chimera-lab.cluster`` label); with ``everything=True`` also those of clusters still running."""
        import docker

        client = docker_client(docker_url)
        removed = []
        try:
            for kind in (client.services, client.secrets):
                for obj in kind.list(filters={"label": LABEL}):
                    labels = obj.attrs.get("Spec", {}).get("Labels", {})
                    if everything or not owner_alive(labels.get(LABEL_OWNER, "")):
                        try:
                            obj.remove()
                            removed.append(obj.name)
                        except docker.errors.APIError:
                            pass
        finally:
            client.close()
        return removed
