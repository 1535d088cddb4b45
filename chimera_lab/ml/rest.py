"""The seed's REST API for one master, on the standard library's ThreadingHTTPServer.

``POST /v1/chimera/<route>/fit`` (body empty or ``{}``) → ``{"message": "ok", ...}``;
``POST /v1/chimera/<route>/predict`` with ``{"X_pred_columns": [...], "X_pred_rows": [[...], ...]}`` →
``{"y_pred_rows": [...]}``; ``GET /openapi.json`` (OpenAPI 3) and ``GET /docs`` (a page made from it). Every error is
``{"detail": "<what is wrong and how to fix it>"}`` with a fitting status code.
"""

from __future__ import annotations

import html
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from ..manager import Manager
from .config import ChimeraConfig
from .masters import MasterError

status_log = logging.getLogger("chimera_status")
time_log = logging.getLogger("chimera_time")

MAX_BODY = 64 * 1024 * 1024  # bytes a request body may have
MASTERS = {"aggregation": "AggregationMaster", "parameter-server": "ParameterServerMaster"}
PREDICT_FIELDS = ("X_pred_columns", "X_pred_rows")
REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Content", 500: "Internal Server Error", 502: "Bad Gateway"}


@dataclass
class Response:
    """What one request gets back."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class HTTPError(Exception):
    """An error answer: its status and the detail to send."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj, allow_nan=False).encode(), headers=headers or {})


