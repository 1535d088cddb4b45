"""The worker image: built once from a wheelhouse of the installed chimera_lab, cached by content hash.

What goes in:

- a wheel of the chimera_lab that is installed here, made from its installed files (so an editable checkout and
  a release install both work, and the container runs exactly the host's code);
- wheels of the packages a worker imports, pinned to the versions installed here, and what they need in turn
  (the notebook-only packages stay out: see ``HOST_ONLY``). They are downloaded once into
  ``~/.cache/chimera_lab/docker/wheels/<target>/`` for the base image's Python and platform, so later builds
  work offline;
- a non-root user ``chimera``, a virtual environment in /opt/chimera, ``cp-worker`` as the entry point and a
  HEALTHCHECK that reads the file the worker touches at every heartbeat.

The tag is ``chimera-lab-worker:<hash>``, the hash covering the Dockerfile, the base image's id and every wheel's
content: the same inputs reuse the image, any change builds a new one. No data is ever put into the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

DEFAULT_BASE_IMAGE = "python:3.11-slim"
IMAGE_REPOSITORY = "chimera-lab-worker"
LABEL_IMAGE = "chimera-lab.image"
HEALTH_FILE = "/tmp/chimera-health"
#: the container's health check: is the file the worker touches at every heartbeat (while its Manager answers)
#: younger than 5 s? Plain Python without site-packages: importing chimera_lab every few seconds would cost
#: ~0.4 s of CPU and stall the worker's nodes (bench/docker_workers.py saw p99 latency spikes from it)
HEALTH_CHECK = ("import os, sys, time; sys.exit(0 if time.time() - os.stat(sys.argv[1]).st_mtime < 5 else 1)")
#: chimera_lab's dependencies that only the notebook side (or the host) uses: not installed in worker images
HOST_ONLY = frozenset(("ipython", "ipywidgets", "anywidget", "ipykernel", "jupyterlab", "matplotlib", "docker",
                       "notebook"))

DOCKERFILE = """\
FROM {base}
COPY wheels/ /tmp/chimera-wheels/
RUN python3 -m venv /opt/chimera \\
 && /opt/chimera/bin/python -m pip install --no-cache-dir --no-index --find-links /tmp/chimera-wheels \\
      --disable-pip-version-check -q {requirements} \\
 && rm -rf /tmp/chimera-wheels \\
 && (id -u chimera >/dev/null 2>&1 || useradd --create-home --uid 10001 chimera || adduser -D -u 10001 chimera)
ENV PATH=/opt/chimera/bin:$PATH PYTHONUNBUFFERED=1
USER chimera
WORKDIR /home/chimera
HEALTHCHECK --interval=3s --timeout=5s --start-period=60s --retries=3 \\
  CMD ["/opt/chimera/bin/python", "-I", "-S", "-c", "{health_check}", "{health_file}"]
