"""The worker container's health check: ``python -m chimera_lab.cluster.health [FILE]``.

The worker (``cp-worker --health-file FILE``) touches FILE at every heartbeat while its Manager answers, so a
fresh file means "connected and responsive". Exit 0 when healthy, 1 otherwise (Docker's HEALTHCHECK rule).
"""

from __future__ import annotations

import os
import sys
import time

HEALTH_FILE = "/tmp/chimera-health"
FRESH = 5.0  # seconds: ten heartbeats


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else HEALTH_FILE
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        print(f"unhealthy: {path} does not exist (the worker has not connected to its Manager yet)")
        return 1
    if age > FRESH:
        print(f"unhealthy: no answer from the Manager for {age:.1f} s")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
