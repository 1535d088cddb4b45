"""SlurmCluster: each worker is a Slurm batch job running ``cp-worker`` (the shape of dask-jobqueue's SLURMCluster).

::

    with cp.Manager(port=0) as manager:
        cluster = manager.add_workers(cp.SlurmCluster(jobs=2, cores=1, memory="2G", walltime="01:00:00"))
        print(cluster.job_script())          # what was submitted for each worker

How it works: ``sbatch`` gets the job script on its standard input (no script file is written) and the Manager's
token in its environment (``--export=ALL``): the token is never on a command line, in the script, or in a file
others can read. The job's output goes to a private folder (mode 0700; on the shared filesystem, ``~`` by
default, so the submitting machine can read it back). A watcher asks ``squeue`` twice a second: a job that ends
(cancelled, failed, timed out, pre-empted, out of memory) has its worker reported lost at once, with the Slurm
state and the last lines of its output. ``close()`` (also the Manager's shutdown and the interpreter's exit)
cancels every job of the cluster and waits until Slurm has none left; a kernel that dies without closing leaves
workers that exit on their own when the Manager stops answering (10 s), and ``SlurmCluster.cleanup()`` cancels
what a crashed process left queued.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..manager import Manager
from ..worker import local_address_towards
from .base import Launcher, LauncherError, log_tail, owner_alive, owner_id

__all__ = ["SlurmCluster", "SlurmError"]

COMMENT = "chimera-lab"  # job comments are chimera-lab:<cluster id>:<owner>: what cleanup() goes by
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED", "SIGNALING",
          "STAGE_OUT", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED")
#: where a job that ran goes when it is pre-empted with requeue (or requeued by hand, or suspended)
BACK_IN_QUEUE = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED")
#: pending reasons that never clear by waiting: the job asks for what the partition cannot give
HOPELESS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "ReqNodeNotAvail",
            "InvalidAccount", "InvalidQOS", "PartitionDown", "PartitionInactive", "NodeDown")
_MEMORY = re.compile(r"^\d+[KMGT]?$")
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
OWNER_FILE = ".owner"  # in a log directory: the owner_id of the process whose cluster wrote it


def log_root() -> Path:
    """Where the default log directories are: ``~/.chimera_lab/slurm``."""
    return Path.home() / ".chimera_lab" / "slurm"


COMMAND_TIMEOUT = 20.0  # seconds any Slurm command may take (a missing slurm.conf makes them retry for 60 s)


class SlurmError(LauncherError):
    """Slurm refused or could not run a worker's job; the message names the cause and the fix."""


