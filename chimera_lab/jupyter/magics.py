"""`%chimera` and `%%chimera`: a cluster, its pipeline and live views, from notebook cells.

``%load_ext chimera_lab`` registers them. ``%chimera --help`` lists the subcommands; ``%chimera SUB --help``
documents one. Errors are one line in the cell (a UsageError), never a traceback from the magic itself.
"""

from __future__ import annotations

import atexit
import re
import socket
import textwrap
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..cluster.image import DockerError
from ..graph import Graph, GraphError
from ..manager import ManagerError
from ..node import Node
from ..resources import Sizing, detect, set_default_frame_size, size_cluster

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in '10s', '500ms', '2m', '1.5h' or '10'."""
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"cannot read the duration {text!r}: write it like 10s, 500ms, 2m or 1h")
    return float(m.group(1)) * _UNITS[m.group(2)]


def spread(graph: Graph, workers: list[str]) -> dict[str, list[str]]:
    """A mapping that deals the graph's nodes out over the workers, in pipeline order."""
    import networkx as nx

    mapping: dict[str, list[str]] = {w: [] for w in workers}
    for i, node in enumerate(nx.topological_sort(graph)):
        mapping[workers[i % len(workers)]].append(node.name)
    return mapping


# -- one stub per subcommand: its decorators are its documentation and its parser ---------------------
@magic_arguments()
@argument("--workers", "-n", type=int, default=None,
          help="local worker processes to start (default: sized to the CPUs and memory this kernel may use, "
               "2 to 4; 0 with --docker)")
@argument("--docker", "-d", type=int, default=0, metavar="N",
          help="also start N workers in Docker containers (image built once; CHIMERA_DOCKER_BASE_IMAGE picks the base)")
@argument("--slurm", type=int, default=0, metavar="N",
          help="also start N workers as Slurm jobs (SlurmCluster: 1 core, 2G, 1 h each; sbatch must reach slurmctld)")
@argument("--swarm", type=int, default=0, metavar="N",
          help="also start N workers as the replicas of a Docker Swarm service (SwarmCluster, on DOCKER_HOST's swarm)")
@argument("--port", "-p", type=int, default=0, help="the Manager's port (default: any free port)")
@argument("--encrypt", action="store_true",
          help="encrypt all traffic (CurveZMQ; for workers on other machines; the launchers pass it on)")
@argument("--mode", choices=("process", "thread"), default=None,
          help="one process per node, or threads (default: process, thread when memory is short)")
def _up(line: str) -> None:
    """Start a Manager in this kernel plus local (Docker, Slurm, Swarm) workers; put `manager` in the namespace.

    It sizes the cluster to what this kernel may use (cgroup limits count, as in Binder): the number of workers,
    how many messages an edge queues, the frame size of sources not told otherwise and, when memory is short,
    nodes as threads. It prints what it chose and why; --workers and --mode override.
    """


@magic_arguments()
def _down(line: str) -> None:
    """Stop everything `%chimera up` started (also happens when the kernel shuts down)."""


@magic_arguments()
@argument("graph", help="the name of a chimera_lab.Graph variable")
@argument("--mapping", "-m", default=None,
          help="a dict variable or expression {worker: [node names]}; default: spread the nodes over the workers")
def _commit(line: str) -> None:
    """Start every node of GRAPH on the workers and wire them."""


@magic_arguments()
def _start(line: str) -> None:
    """Start the committed pipeline."""


@magic_arguments()
def _stop(line: str) -> None:
    """Stop the pipeline (each node first processes what it was already sent)."""


@magic_arguments()
@argument("name", nargs="?", default="session", help="the session's name (default: session)")
def _record(line: str) -> None:
    """Start writing what nodes save (a new segment); starts the pipeline if needed."""


@magic_arguments()
def _collect(line: str) -> None:
    """Bring every worker's recorded files into the session folder; prints and returns it."""


@magic_arguments()
@argument("duration", help="how long: 10s, 500ms, 2m")
def _run(line: str) -> None:
    """Start, show a progress bar for DURATION (the panel's Stop ends it early), stop."""


@magic_arguments()
def _status(line: str) -> None:
    """Show the live cluster panel (workers, nodes, rates, latency, drops, errors; start/stop buttons)."""


@magic_arguments()
@argument("node", help="the node whose outputs to show")
@argument("--record", "-r", default=None, help="which record of its outputs (default: the first that fits)")
def _view(line: str) -> None:
    """Live view of a node's outputs: images → frame view, numbers → live chart, anything else → a log."""


