"""DockerCluster: workers in Docker containers, on this machine's engine or another's (``ssh://``).

::

    with cp.Manager(port=0) as manager:
        cluster = manager.add_workers(cp.DockerCluster(n_workers=2))   # or DockerCluster(2, manager=manager)
        manager.commit_graph(graph, {cluster.worker_names[0]: ["cam"], ...})

What it does, in order: reaches the engine (``docker_url``, else ``DOCKER_HOST``, else the local socket);
makes sure the worker image exists (built once per content hash, see ``image.py``); creates the bridge network
if one was asked for; starts one container per worker, labelled ``chimera-lab.cluster=<id>``, running
``cp-worker`` as the non-root user ``chimera``; waits until every worker has joined the Manager. A watcher
follows the engine's events, so a container that dies is reported lost at once.

``close()`` (also: leaving ``with``, the Manager's shutdown, the interpreter's exit) stops and removes exactly
the containers and the network this cluster created. ``DockerCluster.cleanup()`` removes what crashed runs left,
found by label, and nothing else.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from ..manager import Manager, ManagerError
from .base import Launcher, LauncherError, owner_alive, owner_id
from .image import DEFAULT_BASE_IMAGE, HEALTH_FILE, DockerError, ImageBuildError, _short, ensure_image

log = logging.getLogger("chimera_lab.docker")

LABEL = "chimera-lab.cluster"  # the cluster's id: what close() and cleanup() go by
LABEL_WORKER = "chimera-lab.worker"
LABEL_OWNER = "chimera-lab.owner"  # host:pid:start-time of the process that created it
DATA_DIR = "/home/chimera/data"

__all__ = ["DockerCluster", "DockerError", "ImageBuildError"]


def _per_worker(value: Any, n: int, what: str, scalar: tuple[type, ...]) -> list[Any]:
    if value is None or isinstance(value, scalar):
        return [value] * n
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) != n:
            raise ValueError(f"DockerCluster: {what} has {len(value)} entries for {n} workers; give one per worker "
                             "or a single value for all")
        return list(value)
    raise TypeError(f"DockerCluster: {what} must be one value or a list with one per worker, got {value!r}")


def docker_client(docker_url: str | None = None, timeout: float = 60.0) -> Any:
    """A docker SDK client for `docker_url` (else DOCKER_HOST, else the local socket), or a DockerError saying
    how to get an engine."""
    try:
        import docker
    except ImportError:
        raise DockerError("the Docker SDK is not installed: pip install docker") from None
    url = docker_url or os.environ.get("DOCKER_HOST") or None
    try:
        if url and url.startswith("ssh://"):  # the system's ssh, with the user's keys and ~/.ssh/config
            client = docker.DockerClient(base_url=url, use_ssh_client=True, timeout=int(timeout))
        elif url:
            client = docker.DockerClient(base_url=url, timeout=int(timeout))
        else:
            client = docker.from_env(timeout=int(timeout))
        client.ping()
        return client
    except Exception as exc:  # the SDK raises DockerException, requests' and ssh's errors alike
        where = url or "the local Docker socket (unix:///var/run/docker.sock)"
        raise DockerError(
            f"no Docker engine reachable at {where} ({_short(exc)}). Start one (sudo systemctl start docker, or "
            "dockerd; Docker Desktop on a laptop), or point docker_url= / DOCKER_HOST at a running engine, e.g. "
            "ssh://user@host") from None


def _engine_host(docker_url: str | None) -> str | None:
    """The address of the machine the engine runs on (from docker_url or DOCKER_HOST), or None for this one."""
    url = docker_url or os.environ.get("DOCKER_HOST") or ""
    if not url.startswith(("ssh://", "tcp://", "http://", "https://")):
        return None  # a unix socket (or npipe): this machine
    host = urlparse(url).hostname
    if not host or host in ("localhost", "::1") or host.startswith("127."):
        return None
    return host


def _prune_images(client: Any) -> list[str]:
    import docker

    from .image import IMAGE_REPOSITORY, LABEL_IMAGE

    used = {c.attrs.get("Image") for c in client.containers.list(all=True)}
    ours = sorted(client.images.list(name=IMAGE_REPOSITORY, filters={"label": f"{LABEL_IMAGE}=worker"}),
                  key=lambda i: i.attrs.get("Created", ""))
    removed = []
    for image in ours[:-1]:  # the newest stays: it is most likely the current one
        if image.id not in used:
            try:
                client.images.remove(image.id, force=False)
                removed.append(f"image {', '.join(image.tags) or image.short_id}")
            except docker.errors.DockerException:
                pass
    return removed


class DockerCluster(Launcher):
    """Workers in Docker containers for a Manager.

    ``DockerCluster(n_workers=2, manager=manager, base_image=None, cpu_shares=None, mem_limit=None,
    network="host", docker_url=None, env=None, volumes=None)``

    - ``base_image``: what the worker image is built from (default ``CHIMERA_DOCKER_BASE_IMAGE`` or
      ``python:3.11-slim``); it needs python3 with venv and pip. The image is built once and reused.
    - ``cpu_shares``, ``mem_limit`` (``"512m"``, bytes), ``ports``, ``volumes``, ``ip_addresses``: one value for
      all workers or a list with one per worker. ``volumes`` use the Docker SDK's form,
      ``{"/host/dir": {"bind": "/home/chimera/in", "mode": "ro"}}``: data is mounted, never put in the image.
    - ``network="host"``: the containers share the host's network (they reach a Manager on 127.0.0.1). Any other
      name is a bridge network, created with ``subnet`` (e.g. ``"192.168.10.0/24"``) unless it exists; the
      Manager then also listens on its gateway address, and ``ports`` publish container ports on the host.
    - ``docker_url`` (or ``DOCKER_HOST``): ``ssh://user@host`` starts the workers on another machine, which
      connects back to the Manager's address (create the Manager with a host the other machine can reach, or
      give ``manager_address``).
    - ``names`` (default ``docker-0``, ``docker-1``, ...), ``env`` (for all) and ``worker_env`` (one dict per
      worker), ``commands`` (one argv per worker instead of cp-worker, run with the image's Python first on PATH),
      ``working_dir``.

    Without ``manager=`` it starts when given to ``manager.add_workers(cluster)``, or, with its own Manager, on
    ``start()`` or ``with``.
    """

    kind = "docker"
    error = DockerError

    def __init__(self, n_workers: int = 2, manager: Manager | None = None, base_image: str | None = None,
                 cpu_shares: int | Sequence[int] | None = None, mem_limit: str | int | Sequence[Any] | None = None,
                 network: str = "host", docker_url: str | None = None, env: Mapping[str, str] | None = None,
                 volumes: Any = None, *, names: Sequence[str] | None = None, prefix: str = "docker",
                 subnet: str | None = None, ip_addresses: Sequence[str] | None = None, ports: Any = None,
                 commands: Sequence[Sequence[str]] | None = None, worker_env: Sequence[Mapping[str, str]] | None = None,
                 working_dir: str | None = None, manager_address: str | None = None, mode: str = "process",
                 timeout: float = 120.0, progress: bool = True) -> None:
        if names is not None:
            names = list(names)
            n_workers = len(names)
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"DockerCluster needs at least one worker, got n_workers={n_workers!r}")
        if not network or not isinstance(network, str):
            raise ValueError(f"DockerCluster: network must be 'host' or a network name, got {network!r}")
        if network in ("none", "bridge"):
            raise ValueError(f"DockerCluster: network={network!r} cannot be used: workers must reach the Manager; use "
                             "'host' or a network name of your own (created with subnet= if it does not exist)")
        if subnet is not None:
            try:
                ipaddress.ip_network(subnet)
            except ValueError as exc:
                raise ValueError(f"DockerCluster: subnet {subnet!r} is not a network like 192.168.10.0/24 ({exc})")
            if network == "host":
                raise ValueError("DockerCluster: subnet= needs a bridge network: give network='<a name>' too")
        self.n_workers = n_workers
        self._names_given = names
        self.prefix = prefix
        self.base_image = base_image or os.environ.get("CHIMERA_DOCKER_BASE_IMAGE") or DEFAULT_BASE_IMAGE
        self.cpu_shares = _per_worker(cpu_shares, n_workers, "cpu_shares", (int,))
        for c in self.cpu_shares:
            if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 2):
                raise ValueError(f"DockerCluster: cpu_shares must be whole numbers >= 2 (1024 is one CPU's worth "
                                 f"by default), got {c!r}")
        self.mem_limit = _per_worker(mem_limit, n_workers, "mem_limit", (str, int))
        self.network = network
        self.subnet = subnet
        self.ip_addresses = _per_worker(ip_addresses, n_workers, "ip_addresses", (str,)) if ip_addresses else \
            [None] * n_workers
        self.ports = _per_worker(ports, n_workers, "ports", (dict,))
        if network == "host" and any(self.ports):
            raise ValueError("DockerCluster: ports are published only on a bridge network; with network='host' a "
                             "container uses the host's ports directly")
        # volumes: one dict / list of "host:container:mode" strings for all, or a list with one of those per worker
        per_worker = isinstance(volumes, list | tuple) and bool(volumes) and isinstance(volumes[0], dict | list)
        self.volumes = _per_worker(volumes, n_workers, "volumes", ()) if per_worker else [volumes] * n_workers
        self.commands = _per_worker(commands, n_workers, "commands", ()) if commands is not None else None
        self.worker_env = _per_worker(worker_env, n_workers, "worker_env", (dict,)) if worker_env else \
            [None] * n_workers
        self.env = dict(env or {})
        self.working_dir = working_dir
        self.docker_url = docker_url
        self.manager_address = manager_address
        self.mode = mode
        self.timeout = timeout
        self.progress = progress
        self.id = uuid.uuid4().hex[:12]
        self.image: str | None = None
        self.image_built = False
        self.containers: dict[str, Any] = {}  # worker name -> Container
        self.created_network: Any = None  # a network this cluster created (and removes)
        self._client: Any = None
        self._events: Any = None
        self._address = ""
        self._network_args: dict[str, Any] = {}
        super().__init__(n_workers, manager, prefix=prefix, timeout=timeout)

    # ---------------------------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._client is None:
            self._client = docker_client(self.docker_url)

    def _setup(self) -> None:
        remote = _engine_host(self.docker_url)
        t = time.perf_counter()
        self.image, self.image_built = ensure_image(self._client, self.base_image, self.progress)
        self.timings["image"] = time.perf_counter() - t
        t = time.perf_counter()
        self._address, self._network_args = self._network(remote)
        self.timings["network"] = time.perf_counter() - t
        events_client = docker_client(self.docker_url)  # the stream blocks its client: one of its own
        self._events = events_client.events(decode=True, filters={"label": [f"{LABEL}={self.id}"],
                                                                  "type": ["container"], "event": ["die"]})
        self._events_client = events_client

    def _grow(self, count: int) -> list[str]:
        t = time.perf_counter()
        names = self._names(count)
        self._start_containers(names)
        self.timings["containers"] = time.perf_counter() - t
        return names

    def _network(self, remote: str | None) -> tuple[str, dict[str, Any]]:
        """(the address containers reach the Manager at, container options for the network)."""
        import docker

        assert self.manager is not None
        m = self.manager
        if self.network == "host":
            if self.manager_address:
                return self.manager_address, {"network_mode": "host"}
            if remote is None:
                return ("127.0.0.1" if m.host in ("0.0.0.0", "127.0.0.1") else m.host), {"network_mode": "host"}
            if m.host.startswith("127."):
                raise DockerError(
                    f"the Docker engine runs on {remote}, whose containers cannot reach a Manager listening on "
                    f"{m.host}: create the Manager with host='0.0.0.0' (or this machine's address on {remote}'s "
                    "network), or give manager_address=")
            if m.host == "0.0.0.0":
                from ..worker import local_address_towards

                return local_address_towards(remote), {"network_mode": "host"}
            return m.host, {"network_mode": "host"}
        # a bridge network: use it if it exists, else create it
        client = self._client
        try:
            net = client.networks.get(self.network)
            subnets = [c.get("Subnet") for c in (net.attrs.get("IPAM") or {}).get("Config") or []]
            if self.subnet and str(ipaddress.ip_network(self.subnet)) not in subnets:
                raise DockerError(
                    f"a Docker network named {self.network!r} already exists with subnet {', '.join(subnets) or '?'}"
                    f", not {self.subnet}: choose another network name (CHIMERA_NETWORK_NAME), or remove it with "
                    f"docker network rm {self.network} if nothing uses it")
        except docker.errors.NotFound:
            ipam = None
            if self.subnet:
                sub = ipaddress.ip_network(self.subnet)
                pool = docker.types.IPAMPool(subnet=str(sub), gateway=str(next(sub.hosts())))
                ipam = docker.types.IPAMConfig(pool_configs=[pool])
            try:
                net = client.networks.create(self.network, driver="bridge", ipam=ipam,
                                             labels={LABEL: self.id, LABEL_OWNER: owner_id()})
            except docker.errors.APIError as exc:
                raise DockerError(f"cannot create Docker network {self.network!r} with subnet {self.subnet or 'auto'}"
                                  f": {_short(exc)}; choose another subnet (CHIMERA_NETWORK_PREFIX) or name") from None
            self.created_network = net
            net.reload()
        config = (net.attrs.get("IPAM") or {}).get("Config") or [{}]
        gateway = config[0].get("Gateway")
        if not gateway and config[0].get("Subnet"):
            gateway = str(next(ipaddress.ip_network(config[0]["Subnet"]).hosts()))
        if self.manager_address:
            address = self.manager_address
        elif remote is None:
            if not gateway:
                raise DockerError(f"network {self.network!r} has no gateway address the Manager could listen on; "
                                  "give manager_address=")
            if m.host != "0.0.0.0":
                m.listen(gateway)  # reachable from this network's containers, and nowhere new
            address = gateway
        else:
            if m.host.startswith("127."):
                raise DockerError(f"the Docker engine runs on {remote}: create the Manager with host='0.0.0.0' or an "
                                  "address that machine can reach, or give manager_address=")
            if m.host == "0.0.0.0":
                from ..worker import local_address_towards

                address = local_address_towards(remote)
            else:
                address = m.host
        return address, {"network": self.network}

    def _names(self, count: int) -> list[str]:
        """The names of the next `count` workers: those given as names= first, then <prefix>-<i>."""
        m = self.manager
        given = [n for n in (self._names_given or []) if n not in self.worker_names][:count]
        clash = [n for n in given if n in m.workers and m.workers[n].state == "connected"]
        if clash:
            raise ManagerError(f"DockerCluster: worker name(s) {', '.join(clash)} are already connected to the "
                               "Manager; choose other names=")
        return given + self._next_names(count - len(given))

    def _start_containers(self, names: list[str]) -> None:
        import docker

        m = self.manager
        address, network_args = self._address, self._network_args
        owner = owner_id()
        for name in names:
            i = len(self.containers)  # this worker's index: per-worker options are given in this order

            def pick(values: list[Any], what: str, i: int = i) -> Any:
                if i < len(values):
                    return values[i]
                if all(v == values[0] for v in values):
                    return values[0]
                raise LauncherError(f"DockerCluster: {what} was given per worker for {len(values)} workers; scale "
                                    "to at most that many, or give one value for all workers")

            env = {**self.env, **(pick(self.worker_env, "worker_env") or {}), **m.worker_environment(),
                   "CHIMERA_LAB_HEALTH_FILE": HEALTH_FILE, "CHIMERA_LAB_MANAGER": f"{address}:{m.port}",
                   "CHIMERA_LAB_WORKER_NAME": name, "CHIMERA_LAB_WORKER_INDEX": str(i)}
            entrypoint: list[str] | None
            if self.commands is not None:
                command, entrypoint = list(pick(self.commands, "commands")), []
            else:
                command = ["--ip", address, "--port", str(m.port), "--name", name, "--mode", self.mode,
                           "--data-dir", f"{DATA_DIR}/{name}", "--timeout", "30"]
                entrypoint = None
            kwargs: dict[str, Any] = dict(
                name=f"chimera-{self.id}-{name}", command=command, environment=env, detach=True, init=True,
                labels={LABEL: self.id, LABEL_WORKER: name, LABEL_OWNER: owner,
                        "chimera-lab.manager": f"{address}:{m.port}"},
                cpu_shares=pick(self.cpu_shares, "cpu_shares"), mem_limit=pick(self.mem_limit, "mem_limit"),
                volumes=pick(self.volumes, "volumes"),
                working_dir=self.working_dir, **network_args)
            if entrypoint is not None:
                kwargs["entrypoint"] = entrypoint
            ports, ip = pick(self.ports, "ports"), pick(self.ip_addresses, "ip_addresses")
            if ports:
                kwargs["ports"] = ports
            if ip:
                kwargs["networking_config"] = {self.network: self._client.api.create_endpoint_config(
                    ipv4_address=ip)}
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            try:
                container = self._client.containers.create(self.image, **kwargs)
            except docker.errors.APIError as exc:
                raise DockerError(f"cannot create the container of worker {name!r}: {_short(exc)}") from None
            self.containers[name] = container
            try:
                container.start()
            except docker.errors.APIError as exc:
                text = _short(exc)
                hint = ""
                if "port is already allocated" in text or "address already in use" in text:
                    hint = (f"; a port it publishes ({ports}) is in use on the host: choose other ports "
                            "(CHIMERA_WORKERS_MAPPED_PORTS) or end what uses them")
                elif "Address already in use" in text or "IP address" in text:
                    hint = "; its IP address is taken on that network: choose another (CHIMERA_NETWORK_PREFIX)"
                raise DockerError(f"cannot start the container of worker {name!r}: {text}{hint}") from None

    def _dead(self, names: list[str]) -> dict[str, str]:
        out = {}
        for name in names:
            c = self.containers.get(name)
            if c is None:
                continue
            c.reload()
            if c.status in ("exited", "dead"):
                out[name] = f"its container {c.name} exited with code {c.attrs.get('State', {}).get('ExitCode')}"
        return out

    def _watch(self) -> None:
        """Follow the engine's 'die' events for this cluster's containers: report their workers lost at once."""
        try:
            for event in self._events:
                attrs = event.get("Actor", {}).get("Attributes", {})
                name = attrs.get(LABEL_WORKER)
                if name:
                    self._report_lost(name, f"its container {attrs.get('name', '?')} exited with code "
                                            f"{attrs.get('exitCode', '?')}")
        except Exception:  # the stream was closed (close()) or the engine went away
            pass

    def _logs(self, worker: str, tail: int | None) -> str:
        c = self.containers.get(worker)
        if c is None:
            return ""
        try:
            return str(c.logs(tail="all" if tail is None else tail).decode(errors="replace"))
        except Exception as exc:
            return f"(the log of {worker!r} cannot be read: {_short(exc)})"

    def _describe(self, worker: str) -> dict[str, Any]:
        c = self.containers.get(worker)
        return {"container": None if c is None else c.name}

    def _details(self) -> dict[str, Any]:
        return {"image": self.image, "network": self.network, "engine": self.docker_url or os.environ.get(
            "DOCKER_HOST") or "local"}

    def container(self, worker: str) -> Any:
        """The docker SDK Container of a worker (to inspect or kill it)."""
        return self.containers[worker]

    # ---------------------------------------------------------------------------------------------------------
    def _stop(self, names: list[str]) -> None:
        self._remove([self.containers[n] for n in names if n in self.containers])

    def _teardown(self) -> None:
        """Stop and remove this cluster's containers and the network it created."""
        self._remove_containers()
        if self._events is not None:
            try:
                self._events.close()
            except Exception:
                pass
            self._events_client.close()
        if self.created_network is not None:
            try:
                self.created_network.remove()
            except Exception as exc:
                log.warning("DockerCluster %s: could not remove network %s: %s", self.id, self.network, _short(exc))
        if self._client is not None:
            self._client.close()

    def _remove_containers(self) -> None:
        if self._client is None:
            return
        import docker

        try:
            found = self._client.containers.list(all=True, filters={"label": f"{LABEL}={self.id}"})
        except docker.errors.DockerException:
            found = list(self.containers.values())
        self._remove(found)

    def _remove(self, containers: list[Any]) -> None:
        """Stop (SIGTERM: the worker says goodbye and ends its nodes) and remove containers, in parallel."""
        import docker

        def remove(c: Any) -> None:
            try:
                c.stop(timeout=3)
            except docker.errors.DockerException:
                pass
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                log.warning("DockerCluster %s: could not remove container %s: %s", self.id, c.name, _short(exc))

        threads = [threading.Thread(target=remove, args=(c,), daemon=True) for c in containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    @staticmethod
    def cleanup(docker_url: str | None = None, everything: bool = False, images: bool = False) -> list[str]:
        """Remove containers and networks that DockerClusters left behind when their process died (found by the
        ``chimera-lab.cluster`` label); with ``everything=True`` also those of clusters still running. With
        ``images=True`` also the worker images (``chimera-lab-worker:*``) that no container uses, but the newest.
        Nothing without chimera_lab's labels is touched. Returns what was removed."""
        import docker

        client = docker_client(docker_url)
        removed = []
        try:
            for c in client.containers.list(all=True, filters={"label": LABEL}):
                if everything or not owner_alive(c.labels.get(LABEL_OWNER, "")):
                    try:
                        c.remove(force=True)
                        removed.append(c.name)
                    except docker.errors.NotFound:
                        pass
            for net in client.networks.list(filters={"label": LABEL}):
                net.reload()
                if (everything or not owner_alive(net.attrs.get("Labels", {}).get(LABEL_OWNER, ""))) \
                        and not net.attrs.get("Containers"):
                    try:
                        net.remove()
                        removed.append(f"network {net.name}")
                    except docker.errors.NotFound:
                        pass
            if images:
                removed += _prune_images(client)
        finally:
            client.close()
        return removed

    def __repr__(self) -> str:
        if not self.started:
            return f"<DockerCluster {self.id} not started: {self.n_workers} workers from {self.base_image}>"
        state = "closed" if self.closed else f"{self.image}"
        return f"<DockerCluster {self.id} {state} workers={self.worker_names} network={self.network}>"