def _run(argv: list[str], stdin: str | None = None, env: Mapping[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; a missing command, a hang or (with check) a failure is a SlurmError."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=None if env is None else
                              dict(env), timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise SlurmError(f"Slurm's {argv[0]} is not on PATH: run this where Slurm's commands are installed (a login "
                         "node of the cluster), or install them (Debian: apt install slurm-client)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT:.0f} s: is slurm.conf readable "
                         f"({os.environ.get('SLURM_CONF', '/etc/slurm/slurm.conf')}) and slurmctld running? Check "
                         "with: scontrol ping") from None
    if check and done.returncode != 0:
        raise SlurmError(f"{shlex.join(argv[:2])} failed: {_clean(done.stderr) or done.stdout.strip()}")
    return done


def _clean(stderr: str) -> str:
    """Slurm's error lines without the 'sbatch: error:' prefixes, on one line."""
    lines = [re.sub(r"^\w+: error: ", "", line).strip() for line in stderr.strip().splitlines()]
    return "; ".join(line for line in lines if line)


def _check_memory(memory: str | None) -> str | None:
    if memory is None:
        return None
    text = str(memory).strip().upper().removesuffix("B")
    if not _MEMORY.match(text):
        raise ValueError(f"SlurmCluster: memory={memory!r} is not a Slurm size: give a number with K, M, G or T, "
                         "e.g. memory='2G' (per job)")
    return text


class SlurmCluster(Launcher):
    """Workers as Slurm jobs, one ``cp-worker`` per job (``slurm-0``, ``slurm-1``, ...).

    ``SlurmCluster(jobs=2, cores=1, memory="2G", walltime="01:00:00", partition=None, job_extra=(),
    manager=None)``

    - ``cores``, ``memory``, ``walltime``: what each job asks for (``--cpus-per-task``, ``--mem``, ``--time``);
      ``partition``: the partition (default: the cluster's default one); ``job_extra``: more ``#SBATCH`` options,
      e.g. ``["--qos=debug", "--account=physics"]``; ``job_script_prologue``: shell lines run before the worker
      (``["module load python/3.11", "source ~/env/bin/activate"]``).
    - ``python``: the Python that runs the worker on the compute nodes (default: this one, which needs a shared
      filesystem; give the path of an environment with chimera_lab installed otherwise).
    - ``manager_address``: where the jobs reach the Manager (default: 127.0.0.1 when every node of the partition is
      this machine; with ``Manager(host="0.0.0.0")``, this machine's address facing the nodes).
    - ``log_directory``: where the jobs' output goes (default ``~/.chimera_lab/slurm/<id>``, removed on close);
      ``data_dir``: where the workers record (a subfolder per worker; default ``./chimera-data``).
    - ``env``: extra environment variables for the jobs.
    """

    kind = "slurm"
    error = SlurmError

    def __init__(self, jobs: int = 1, cores: int = 1, memory: str | None = "2G", walltime: str = "01:00:00",
                 partition: str | None = None, job_extra: Sequence[str] = (), manager: Manager | None = None, *,
                 job_script_prologue: Sequence[str] = (), python: str | None = None,
                 manager_address: str | None = None, log_directory: str | os.PathLike[str] | None = None,
                 data_dir: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                 prefix: str = "slurm", mode: str = "process", job_name: str = "chimera",
                 timeout: float = 120.0) -> None:
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise ValueError(f"SlurmCluster: cores must be a whole number >= 1 (CPUs per job), got {cores!r}")
        if not _WALLTIME.match(str(walltime)):
            raise ValueError(f"SlurmCluster: walltime={walltime!r} is not a Slurm time: give minutes, HH:MM:SS or "
                             "D-HH:MM:SS, e.g. walltime='01:00:00'")
        for line in [*job_extra, *job_script_prologue]:
            if not isinstance(line, str) or "\n" in line:
                raise ValueError(f"SlurmCluster: job_extra and job_script_prologue take one line each, got {line!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job_name):
            raise ValueError(f"SlurmCluster: job_name={job_name!r}: use letters, digits, '_', '.' and '-' only")
        self.cores, self.memory, self.walltime, self.partition = cores, _check_memory(memory), str(walltime), partition
        self.job_extra = [x if x.startswith("-") else f"--{x}" for x in job_extra]
        self.job_script_prologue = list(job_script_prologue)
        self.python = python or sys.executable
        self.manager_address = manager_address
        self.env = dict(env or {})
        self.mode = mode
        self.job_name = job_name
        self.data_dir = None if data_dir is None else Path(data_dir).absolute()
        self.id = uuid.uuid4().hex[:10]
        self.log_directory = Path(log_directory) if log_directory is not None else log_root() / self.id
        self._made_log_directory = False
        self.jobs: dict[str, str] = {}  #: worker name -> Slurm job id
        self._states: dict[str, tuple[str, str]] = {}  # job id -> (state, reason), from the last squeue
        self._ran: set[str] = set()  # jobs seen running (one back in the queue was pre-empted or requeued)
        self._address = ""
        super().__init__(jobs, manager, prefix=prefix, timeout=timeout)

    # -- the hooks ---------------------------------------------------------------------------------------------
    def _check(self) -> None:
        ping = _run(["scontrol", "ping"], check=False)
        if " is UP" not in ping.stdout:
            conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
            said = (ping.stdout.strip().splitlines() or [_clean(ping.stderr) or "no answer"])[0]
            raise SlurmError(f"no Slurm controller reachable ({said}): start slurmctld (on the controller machine), "
                             f"or point SLURM_CONF at your cluster's slurm.conf (now {conf})")
        partitions = _run(["sinfo", "-h", "-o", "%R|%a"]).stdout.split()
        names = [p.split("|")[0] for p in partitions]
        if self.partition is not None and self.partition not in names:
            raise SlurmError(f"Slurm has no partition {self.partition!r}; its partitions: {', '.join(names) or 'none'} "
                             "(sinfo -s). Give one of them as partition=, or leave it out for the default one")

    def _setup(self) -> None:
        self._address = self._manager_address()
        self.log_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._made_log_directory = True
        os.chmod(self.log_directory, 0o700)  # the jobs' output is for this user only
        (self.log_directory / OWNER_FILE).write_text(owner_id())  # what cleanup() goes by after a crash

    def _manager_address(self) -> str:
        """Where the jobs reach the Manager, or a SlurmError if they cannot."""
        m = self.manager
        if self.manager_address:
            return self.manager_address
        argv = ["sinfo", "-h", "-N", "-o", "%N|%o"] + (["-p", self.partition] if self.partition else [])
        nodes = [line.split("|") for line in _run(argv).stdout.split()]
        here = {os.uname().nodename, os.uname().nodename.split(".")[0], "localhost"}
        remote = [addr for name, addr in nodes if not (addr.startswith("127.") or addr in here or name in here)]
        if m.host.startswith("127.") or m.host == "localhost":
            if remote:
                raise SlurmError(f"the Manager listens on {m.host}, which Slurm's nodes {', '.join(remote[:5])} cannot "
                                 "reach: create it with Manager(host='0.0.0.0') (behind your firewall) or an address "
                                 "on the cluster's network, or give manager_address=")
            return "127.0.0.1"
        if m.host == "0.0.0.0":
            return local_address_towards(remote[0]) if remote else "127.0.0.1"
        return m.host

    def job_script(self, worker: str | None = None) -> str:
        """The batch script submitted for a worker (the next one's if None); the token is not in it."""
        name = worker or (self._next_names(1)[0] if self._manager is not None else f"{self.prefix}-0")
        m = self._manager
        host = self._address or (m.host if m is not None else "<manager address>")
        port = str(m.port) if m is not None else "<manager port>"
        options = [f"--job-name={self.job_name}-{self.id}-{name}", f"--output={self.log_directory / name}.out",
                   "--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cores}", f"--time={self.walltime}",
                   f"--comment={COMMENT}:{self.id}:{owner_id()}"]
        if self.memory is not None:
            options.append(f"--mem={self.memory}")
        if self.partition is not None:
            options.append(f"--partition={self.partition}")
        argv = [self.python, "-c", "from chimera_lab.worker import main; raise SystemExit(main())",
                "--ip", host, "--port", port, "--name", name,
                "--mode", self.mode, "--timeout", "30"]
        if self.data_dir is not None:
            argv += ["--data-dir", str(self.data_dir / name)]
        lines = ["#!/usr/bin/env bash", *(f"#SBATCH {o}" for o in [*options, *self.job_extra]),
                 "# the Manager's token comes in the job's environment (CHIMERA_TOKEN), never in this script",
                 *self.job_script_prologue, f"exec {shlex.join(argv)}"]
        return "\n".join(lines) + "\n"

    def _grow(self, count: int) -> list[str]:
        m = self.manager
        names = self._next_names(count)
        inherited = {k: v for k, v in os.environ.items() if k != "CHIMERA_ENCRYPT"}  # the Manager decides
        env = {**inherited, **self.env, **m.worker_environment(), "PYTHONUNBUFFERED": "1"}
        for name in names:
            out = _run(["sbatch", "--parsable", "--export=ALL"], stdin=self.job_script(name), env=env, check=False)
            if out.returncode != 0:
                raise self._refused(_clean(out.stderr) or out.stdout.strip())
            self.jobs[name] = out.stdout.strip().split(";")[0]
        return names

    def _refused(self, said: str) -> SlurmError:
        """A SlurmError for sbatch's refusal, with what to change."""
        where = f"partition {self.partition!r}" if self.partition else "the default partition"
        if "Memory specification" in said or "memory" in said.lower():
            sizes = _run(["sinfo", "-h", "-o", "%m"] + (["-p", self.partition] if self.partition else []),
                         check=False).stdout.split()
            most = max((int(s.rstrip("+")) for s in sizes if s.rstrip("+").isdigit()), default=None)
            return SlurmError(f"Slurm refused memory={self.memory!r} per job ({said}): no node of {where} has that "
                              f"much{f' (the largest has {most} MB)' if most else ''}; ask for less, e.g. memory='1G'")
        if "partition" in said.lower():
            return SlurmError(f"Slurm refused the partition {self.partition!r} ({said}): see sinfo -s")
        if "time limit" in said.lower():
            return SlurmError(f"Slurm refused walltime={self.walltime!r} ({said}): {where} allows less (sinfo -o %l)")
        if "CPU count" in said or "cpus" in said.lower():
            return SlurmError(f"Slurm refused cores={self.cores} per job ({said}): ask for fewer")
        return SlurmError(f"Slurm refused the worker's job: {said}. The script was:\n{self.job_script()}")

    def _squeue(self) -> dict[str, tuple[str, str]]:
        """Job id -> (state, reason) of this user's jobs that Slurm still knows (all states)."""
        out = _run(["squeue", "--me", "-h", "-t", "all", "-o", "%i|%T|%r"], check=False)
        if out.returncode != 0:
            return dict(self._states)  # the controller did not answer this time: keep what was known
        states = {}
        for line in out.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3:
                states[parts[0]] = (parts[1], parts[2])
        self._states = {j: states[j] for j in self.jobs.values() if j in states}
        return states

    def _dead(self, names: list[str]) -> dict[str, str]:
        states = self._squeue()
        out = {}
        for name in names:
            job = self.jobs.get(name)
            if job is None:
                continue
            state, reason = states.get(job, ("GONE", ""))
            if state == "RUNNING":
                self._ran.add(job)
            if job in self._ran and state in BACK_IN_QUEUE:
                out[name] = (f"its Slurm job {job} was pre-empted or requeued (now {state}, {reason}); it is "
                             "cancelled so that it does not come back as a second worker: scale() starts a new one"
                             f"{self._log_tail(name, 5)}")
                _run(["scancel", job], check=False)
            elif state == "PENDING" and reason in HOPELESS:
                out[name] = (f"its Slurm job {job} can never start ({reason}): the partition cannot give what it asks "
                             f"(cores={self.cores}, memory={self.memory}, walltime={self.walltime}); ask for less")
                _run(["scancel", job], check=False)
            elif state not in ACTIVE:
                said = "is no longer known to Slurm" if state == "GONE" else f"is {state}"
                out[name] = f"its Slurm job {job} {said}{f' ({reason})' if reason not in ('', 'None') else ''}" \
                            f"{self._log_tail(name, 5)}"
        return out

    def _waiting_hint(self, waiting: list[str]) -> str:
        pending = [(n, self._states.get(self.jobs.get(n, ""), ("?", ""))) for n in waiting]
        queued = [f"{n}: {s}{f' ({r})' if r not in ('', 'None') else ''}" for n, (s, r) in pending]
        return f"; Slurm says {', '.join(queued)} (squeue --me)" if queued else ""

    def _stop(self, names: list[str]) -> None:
        jobs = [self.jobs[n] for n in names if n in self.jobs]
        if not jobs:
            return
        _run(["scancel", *jobs], check=False)
        deadline = time.monotonic() + 30  # KillWait (30 s by default) bounds how long a job takes to end
        while time.monotonic() < deadline:
            states = self._squeue()
            if not any(states.get(j, ("GONE", ""))[0] in ACTIVE for j in jobs):
                return
            time.sleep(0.2)

    def _logs(self, worker: str, tail: int | None) -> str:
        return log_tail(self.log_directory / f"{worker}.out", tail)

    def _describe(self, worker: str) -> dict[str, Any]:
        job = self.jobs.get(worker)
        state = self._states.get(job or "", ("", ""))[0]
        return {"job": job, "job state": state or None}

    def _details(self) -> dict[str, Any]:
        return {"partition": self.partition or "default", "cores": self.cores, "memory": self.memory,
                "walltime": self.walltime}

    def _teardown(self) -> None:
        try:
            self._stop(list(self.jobs))
        finally:
            if self._made_log_directory:
                shutil.rmtree(self.log_directory, ignore_errors=True)

    @staticmethod
    def cleanup(everything: bool = False) -> list[str]:
        """Cancel the jobs SlurmClusters left when their process died (found by their ``chimera-lab:`` comment)
        and remove their log directories under ``~/.chimera_lab/slurm`` once no job of theirs runs; with
        ``everything=True`` also those of clusters still running. Returns the cancelled job ids."""
        out = _run(["squeue", "--me", "-h", "-o", "%i|%k"])
        cancel, busy = [], set()
        for line in out.stdout.splitlines():
            job, _, comment = line.partition("|")
            tag, _, rest = comment.partition(":")
            cluster, _, owner = rest.partition(":")
            if tag == COMMENT and (everything or not owner_alive(owner)):
                cancel.append(job)
            elif tag == COMMENT:
                busy.add(cluster)
        if cancel:
            _run(["scancel", *cancel], check=False)
        for folder in log_root().glob("*"):
            mark = folder / OWNER_FILE
            if folder.name not in busy and mark.exists() and (everything or not owner_alive(mark.read_text())):
                shutil.rmtree(folder, ignore_errors=True)
        return cancel

    def __repr__(self) -> str:
        jobs = ", ".join(f"{n}={j}" for n, j in self.jobs.items())
        jobs = f" ({jobs})" if jobs else ""
        return f"<SlurmCluster {self.id} {self.state}: {len(self.alive)} of {self.n_workers} jobs{jobs}>"
