"""The digest of the graph editor's sources, exactly as build.mjs computes it (see there): the committed bundle
chimera_lab/jupyter/static/graph_editor.js names it on its first line, so a test can tell, without npm, whether
the bundle was built from the current sources.

    python widgets/graph_editor/digest.py     # prints the digest
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP_FILES = ("package.json", "package-lock.json", "build.mjs")
HEADER_PREFIX = "// chimera_lab graph editor: built by widgets/graph_editor/build.mjs; sources sha256 "


def source_files(root: Path = HERE) -> list[str]:
    """package.json, package-lock.json, build.mjs and every file under src/, relative, sorted by UTF-8 bytes."""
    files = list(TOP_FILES)
    files += [p.relative_to(root).as_posix() for p in (root / "src").rglob("*") if p.is_file()]
    return sorted(files, key=lambda rel: rel.encode("utf-8"))


def sources_digest(root: Path = HERE) -> str:
    """sha256 over utf8(path) NUL utf8(len) NUL content for each file (CRLF read as LF), as build.mjs does."""
    h = hashlib.sha256()
    for rel in source_files(root):
        content = (root / rel).read_bytes().replace(b"\r\n", b"\n")
        h.update(rel.encode("utf-8") + b"\0" + str(len(content)).encode("utf-8") + b"\0")
        h.update(content)
    return h.hexdigest()


if __name__ == "__main__":
    print(sources_digest())
