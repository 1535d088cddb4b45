"""The seed's ``CHIMERA_*`` environment variables: read and checked when ``chimera.run`` starts, never at import.

What each one does here:

======================================  =========================================================================
``CHIMERA_WORKERS_NODES_NAMES``         required; the workers, one per file ``chimera_workers/<name>.py``; each
                                        runs as a local process reading ``chimera_train_data/<name>/``
``CHIMERA_WORKERS_ENDPOINTS_TIMEOUT``   seconds each call to a worker (fit, predict) may take (default 100.0)
``CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES`` how many times a failed worker call is tried again (default 0)
``CHIMERA_BACKEND``                     ``local`` (default: processes) or ``docker`` (a container per worker)
``CHIMERA_NETWORK_NAME``,               checked here, used by the Docker backend only: the Docker network, its
``CHIMERA_NETWORK_PREFIX``,             subnet ``<prefix>.0/<mask>`` (gateway ``<prefix>.1``, worker i at
``CHIMERA_NETWORK_SUBNET_MASK``         ``<prefix>.<i + 2>``)
``CHIMERA_WORKERS_CPU_SHARES``,         checked here, used by the Docker backend only: each container's
``CHIMERA_WORKERS_MAPPED_PORTS``,       ``--cpu-shares``, the host port mapped to it, the address those ports
``CHIMERA_WORKERS_HOST``,               bind on and the port inside the container
``CHIMERA_WORKERS_PORT``
======================================  =========================================================================

Lists are written as JSON or Python literals, as in the seed: ``'["w1", "w2"]'``, ``"[2, 2]"``. An empty variable
counts as unset.
"""

from __future__ import annotations

