"""Launchers: ways to get workers for a Manager, all behind one interface (``Launcher``): local processes,
Docker containers (here or on another machine's engine), Slurm jobs and Docker Swarm services. ``cp-worker`` on
any machine is the way that needs no launcher. ``launcher(name)`` finds one by name, plug-ins' too."""

from .base import Launcher, LauncherError, available_launchers, launcher
from .docker import DockerCluster
from .image import DockerError, ImageBuildError
from .local import LocalCluster
from .slurm import SlurmCluster, SlurmError
from .swarm import SwarmCluster, SwarmError

__all__ = ["DockerCluster", "DockerError", "ImageBuildError", "Launcher", "LauncherError", "LocalCluster",
           "SlurmCluster", "SlurmError", "SwarmCluster", "SwarmError", "available_launchers", "launcher"]