class Api:
    """The routes of one master: fit and predict (one fit at a time; predicts wait for a running fit), the OpenAPI
    document and its docs page."""

    def __init__(self, master: Any, manager: Manager | None, workers: Sequence[str], config: ChimeraConfig | None,
                 max_body: int = MAX_BODY) -> None:
        self.master = master
        self.name = type(master).__name__
        self.manager = manager
        self.workers = list(workers)
        self.config = config
        self.max_body = max_body
        self.prefix = f"/v1/chimera/{master.route}"
        self._fitting = threading.Lock()  # one fit at a time; a second gets 409 at once
        self._model = threading.Lock()  # predicts wait while a fit replaces the model
        self.routes: dict[str, dict[str, Callable[[Any], Response]]] = {
            "/": {"GET": lambda _: _json(200, self.index())},
            "/openapi.json": {"GET": lambda _: _json(200, openapi(self.master))},
            "/docs": {"GET": lambda _: Response(200, docs_html(openapi(self.master)).encode(),
                                                "text/html; charset=utf-8")},
            f"{self.prefix}/fit": {"POST": self.fit},
            f"{self.prefix}/predict": {"POST": self.predict},
        }

    def index(self) -> dict[str, Any]:
        """What this server is: its master, workers, routes and where the docs are."""
        return {"master": self.name, "fitted": bool(getattr(self.master, "fitted", False)), "workers": self.workers,
                "routes": [f"POST {self.prefix}/fit", f"POST {self.prefix}/predict"],
                "docs": "/docs", "openapi": "/openapi.json"}

    # --- the two routes ----------------------------------------------------------------------------
    def fit(self, body: Any) -> Response:
        """POST .../fit: fit the master on its workers."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise HTTPError(422, f"the fit body must be empty or a JSON object ({{}}), got {_kind(body)}")
        if body:
            raise HTTPError(422, f"fit takes no fields (got {', '.join(map(repr, body))}); send {{}} or nothing. "
                            "The master's settings are given in the master file, e.g. "
                            "ParameterServerMaster('classifier', max_iter=200)")
        if not self._fitting.acquire(blocking=False):
            raise HTTPError(409, "a fit is already running; wait for it to finish, then try again")
        try:
            with self._model:
                return _json(200, self.master.fit(self.manager, self.workers, self.config, endpoint=f"POST "
                                                  f"{self.prefix}/fit"))
        finally:
            self._fitting.release()

    def predict(self, body: Any) -> Response:
        """POST .../predict: predictions for the rows of the body."""
        example = '{"X_pred_columns": ["a", "b"], "X_pred_rows": [[1.0, 2.0]]}'
        if body is None:
            raise HTTPError(400, f"predict needs a JSON body like {example}")
        if not isinstance(body, dict):
            raise HTTPError(422, f"the predict body must be a JSON object like {example}, got {_kind(body)}")
        missing = [k for k in PREDICT_FIELDS if k not in body]
        unknown = [k for k in body if k not in PREDICT_FIELDS]
        if missing or unknown:
            what = "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                         f"unknown field {', '.join(map(repr, unknown))}" if unknown else "") if p)
            raise HTTPError(422, f"the predict body takes exactly X_pred_columns and X_pred_rows ({what}), e.g. "
                            f"{example}")
        with self._model:
            y = self.master.predict(self.manager, self.workers, body["X_pred_columns"], body["X_pred_rows"],
                                    self.config, endpoint=f"POST {self.prefix}/predict")
        try:
            return _json(200, {"y_pred_rows": y})
        except ValueError:
            raise HTTPError(500, "the prediction contains NaN or infinity, which JSON cannot carry; check the "
                            "workers' models and data")

    # --- dispatch ----------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, read: Callable[[int], bytes]) -> Response:
        """Answer one request (`read(n)` reads n bytes of its body); never raises."""
        path = urlsplit(target).path
        if len(path) > 1:
            path = path.rstrip("/")
        t0 = time.perf_counter()
        try:
            response = self._dispatch(method, path, headers, read)
        except HTTPError as exc:
            response = _json(exc.status, {"detail": exc.detail}, exc.headers)
        except MasterError as exc:
            response = _json(exc.status, {"detail": str(exc)})
        except Exception as exc:  # a bug or something unforeseen: say what, log the traceback
            status_log.exception("%s %s: unexpected error", method, path)
            response = _json(500, {"detail": f"unexpected error ({type(exc).__name__}: {exc}); the traceback is in "
                                             "chimera_status.log"})
        seconds = time.perf_counter() - t0
        if method == "POST" and path in self.routes:
            time_log.info("%s %s master endpoint latency = %.4f s", method, path, seconds)
        log = status_log.info if response.status < 400 else status_log.warning
        detail = "" if response.status < 400 else f": {json.loads(response.body)['detail']}"
        log("%s %s -> %d in %.4f s%s", method, path, response.status, seconds, detail)
        return response

    def _dispatch(self, method: str, path: str, headers: Any, read: Callable[[int], bytes]) -> Response:
        methods = self.routes.get(path)
        if methods is None:
            parts = path.split("/")
            other = MASTERS.get(parts[3]) if len(parts) > 3 and path.startswith("/v1/chimera/") else None
            mine = f"POST {self.prefix}/fit and POST {self.prefix}/predict"
            if other and other != self.name:
                raise HTTPError(404, f"{path} belongs to {other}, but this server runs {self.name}: use {mine}")
            raise HTTPError(404, f"no route {path}; this server runs {self.name}: {mine} (docs at /docs)")
        head = method == "HEAD" and "GET" in methods
        if method not in methods and not head:
            allowed = ", ".join(methods)
            raise HTTPError(405, f"{path} takes {allowed}, not {method}", {"Allow": allowed})
        if head:
            response = methods["GET"](None)
            return Response(response.status, b"", response.content_type,
                            {**response.headers, "Content-Length": str(len(response.body))})
        if method != "POST":
            return methods[method](None)
        return methods[method](self._body(headers, read))

    def _body(self, headers: Any, read: Callable[[int], bytes]) -> Any:
        """The request's JSON body (None when empty); 400, 411, 413 or 415 when it cannot be read as JSON."""
        length_header = headers.get("Content-Length")
        if length_header is None:
            if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
                raise HTTPError(411, "send the body with a Content-Length header, not chunked")
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"Content-Length {length_header!r} is not a number of bytes")
        if length > self.max_body:
            raise HTTPError(413, f"the body has {length} bytes, more than the {self.max_body} this server takes; "
                            "predict fewer rows per request")
        raw = read(length)
        if not raw.strip():
            return None
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise HTTPError(415, f"the body is {ctype}, but this API takes JSON: send it with "
                            "Content-Type: application/json")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPError(400, f"the body is not UTF-8 text ({exc}); send JSON encoded as UTF-8")
        try:
            return json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise HTTPError(400, f"the body is not valid JSON: {exc}")
        except RecursionError:
            raise HTTPError(400, "the body is JSON nested too deeply to read; send a flat object like "
                            '{"X_pred_columns": [...], "X_pred_rows": [[...], ...]}')


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; use finite numbers only")


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