@magic_arguments()
def _latency(line: str) -> None:
    """Live chart of every node's end-to-end latency (p50 and p99)."""


@magic_arguments()
def _logs(line: str) -> None:
    """Node states, logs and errors (with tracebacks) as they happen."""


@magic_arguments()
@argument("graph", nargs="?", default=None, help="a chimera_lab.Graph variable to edit (default: a new graph)")
def _editor(line: str) -> None:
    """The visual graph editor: add nodes, drag edges, assign workers, commit, start, watch (needs no cluster)."""


@magic_arguments()
@argument("name", help="the node's name (and the variable it is bound to)")
@argument("--kind", "-k", choices=("source", "step", "sink"), default="step",
          help="source: step(self); step and sink: step(self, data)")
@argument("--rate", type=float, default=None, help="steps per second (sources)")
def _node(line: str) -> None:
    """(%%chimera node NAME) The cell body becomes the node's step; `return` sends; `data` holds the inputs."""


SUBCOMMANDS: dict[str, Callable[[str], None]] = {
    "up": _up, "down": _down, "commit": _commit, "start": _start, "stop": _stop, "record": _record,
    "collect": _collect, "run": _run, "status": _status, "view": _view, "latency": _latency, "logs": _logs,
    "editor": _editor, "node": _node,
}


def overview() -> str:
    """The text of `%chimera --help`."""
    lines = ["%chimera SUBCOMMAND [options]      (%chimera SUBCOMMAND --help for one)", ""]
    for name, fn in SUBCOMMANDS.items():
        prefix = "%%chimera" if name == "node" else "%chimera"
        doc = getattr(getattr(fn, "parser", None), "description", None) or ""  # (magic_arguments rewrote __doc__)
        lines.append(f"  {prefix} {name:<9} {doc.strip().splitlines()[0] if doc.strip() else ''}")
    return "\n".join(lines)