import ast
import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKERS_FOLDER = "chimera_workers"
TRAIN_DATA_FOLDER = "chimera_train_data"
BACKENDS = ("local", "docker")
# Docker's rule for container names, which the Docker backend will use as they are
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """One or more ``CHIMERA_*`` variables are missing or wrong; ``problems`` lists each, with its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(problems) == 1:
            message = f"chimera configuration: {problems[0]}"
        else:
            message = f"chimera configuration: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(message)


@dataclass(frozen=True)
class ChimeraConfig:
    """The checked ``CHIMERA_*`` settings of one ``chimera.run`` (see the module's docstring for what each does)."""

    root: Path  # where chimera_workers/ and chimera_train_data/ are (the master's working directory)
    workers: tuple[str, ...]  # CHIMERA_WORKERS_NODES_NAMES: one process per chimera_workers/<name>.py
    cpu_shares: tuple[int, ...]  # CHIMERA_WORKERS_CPU_SHARES: Docker backend only (--cpu-shares)
    mapped_ports: tuple[int, ...]  # CHIMERA_WORKERS_MAPPED_PORTS: Docker backend only (host ports)
    network_name: str = "chimera-network"  # CHIMERA_NETWORK_NAME: Docker backend only
    network_prefix: str = "192.168.10"  # CHIMERA_NETWORK_PREFIX: Docker backend only
    subnet_mask: int = 24  # CHIMERA_NETWORK_SUBNET_MASK: Docker backend only
    workers_host: str = "127.0.0.1"  # CHIMERA_WORKERS_HOST: Docker backend only (where mapped ports bind)
    workers_port: int = 80  # CHIMERA_WORKERS_PORT: Docker backend only (the port inside each container)
    max_retries: int = 0  # CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES: tries after a failed worker call
    timeout: float = 100.0  # CHIMERA_WORKERS_ENDPOINTS_TIMEOUT: seconds each worker call may take
    backend: str = "local"  # CHIMERA_BACKEND: "local" processes or "docker" containers (a DockerCluster)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, root: Path | str | None = None) -> ChimeraConfig:
        """Read and check every ``CHIMERA_*`` variable of `environ`; raise ConfigError listing all problems."""
        return _Reader(environ, Path.cwd() if root is None else Path(root)).config()

    def worker_file(self, name: str) -> Path:
        """The file that defines worker `name`: ``chimera_workers/<name>.py`` under the root."""
        return self.root / WORKERS_FOLDER / f"{name}.py"

    def data_folder(self, name: str) -> str:
        """Where worker `name` reads its training data, relative to its working directory (the root)."""
        return f"{TRAIN_DATA_FOLDER}/{name}"

    def worker_address(self, name: str) -> str:
        """The address worker `name` gets on the Docker network (``<prefix>.<i + 2>``, as in the seed)."""
        return f"{self.network_prefix}.{self.workers.index(name) + 2}"


class _Reader:
    """Collects every problem instead of stopping at the first, so one run shows them all."""

    def __init__(self, environ: Mapping[str, str], root: Path) -> None:
        self.env = environ
        self.root = root
        self.problems: list[str] = []

    def raw(self, var: str) -> str | None:
        value = self.env.get(var)
        return value if value is not None and value.strip() else None

    def bad(self, var: str, value: str, what: str) -> None:
        self.problems.append(f"{var}={value!r}: {what}")

    def scalar(self, var: str, default: Any, parse: Callable[[str], Any], check: Callable[[Any], str | None]) -> Any:
        value = self.raw(var)
        if value is None:
            return default
        try:
            parsed = parse(value.strip())
        except (ValueError, TypeError):
            parsed = None
        problem = check(parsed) if parsed is not None else None
        if parsed is None or problem:
            self.bad(var, value, problem or check(None) or "invalid")
            return default
        return parsed

    def listing(self, var: str, example: str) -> list[Any] | None:
        value = self.raw(var)
        if value is None:
            return None
        parsed: Any
        try:
            parsed = json.loads(value)
        except ValueError:
            try:
                parsed = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                self.bad(var, value, f"is not a list; write it as JSON, e.g. {example}")
                return None
        if not isinstance(parsed, (list, tuple)):
            self.bad(var, value, f"must be a list, e.g. {example}")
            return None
        return list(parsed)

    def int_list(self, var: str, n: int | None, low: int, high: int, rule: str, example: str,
                 default: Callable[[int], list[int]]) -> tuple[int, ...]:
        values = self.listing(var, example)
        if values is None:
            return tuple(default(n or 0)) if self.raw(var) is None else ()
        wrong = [(i, v) for i, v in enumerate(values) if not _is_int(v) or not low <= v <= high]
        if wrong:
            i, v = wrong[0]
            self.bad(var, self.env[var], f"every value must be {rule}; value {i} is {v!r}")
            return ()
        if n is not None and len(values) != n:
            self.bad(var, self.env[var], f"has {len(values)} value{'s' * (len(values) != 1)} but "
                     f"CHIMERA_WORKERS_NODES_NAMES names {n} worker{'s' * (n != 1)}; give one value per worker, "
                     "in the same order")
        return tuple(values)

    def names(self) -> tuple[str, ...] | None:
        var = "CHIMERA_WORKERS_NODES_NAMES"
        if self.raw(var) is None:
            near = difflib.get_close_matches(var, [k for k in self.env if k.startswith("CHIMERA_")], n=1)
            hint = f" (did you mean {near[0]}, which is set?)" if near else ""
            self.problems.append(f"{var} is not set{hint}: set it to the list of your workers' file names "
                                 f"(chimera_workers/<name>.py, without .py), e.g. os.environ[{var!r}] = "
                                 "'[\"w1\", \"w2\"]' before chimera.run")
            return None
        values = self.listing(var, '["w1", "w2"]')
        if values is None:
            return None
        raw = self.env[var]
        if not values:
            self.bad(var, raw, "names no worker; list at least one, e.g. [\"w1\"]")
            return None
        wrong = [v for v in values if not isinstance(v, str) or not _NAME.match(v)]
        if wrong:
            self.bad(var, raw, f"{wrong[0]!r} is not a valid worker name: use letters, digits, '_', '.' or '-', "
                     "starting with a letter or digit (it is a file name and a container name)")
            return None
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            self.bad(var, raw, f"names {', '.join(map(repr, dupes))} more than once; each worker must be unique")
            return None
        for name in values:
            path = self.root / WORKERS_FOLDER / f"{name}.py"
            if name.endswith(".py") and (self.root / WORKERS_FOLDER / name).is_file():
                self.bad(var, raw, f"name the workers without .py: {name.removesuffix('.py')!r}, not {name!r}")
            elif not path.is_file():
                self.problems.append(f"CHIMERA_WORKERS_NODES_NAMES names {name!r} but {WORKERS_FOLDER}/{name}.py "
                                     f"does not exist in {self.root}; create it (a worker file that calls "
                                     f"worker.serve()) or remove {name!r} from the list")
        return tuple(values)

    def config(self) -> ChimeraConfig:
        names = self.names()
        n = len(names) if names is not None else None
        cpu = self.int_list("CHIMERA_WORKERS_CPU_SHARES", n, 2, 2**62, "an int >= 2", "[2, 2]",
                            lambda k: [2] * k)
        ports = self.int_list("CHIMERA_WORKERS_MAPPED_PORTS", n, 1, 65535, "an int from 1 to 65535", "[101, 102]",
                              lambda k: list(range(101, 101 + k)))
        dupes = sorted({p for p in ports if ports.count(p) > 1})
        if dupes:
            self.bad("CHIMERA_WORKERS_MAPPED_PORTS", self.env.get("CHIMERA_WORKERS_MAPPED_PORTS", ""),
                     f"port {dupes[0]} is listed more than once; each worker needs its own host port")
        network_name = self.scalar("CHIMERA_NETWORK_NAME", "chimera-network", str,
                                   lambda v: None if v is not None and _NAME.match(v) else
                                   "must be a Docker network name: letters, digits, '_', '.' or '-'")
        before = len(self.problems)
        prefix = self.scalar("CHIMERA_NETWORK_PREFIX", "192.168.10", str, _check_prefix)
        mask = self.scalar("CHIMERA_NETWORK_SUBNET_MASK", 24, _parse_int,
                           lambda v: None if v is not None and 0 <= v <= 32 else "must be an int from 0 to 32")
        if len(self.problems) == before:  # cross-check only two values that are each right
            self._check_network(prefix, mask, n or 0)
        # 127.0.0.1 by default (the seed used 0.0.0.0): published ports stay on this machine unless asked
        host = self.scalar("CHIMERA_WORKERS_HOST", "127.0.0.1", str, _check_address)
        port = self.scalar("CHIMERA_WORKERS_PORT", 80, _parse_int,
                           lambda v: None if v is not None and 1 <= v <= 65535 else "must be an int from 1 to 65535")
        retries = self.scalar("CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES", 0, _parse_int,
                              lambda v: None if v is not None and v >= 0 else
                              "must be an int >= 0 (how many times a failed worker call is tried again)")
        timeout = self.scalar("CHIMERA_WORKERS_ENDPOINTS_TIMEOUT", 100.0, float,
                              lambda v: None if v is not None and math.isfinite(v) and v > 0 else
                              "must be a number of seconds > 0, e.g. 100.0")
        backend = self.scalar("CHIMERA_BACKEND", "local", lambda s: s.lower(),
                              lambda v: None if v in BACKENDS else "must be 'local' or 'docker'")
        if self.problems:
            raise ConfigError(self.problems)
        assert names is not None
        return ChimeraConfig(root=self.root, workers=names, cpu_shares=cpu, mapped_ports=ports,
                             network_name=network_name, network_prefix=prefix, subnet_mask=mask,
                             workers_host=host, workers_port=port, max_retries=retries, timeout=timeout,
                             backend=backend)

    def _check_network(self, prefix: str, mask: int, n: int) -> None:
        both = f"CHIMERA_NETWORK_PREFIX={prefix!r} with CHIMERA_NETWORK_SUBNET_MASK={mask}"
        try:
            net = ipaddress.IPv4Network(f"{prefix}.0/{mask}", strict=True)
        except ValueError:
            loose = ipaddress.IPv4Network(f"{prefix}.0/{mask}", strict=False)
            self.problems.append(f"{both}: the subnet {prefix}.0/{mask} has host bits set (it would be {loose}); "
                                 f"use a mask of 24 or more, or a prefix that ends in .0 for this mask")
            return
        last = n + 1  # the gateway is .1, worker i is .(i + 2)
        hosts = net.num_addresses - 2
        if last > min(hosts, 254):
            room = max(min(hosts, 254) - 1, 0)
            self.problems.append(f"{both}: the subnet {net} has room for {room} worker address"
                                 f"{'es' * (room != 1)} (the gateway takes .1, workers .2 upwards) but "
                                 f"CHIMERA_WORKERS_NODES_NAMES names {n}; use a smaller mask")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_int(s: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", s):
        raise ValueError(s)
    return int(s)


def _check_prefix(v: str | None) -> str | None:
    fix = "must be the first three numbers of an IPv4 address, e.g. 192.168.10"
    if v is None or not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", v):
        return fix
    if any(int(part) > 255 for part in v.split(".")):
        return f"{fix} (each number from 0 to 255)"
    return None


def _check_address(v: str | None) -> str | None:
    try:
        ipaddress.ip_address(v or "")
        return None
    except ValueError:
        return "must be an IP address to bind on, e.g. 0.0.0.0 (every interface) or 127.0.0.1 (this machine only)"