# -------------------------------------------------------------------------------------------------
# the HTTP server
# -------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chimera_lab"
    timeout = 120  # seconds a client may take to send its request

    def _serve(self) -> None:
        api = cast(_Server, self.server).api
        consumed = {"done": False}

        def read(n: int) -> bytes:
            consumed["done"] = True
            return self.rfile.read(n)

        response = api.handle(self.command, self.path, self.headers, read)
        has_body = self.headers.get("Content-Length") not in (None, "0")
        if has_body and not consumed["done"]:
            self.close_connection = True  # the body was never read: the connection cannot carry another request
        self.send_response(response.status, REASONS.get(response.status))
        self.send_header("Content-Type", response.content_type)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Requests are logged by the Api (chimera_status.log), not printed."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: Api


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(api: Api, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer for `api`, bound (not yet serving) at host:port; port 0 picks a free one."""
    server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
    server.api = api
    return server


# -------------------------------------------------------------------------------------------------
# OpenAPI document and docs page
# -------------------------------------------------------------------------------------------------
_ERROR = {"type": "object", "required": ["detail"],
          "properties": {"detail": {"type": "string", "description": "what is wrong and how to fix it"}}}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "the body is not JSON (or not UTF-8)", 409: "no model yet (predict before fit), a fit is already "
           "running, or the worker files do not fit this master", 411: "no Content-Length",
           413: "the body is too large", 415: "the body is not application/json",
           422: "valid JSON of the wrong shape: fields, columns, row lengths, non-numeric values",
           500: "an unexpected error (its message; the traceback is in chimera_status.log)",
           502: "every worker failed (each worker's error is named)"}
    return {str(c): {"description": why[c], "content": {"application/json": {"schema": {"$ref":
                                                                                          "#/components/schemas/Error"}}}}
            for c in codes}


def openapi(master: Any) -> dict[str, Any]:
    """The OpenAPI 3 document of the routes `master` serves."""
    name, route = type(master).__name__, master.route
    columns = getattr(master, "columns", None) or ["feature_1", "feature_2"]
    example = {"X_pred_columns": columns, "X_pred_rows": [[0.0] * len(columns)]}
    what = {"AggregationMaster": "Bagging across workers: each worker fits its own model on its own data (a "
            "bootstrap sample, a seed per worker); predictions are a soft vote (every classifier has "
            "predict_proba), a majority vote, or the mean for regressors. Workers that fail are left out.",
            "ParameterServerMaster": "One model trained by distributed SGD on every worker's data; predictions "
            "come from that model, here."}.get(name, "")
    y_item: dict[str, Any] = {"oneOf": [{"type": "number"}, {"type": "string"}],
                              "description": "a label (classifier) or a value (regressor)"}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"chimera {name}", "version": "1", "description": what},
        "paths": {
            f"/v1/chimera/{route}/fit": {"post": {
                "summary": f"Fit the {name} on the workers' chimera_train_data/<name>/ CSV files",
                "description": "The body is empty or {}. The answer names the workers that contributed and those "
                               "that failed (with why).",
                "operationId": "fit",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "maxProperties": 0}, "example": {}}}},
                "responses": {"200": {"description": "fitted", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/FitResult"}}}}, **_errors(409, 415, 422, 500, 502)}}},
            f"/v1/chimera/{route}/predict": {"post": {
                "summary": "Predict rows (columns by name, in any order)",
                "description": "X_pred_columns must be the training columns (the header of X_train.csv), in any "
                               "order; each row of X_pred_rows gives one number per column.",
                "operationId": "predict",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}, "example": example}}},
                "responses": {"200": {"description": "one prediction per row", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictResult"}}}},
                    **_errors(400, 409, 411, 413, 415, 422, 500, 502)}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3 document"}}}},
            "/docs": {"get": {"summary": "This document as a web page", "operationId": "docs",
                              "responses": {"200": {"description": "HTML"}}}},
        },
        "components": {"schemas": {
            "Error": _ERROR,
            "FitResult": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "string", "enum": ["ok"]},
                "master": {"type": "string"},
                "contributors": {"type": "array", "items": {"type": "string"},
                                 "description": "the workers whose models (or gradients) are in the result"},
                "failed": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "worker name → why it was left out"},
                "columns": {"type": "array", "items": {"type": "string"}, "description": "the training columns"}},
                "additionalProperties": True},
            "PredictRequest": {"type": "object", "required": list(PREDICT_FIELDS), "additionalProperties": False,
                               "properties": {
                                   "X_pred_columns": {"type": "array", "items": {"type": "string"},
                                                      "uniqueItems": True},
                                   "X_pred_rows": {"type": "array", "items": {"type": "array",
                                                                               "items": {"type": "number"}}}}},
            "PredictResult": {"type": "object", "required": ["y_pred_rows"], "properties": {
                "y_pred_rows": {"type": "array", "items": y_item}}},
        }},
    }


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }}
h2 {{ border-top: 1px solid #ddd; padding-top: 1em; }}
code, pre, textarea {{ font: 13px/1.4 ui-monospace, monospace; }}
pre {{ background: #f6f6f6; padding: .6em; overflow-x: auto; }}
.method {{ display: inline-block; padding: 0 .5em; border-radius: 3px; color: #fff; background: #2a7; }}
.get {{ background: #27a; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: .2em .6em; text-align: left; }}
textarea {{ width: 100%; height: 6em; }}
</style></head><body>
<h1>{title}</h1>
<p>{description}</p>
<p>The OpenAPI 3 document: <a href="/openapi.json">/openapi.json</a>.
Errors are <code>{{"detail": "..."}}</code> with the status codes listed under each route.</p>
{sections}
<script>
for (const form of document.querySelectorAll("form[data-path]")) {{
  form.addEventListener("submit", async (event) => {{
    event.preventDefault();
    const out = form.querySelector("pre.out");
    out.textContent = "...";
    try {{
      const r = await fetch(form.dataset.path, {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                                body: form.querySelector("textarea").value}});
      out.textContent = r.status + " " + r.statusText + "\\n" + JSON.stringify(await r.json(), null, 2);
    }} catch (err) {{ out.textContent = String(err); }}
  }});
}}
</script>
</body></html>
"""


def docs_html(spec: dict[str, Any]) -> str:
    """A self-contained page (no CDN) describing the routes of an OpenAPI document, with a form to try each POST."""
    e = html.escape
    sections = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            parts = [f'<h2><span class="method {e(method)}">{e(method.upper())}</span> <code>{e(path)}</code></h2>',
                     f"<p><b>{e(op.get('summary', ''))}</b></p>"]
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                example = json.dumps(body.get("example", {}), indent=1)
                parts.append(f"<p>Request body (JSON{'' if op['requestBody'].get('required') else ', optional'}):"
                             f"</p><pre>{e(json.dumps(_resolve(spec, body['schema']), indent=1))}</pre>")
                parts.append(f"<p>Example:</p><pre>curl -X {method.upper()} -H 'Content-Type: application/json' "
                             f"-d '{e(json.dumps(body.get('example', {})))}' http://HOST:PORT{e(path)}</pre>")
                parts.append(f'<form data-path="{e(path)}"><textarea>{e(example)}</textarea>'
                             f'<button type="submit">Send</button><pre class="out"></pre></form>')
            rows = "".join(f"<tr><td>{e(code)}</td><td>{e(r.get('description', ''))}</td></tr>"
                           for code, r in op.get("responses", {}).items())
            parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{rows}</table>")
            sections.append("\n".join(parts))
    return _PAGE.format(title=e(spec["info"]["title"]), description=e(spec["info"].get("description", "")),
                        sections="\n".join(sections))


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return cast(dict[str, Any], spec["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    return schema
