"""chimera_lab: distributed data pipelines and distributed machine learning, Jupyter-first."""

from .cluster import (
    DockerCluster,
    DockerError,
    ImageBuildError,
    Launcher,
    LauncherError,
    LocalCluster,
    SlurmCluster,
    SlurmError,
    SwarmCluster,
    SwarmError,
)
from .datachunk import DataChunk
from .graph import Graph, GraphError
from .manager import CommitError, Manager, ManagerError, Tap, TaskError, send_by_value
from .node import Node
from .records.collect import CollectError
from .records.session import Session
from .worker import Worker, WorkerError

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``cp.GraphEditor``: imported on first use (it needs the widget libraries; importing chimera_lab must not)."""
    if name == "GraphEditor":
        from .jupyter.graph_editor import GraphEditor

        return GraphEditor
    raise AttributeError(f"module 'chimera_lab' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext chimera_lab``: register the %chimera magics."""
    from .jupyter import load_ipython_extension as load

    load(ipython)


__all__ = [
    "CollectError",
    "CommitError",
    "DataChunk",
    "DockerCluster",
    "DockerError",
    "Graph",
    "GraphEditor",
    "GraphError",
    "ImageBuildError",
    "Launcher",
    "LauncherError",
    "LocalCluster",
    "Manager",
    "ManagerError",
    "Node",
    "Session",
    "SlurmCluster",
    "SlurmError",
    "SwarmCluster",
    "SwarmError",
    "Tap",
    "TaskError",
    "Worker",
    "WorkerError",
    "send_by_value",
]