ENTRYPOINT ["/opt/chimera/bin/cp-worker"]
LABEL {label}="worker" chimera-lab.version="{version}"
"""


class DockerError(RuntimeError):
    """Something about Docker is not as it must be; the message says what and how to fix it."""


class ImageBuildError(DockerError):
    """Building the worker image failed; ``step`` is the Dockerfile step that failed, ``log`` the build's output."""

    def __init__(self, message: str, step: str | None = None, log: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.log = log


@dataclass(frozen=True)
class Target:
    """The Python a base image runs, which decides which wheels fit it."""

    python: str  # "3.11"
    machine: str  # "x86_64"
    glibc: str  # "2.36", or "" for musl/unknown

    @property
    def key(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.machine}-glibc{self.glibc or 'none'}"

    def pip_args(self) -> list[str]:
        """``pip download`` options that select wheels for this target."""
        ver = self.python.replace(".", "")
        args = ["--python-version", self.python, "--implementation", "cp",
                "--abi", f"cp{ver}", "--abi", "abi3", "--abi", "none", "--platform", "any"]
        if self.glibc:
            major, minor = (int(x) for x in self.glibc.split(".")[:2])
            args += ["--platform", f"manylinux2014_{self.machine}", "--platform", f"linux_{self.machine}"]
            for m in range(17, minor + 1) if major == 2 else ():
                args += ["--platform", f"manylinux_2_{m}_{self.machine}"]
        return args


def host_target() -> Target:
    import platform

    libc, ver = platform.libc_ver()
    return Target(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(), ver if libc == "glibc" else "")


# -------------------------------------------------------------------------------------------------------------
# what a worker needs
# -------------------------------------------------------------------------------------------------------------
def worker_requirements(target: Target | None = None) -> dict[str, str]:
    """{distribution name: installed version} for chimera_lab's worker dependencies and theirs, transitively."""
    from packaging.markers import default_environment
    from packaging.utils import canonicalize_name

    env: dict[str, Any] = dict(default_environment())
    if target is not None:
        env.update(python_version=target.python, python_full_version=f"{target.python}.0",
                   platform_machine=target.machine, sys_platform="linux", platform_system="Linux")
    pins: dict[str, str] = {}
    todo = [r for r in _requires("chimera_lab", env) if canonicalize_name(r.name) not in HOST_ONLY]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise DockerError(f"{req.name} (needed by worker images) is not installed here; pip install it") from None
        pins[name] = dist.version
        todo.extend(_requires(req.name, env, extras=req.extras))
    return dict(sorted(pins.items()))


def _requires(dist: str, env: dict[str, Any], extras: Iterable[str] = ()) -> list[Any]:
    from packaging.requirements import Requirement

    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            out.append(req)
    return out


def chimera_lab_wheel(dest: Path) -> Path:
    """A wheel of the installed chimera_lab, made from its files (byte-for-byte the same for the same files)."""
    import chimera_lab

    version = chimera_lab.__version__
    root = Path(chimera_lab.__file__).resolve().parent
    name = f"chimera_lab-{version}-py3-none-any.whl"
    info = f"chimera_lab-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files.append((f"chimera_lab/{path.relative_to(root).as_posix()}", path.read_bytes()))
    files.append((f"{info}/METADATA", f"Metadata-Version: 2.1\nName: chimera_lab\nVersion: {version}\n".encode()))
    files.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: chimera_lab\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n"))
    scripts = "".join(f"{s} = chimera_lab.worker:main\n" for s in ("cp-worker", "chimera-worker"))
    files.append((f"{info}/entry_points.txt", f"[console_scripts]\n{scripts}".encode()))
    record = "".join(f"{n},sha256={_b64sha(d)},{len(d)}\n" for n, d in files) + f"{info}/RECORD,,\n"
    files.append((f"{info}/RECORD", record.encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            zi = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            z.writestr(zi, d, zipfile.ZIP_DEFLATED)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / name
    out.write_bytes(buf.getvalue())
    return out


def _b64sha(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# -------------------------------------------------------------------------------------------------------------
# the wheelhouse
# -------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    root = os.environ.get("CHIMERA_LAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "chimera_lab")
    return Path(root) / "docker"


def _wheel_name_version(filename: str) -> tuple[str, str]:
    from packaging.utils import canonicalize_name

    parts = filename.split("-")
    return canonicalize_name(parts[0]), parts[1]


def wheelhouse(pins: dict[str, str], target: Target, say: Callable[[str], None] = lambda s: None) -> list[Path]:
    """One wheel per pin for `target`, downloading only what the cache does not have yet."""
    folder = cache_dir() / "wheels" / target.key
    folder.mkdir(parents=True, exist_ok=True)
    have = {_wheel_name_version(p.name): p for p in folder.glob("*.whl")}
    missing = [(n, v) for n, v in pins.items() if (n, v) not in have]
    for i, (name, version) in enumerate(missing, 1):
        say(f"downloading wheel {i}/{len(missing)}: {name}=={version}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "--disable-pip-version-check", "-d", str(folder), *target.pip_args(), f"{name}=={version}"]
        got = subprocess.run(cmd, capture_output=True, text=True)
        if got.returncode != 0:  # no wheel for that target: build one here (a pure-Python package)
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                                    "--disable-pip-version-check", "-w", str(folder), f"{name}=={version}"],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                raise DockerError(
                    f"no wheel of {name}=={version} for Python {target.python} on {target.machine} could be "
                    f"downloaded or built (the worker image needs the version installed here):\n"
                    f"{got.stderr.strip()[-1500:]}\n{built.stderr.strip()[-1500:]}")
        have = {_wheel_name_version(p.name): p for p in folder.glob("*.whl")}
    paths = []
    for n, v in pins.items():
        path = have.get((n, v))
        if path is None:
            raise DockerError(f"pip gave no wheel for {n}=={v} in {folder}; delete that folder and try again")
        paths.append(path)
    return paths


def _file_digest(path: Path) -> str:
    """sha256 of a file, remembered beside it by size and mtime (wheels are large and never change)."""
    st = path.stat()
    memo = path.with_name(path.name + ".sha256")
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    try:
        saved_stamp, digest = memo.read_text().split()
        if saved_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo.write_text(f"{stamp} {digest}")
    except OSError:
        pass
    return digest


# -------------------------------------------------------------------------------------------------------------
# the image
# -------------------------------------------------------------------------------------------------------------
def probe_base(client: Any, base_image: str) -> tuple[str, Target]:
    """(image id, Python target) of the base image, pulling it if it is not on the engine; clear errors."""
    import docker

    try:
        image = client.images.get(base_image)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(base_image)
        except docker.errors.DockerException as exc:
            raise DockerError(
                f"base image {base_image!r} is not on the Docker engine and could not be pulled ({_short(exc)}). "
                f"Pull or build it first (docker pull {base_image}), or choose another with base_image=... or "
                "CHIMERA_DOCKER_BASE_IMAGE; it needs python3 with venv and pip") from None
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot inspect base image {base_image!r}: {_short(exc)}") from None
    memo = cache_dir() / "targets.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if image.id in known:
        return image.id, Target(**known[image.id])
    script = ("import sys, platform; l = platform.libc_ver(); "
              "print(sys.version_info[0], sys.version_info[1], platform.machine(), l[1] if l[0] == 'glibc' else '')")
    probe = None
    try:  # created, started and removed here: run(remove=True) leaves a container that failed to start
        probe = client.containers.create(image.id, ["python3", "-c", script], entrypoint=[], network_mode="none",
                                         user="0", labels={LABEL_IMAGE: "probe"})
        probe.start()
        code = probe.wait(timeout=120).get("StatusCode")
        out = probe.logs(stdout=True, stderr=False)
        if code != 0:
            raise docker.errors.DockerException(f"python3 exited with code {code}: "
                                                f"{probe.logs(stdout=False, stderr=True).decode()[-300:].strip()}")
    except docker.errors.DockerException as exc:
        raise DockerError(f"base image {base_image!r} has no working python3 ({_short(exc)}); choose an image "
                          "with python3, venv and pip, e.g. python:3.11-slim") from None
    finally:
        if probe is not None:
            with contextlib.suppress(docker.errors.DockerException):
                probe.remove(force=True)
    major, minor, machine, *glibc = out.decode().split()
    target = Target(f"{major}.{minor}", machine, glibc[0] if glibc else "")
    memo.parent.mkdir(parents=True, exist_ok=True)
    known[image.id] = target.__dict__
    memo.write_text(json.dumps(known, indent=1))
    return image.id, target


@dataclass
class ImagePlan:
    """What `ensure_image` would build: the tag (by content hash) and its inputs."""

    tag: str
    dockerfile: str
    wheels: list[Path]
    base_image: str


def plan_image(client: Any, base_image: str, say: Callable[[str], None] = lambda s: None,
               scratch: Path | None = None) -> ImagePlan:
    import chimera_lab

    base_id, target = probe_base(client, base_image)
    pins = worker_requirements(target)
    wheels = wheelhouse(pins, target, say)
    if scratch is None:  # a caller's own plan: the wheel goes to a folder that is removed again
        with tempfile.TemporaryDirectory(prefix="chimera-wheel-") as tmp:
            return plan_image(client, base_image, say, Path(tmp))
    own = chimera_lab_wheel(scratch)
    requirements = " ".join([f"chimera_lab=={chimera_lab.__version__}", *(f"{n}=={v}" for n, v in pins.items())])
    dockerfile = DOCKERFILE.format(base=base_image, requirements=requirements, health_file=HEALTH_FILE,
                                   health_check=HEALTH_CHECK, label=LABEL_IMAGE, version=chimera_lab.__version__)
    h = hashlib.sha256()
    h.update(dockerfile.encode())
    h.update(base_id.encode())
    for w in [own, *wheels]:
        h.update(w.name.encode())
        h.update(_file_digest(w).encode())
    return ImagePlan(f"{IMAGE_REPOSITORY}:{h.hexdigest()[:16]}", dockerfile, [own, *wheels], base_image)


def ensure_image(client: Any, base_image: str, progress: bool = True) -> tuple[str, bool]:
    """The worker image's tag, building it if no image with that content hash exists; (tag, built?)."""
    import docker

    bar = _Progress(progress)
    scratch = Path(tempfile.mkdtemp(prefix="chimera-image-"))
    try:
        plan = plan_image(client, base_image, bar.say, scratch / "own")
        try:
            client.images.get(plan.tag)
            bar.close()
            return plan.tag, False
        except docker.errors.ImageNotFound:
            pass
        context = scratch / "context"
        (context / "wheels").mkdir(parents=True)
        for w in plan.wheels:
            try:
                os.link(w, context / "wheels" / w.name)
            except OSError:
                shutil.copy2(w, context / "wheels" / w.name)
        (context / "Dockerfile").write_text(plan.dockerfile)
        with _build_lock():  # one build at a time on this machine: a second process then finds the image
            try:
                client.images.get(plan.tag)
                return plan.tag, False
            except docker.errors.ImageNotFound:
                pass
            bar.say(f"building {plan.tag} from {base_image}")
            _build(client, context, plan.tag, bar)
        bar.close()
        return plan.tag, True
    finally:
        bar.close()
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    import fcntl

    path = cache_dir() / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


def _build(client: Any, context: Path, tag: str, bar: _Progress) -> None:
    import docker

    log: list[str] = []
    step: str | None = None
    try:
        stream = client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
                                  labels={LABEL_IMAGE: "worker"})
        for chunk in stream:
            if "stream" in chunk:
                text = chunk["stream"]
                log.append(text)
                m = _STEP.match(text.strip())
                if m:
                    step = m.group(3)
                    bar.step(int(m.group(1)), int(m.group(2)), step)
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                tail = "".join(log[-15:]).rstrip()
                raise ImageBuildError(
                    f"building the worker image failed at step {step!r}:\n{detail.strip()}\n--- last output ---\n"
                    f"{tail}", step=step, log="".join(log))
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"building the worker image failed: {_short(exc)}", step=step,
                              log="".join(log)) from None


class _Progress:
    """A tqdm bar over the Dockerfile's steps (and a line per wheel download); nothing when progress=False."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        self._open(None)
        self.bar.set_description_str(text[:90])

    def step(self, i: int, n: int, text: str) -> None:
        if not self.enabled:
            return
        self._open(n)
        self.bar.total = n
        self.bar.n = i
        self.bar.set_description_str(f"image: {text[:70]}")

    def _open(self, total: int | None) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", leave=True, desc="worker image")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()
            self.bar.close()
            self.bar = None


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.strip().splitlines()[-1][:400] if text.strip() else type(exc).__name__
