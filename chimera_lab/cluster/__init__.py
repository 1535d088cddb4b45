"""Launchers: ways to get workers for a Manager: local processes, Docker containers (here or on another
machine's engine); ``cp-worker`` on any machine is the third way and needs no launcher."""

from .docker import DockerCluster
from .image import DockerError, ImageBuildError
from .local import LocalCluster

__all__ = ["DockerCluster", "DockerError", "ImageBuildError", "LocalCluster"]