@magics_class
class ChimeraMagics(Magics):
    """The %chimera magics; one cluster per kernel."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.up_manager: Any = None  # the Manager `up` started (its launchers hold the workers)
        self.sizing: Sizing | None = None  # what `up` chose for this machine
        self.widgets: list[Any] = []
        atexit.register(self.shutdown)  # kernel shutdown or restart ends what `up` started

    @line_cell_magic
    def chimera(self, line: str, cell: str | None = None) -> Any:
        """Run a %chimera subcommand (see %chimera --help)."""
        parts = line.strip().split(None, 1)
        if not parts or parts[0] in ("-h", "--help", "help"):
            print(overview())
            return None
        sub, rest = parts[0], parts[1] if len(parts) > 1 else ""
        if sub not in SUBCOMMANDS:
            raise UsageError(f"%chimera has no subcommand {sub!r}; see %chimera --help")
        if "-h" in rest.split() or "--help" in rest.split():
            print(SUBCOMMANDS[sub].__doc__.strip() if SUBCOMMANDS[sub].__doc__ else "")  # type: ignore[union-attr]
            SUBCOMMANDS[sub].parser.print_help()  # type: ignore[attr-defined]
            return None
        try:
            args = parse_argstring(SUBCOMMANDS[sub], rest)
        except UsageError as exc:
            raise UsageError(f"%chimera {sub}: {exc}") from None
        if sub == "node":
            if cell is None:
                raise UsageError("%chimera node is a cell magic: put %%chimera node NAME on the first line of a cell")
            return self.node(args, cell)
        if cell is not None:
            raise UsageError(f"%%chimera {sub}: only `node` is a cell magic; use %chimera {sub} on a line")
        try:
            return getattr(self, f"do_{sub}")(args)
        except (GraphError, ManagerError, DockerError, ValueError, KeyError) as exc:
            raise UsageError(f"%chimera {sub}: {exc}") from None

    @property
    def ns(self) -> dict[str, Any]:
        """The notebook's namespace."""
        assert self.shell is not None
        return self.shell.user_ns  # type: ignore[no-any-return]

    def ns_eval(self, expr: str) -> Any:
        """Evaluate an expression in the notebook's namespace."""
        assert self.shell is not None
        return self.shell.ev(expr)

    # -- the cluster -------------------------------------------------------------------------------
    @property
    def manager(self) -> Any:
        """The Manager `up` started; a UsageError if there is none."""
        if self.up_manager is None or self.up_manager.state == "shutdown":
            raise UsageError("no cluster: run %chimera up first")
        return self.up_manager

    def do_up(self, args: Any) -> Any:
        from ..cluster import DockerCluster, LocalCluster
        from ..cluster.slurm import SlurmCluster
        from ..cluster.swarm import SwarmCluster
        from ..manager import Manager

        if self.up_manager is not None and self.up_manager.state != "shutdown":
            m = self.up_manager
            print(f"reusing the cluster at {m.host}:{m.port} with workers {', '.join(m.workers)}")
            self.ns["manager"] = m
            return None
        if args.port:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", args.port))
                except OSError:
                    raise UsageError(f"port {args.port} is in use: choose another with --port, or leave --port out "
                                     "to take a free one") from None
        elsewhere = {"docker": args.docker, "slurm": args.slurm, "swarm": args.swarm}
        if (args.workers is not None and args.workers < 0) or any(n < 0 for n in elsewhere.values()) \
                or (args.workers == 0 and not any(elsewhere.values())):
            raise UsageError("%chimera up needs at least one worker: --workers N (local processes) and/or --docker N, "
                             "--slurm N, --swarm N")
        workers = args.workers if args.workers is not None else (0 if any(elsewhere.values()) else None)
        sizing = size_cluster(detect(check_docker=not args.docker), workers=workers or sum(elsewhere.values()) or None,
                              mode=args.mode)
        local = sizing.workers if workers is None else workers
        kinds = {"docker": DockerCluster, "slurm": SlurmCluster, "swarm": SwarmCluster}
        m = Manager(port=args.port, encrypt=args.encrypt)
        try:
            if local:
                m.add_workers(LocalCluster(local, mode=sizing.mode))
            for kind, n in elsewhere.items():
                if n:
                    m.add_workers(kinds[kind](n, mode=sizing.mode))
        except BaseException:
            m.shutdown()
            raise
        self.up_manager = m
        m.queue_bound = sizing.queue_bound
        set_default_frame_size(*sizing.frame_size)
        self.sizing = sizing
        self.ns["manager"] = m
        names = [name for launcher in m.launchers for name in launcher.alive]  # in the order they were asked for
        print(f"Manager at {m.host}:{m.port} with {len(names)} workers ({', '.join(names)}); "
              "`manager` is in the namespace")
        print(f"sized for {sizing.resources}: {sizing.settings}")
        for reason in sizing.why:
            print(f"  - {reason}")
        return None

    def do_down(self, args: Any) -> None:
        if self.up_manager is None:
            print("nothing to stop: %chimera up was not run")
            return
        self.shutdown()
        print("cluster stopped")

    def shutdown(self) -> None:
        """Close the widgets and the cluster this magic started."""
        for w in self.widgets:
            try:
                w.close()
            except Exception:
                pass
        self.widgets = []
        if self.up_manager is not None:
            manager, self.up_manager = self.up_manager, None
            manager.shutdown()  # ends every launcher's workers: processes, containers, jobs, services

    # -- the pipeline ------------------------------------------------------------------------------
    def _lookup(self, expr: str, what: str) -> Any:
        try:
            return self.ns_eval(expr)
        except Exception as exc:
            raise UsageError(f"cannot find {what} {expr!r}: {exc}") from None

    def do_commit(self, args: Any) -> None:
        m = self.manager
        graph = self._lookup(args.graph, "the graph")
        if not isinstance(graph, Graph):
            raise UsageError(f"{args.graph!r} is a {type(graph).__name__}, not a chimera_lab.Graph")
        if args.mapping is None:
            workers = sorted(w for w, i in m.status()["workers"].items() if i["state"] == "connected")
            mapping = spread(graph, workers)
            print("mapping: " + "; ".join(f"{w}: {', '.join(ns)}" for w, ns in mapping.items() if ns))
        else:
            mapping = self._lookup(args.mapping, "the mapping")
        t0 = time.monotonic()
        m.commit_graph(graph, mapping)
        print(f"committed {len(graph)} nodes in {time.monotonic() - t0:.2f} s")

    def do_start(self, args: Any) -> None:
        self.manager.start()
        print("running")

    def do_stop(self, args: Any) -> None:
        self.manager.stop()
        print("stopped")

    def do_record(self, args: Any) -> None:
        path = self.manager.record(args.name)
        print(f"recording into {path}")

    def do_collect(self, args: Any) -> Any:
        path = self.manager.collect()
        print(f"collected into {path}")
        return path

    def do_run(self, args: Any) -> None:
        from tqdm.auto import tqdm

        seconds = parse_duration(args.duration)
        m = self.manager
        m.start()
        t0 = time.monotonic()
        try:
            with tqdm(total=round(seconds, 1), unit="s", desc="running", bar_format="{l_bar}{bar}| {n:.1f}/{total} s",
                      leave=False) as bar:
                while (elapsed := time.monotonic() - t0) < seconds and m.state in ("running", "recording"):
                    bar.n = round(min(elapsed, seconds), 1)
                    bar.refresh()
                    time.sleep(min(0.1, max(0.0, seconds - elapsed)))
                if elapsed >= seconds:
                    bar.n = bar.total  # complete: the bar goes away (short of it, tqdm would leave a red bar)
        except KeyboardInterrupt:
            interrupted = True
        else:
            interrupted = False
        finally:
            ended_by = m.state  # not running any more before the time was up: stopped elsewhere (the panel)
            if m.state in ("running", "recording"):
                m.stop()
        ran = time.monotonic() - t0
        if interrupted:
            print(f"interrupted after {ran:.1f} s; stopped")
        elif ran < seconds:
            print(f"ran {ran:.1f} s of {seconds:g} s: the Manager was {ended_by} from elsewhere (the panel?)")
        else:
            print(f"ran {ran:.1f} s; stopped")

    # -- views -------------------------------------------------------------------------------------
    def _keep(self, widget: Any) -> Any:
        self.widgets.append(widget)
        return widget

    def do_status(self, args: Any) -> Any:
        from .widgets import ClusterPanel

        return self._keep(ClusterPanel(self.manager))

    def do_view(self, args: Any) -> Any:
        from .widgets import ViewError, view_for

        try:
            return self._keep(view_for(self.manager, args.node, args.record))
        except ViewError as exc:
            raise UsageError(str(exc)) from None

    def do_editor(self, args: Any) -> Any:
        from .graph_editor import GraphEditor

        graph = None
        if args.graph is not None:
            graph = self._lookup(args.graph, "the graph")
            if not isinstance(graph, Graph):
                raise UsageError(f"{args.graph!r} is a {type(graph).__name__}, not a chimera_lab.Graph")
        up = self.up_manager is not None and self.up_manager.state != "shutdown"
        return self._keep(GraphEditor(graph, manager=self.manager if up else None))

    def do_latency(self, args: Any) -> Any:
        from .widgets import LiveChart

        chart = LiveChart(title="end-to-end latency", y_label="ms")
        chart.attach_latency(self.manager)
        return self._keep(chart)

    def do_logs(self, args: Any) -> Any:
        from .widgets import LogView

        view = LogView()
        for name, n in self.manager.status()["nodes"].items():
            if n["last_error"]:
                view.append(f"{name}: {n['last_error']}", level="error")
        view.attach(self.manager)
        return self._keep(view)

    # -- %%chimera node ----------------------------------------------------------------------------
    def node(self, args: Any, body: str) -> Node:
        """Make a Node class whose step is the cell body, and bind an instance to NAME."""
        name = args.name
        if not name.isidentifier():
            raise UsageError(f"%%chimera node: {name!r} must be a valid Python name (it becomes a variable)")
        params = "self" if args.kind == "source" else "self, data"
        src = f"def step({params}):\n{textwrap.indent(body.strip() or 'return None', '    ')}\n"
        ns = self.ns
        try:
            code = compile(src, f"<%%chimera node {name}>", "exec")
        except SyntaxError as exc:
            raise UsageError(f"%%chimera node {name}: the cell body is not valid Python: {exc.msg} "
                             f"(line {(exc.lineno or 1) - 1})") from None
        local: dict[str, Any] = {}
        exec(code, ns, local)  # globals: the notebook's namespace, so the body sees its imports
        cls = type(f"{name}_node", (Node,), {"step": local["step"], "__module__": "__main__",
                                             "__doc__": f"Node made by %%chimera node {name} ({args.kind})."})
        try:
            instance = cls(name=name, rate_hz=args.rate)
        except ValueError as exc:
            raise UsageError(f"%%chimera node {name}: {exc}") from None
        ns[name] = instance
        return instance  # type: ignore[no-any-return]


def load_ipython_extension(ipython: Any) -> None:
    """Register %chimera (called by %load_ext chimera_lab)."""
    ipython.register_magics(ChimeraMagics)
