"""Node: the unit of user logic (prep / step / teardown), run in a process of its own on a worker."""

from __future__ import annotations

import inspect
import logging
import math
import re
from typing import TYPE_CHECKING, Any

from .datachunk import DataChunk

if TYPE_CHECKING:  # pragma: no cover
    from .runner import NodeRunner

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
ON_ERROR = ("continue", "stop")


class Node:
    """Subclass and override `prep` (or `setup`), `step` and `teardown`; optionally `main`.

    - a source's ``step(self)`` takes no data; steps and sinks get ``step(self, data)`` where ``data``
      maps each upstream node's name to its latest `DataChunk`;
    - whatever ``step`` returns is sent downstream (a non-DataChunk becomes record ``"default"``;
      ``None`` sends nothing);
    - ``rate_hz`` paces a source (instead of sleeping in ``step``);
    - ``on_error``: ``"continue"`` (report the exception and go on) or ``"stop"``;
    - ``async def step`` works too; a node that owns its loop overrides ``main`` and uses
      ``self.running``, ``self.send(value)`` and ``self.receive(timeout)``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Node:
        # Record the constructor call (see `init_args`), so subclasses need do nothing to be saved and
        # printed. Stored in the instance dict: it pickles with the node and costs nothing per step.
        base_new = super().__new__
        self = base_new(cls) if base_new is object.__new__ else base_new(cls, *args, **kwargs)
        self.__dict__[_INIT_CALL] = (args, kwargs)
        return self

    def __init__(self, name: str, rate_hz: float | None = None, on_error: str = "continue") -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"Node name must be a non-empty string of letters, digits, '_', '-' or '.', got {name!r}"
            )
        if rate_hz is not None and (isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float))
                                    or not math.isfinite(rate_hz) or rate_hz <= 0):
            raise ValueError(f"Node {name!r}: rate_hz must be a positive number of steps per second, got {rate_hz!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"Node {name!r}: on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.name = name
        self.rate_hz = float(rate_hz) if rate_hz is not None else None
        self.on_error = on_error
        self._runner: NodeRunner | None = None

    @property
    def init_args(self) -> dict[str, Any]:
        """The arguments this node's constructor was called with, by parameter name of ``type(self).__init__``.

        Only arguments given explicitly, plus ``name`` with its default if ``__init__`` has a ``name``
        parameter that was not given. Extra keywords caught by ``**kwargs`` appear under their own names;
        extra positional arguments caught by ``*args`` appear as a tuple under ``"*args"`` (the star and the
        parameter's name). The values are the very objects passed (not copies). A fresh dict on each call.
        """
        args, kwargs = self.__dict__.get(_INIT_CALL, ((), {}))
        return bind_init_args(type(self), args, kwargs)

    # -- the user's hooks -------------------------------------------------------------------------
    def prep(self) -> None:
        """Prepare resources before the first step (alias: `setup`)."""
        setup = getattr(self, "setup", None)
        if setup is not None:
            setup()

    def step(self, data: dict[str, DataChunk] | None = None) -> Any:
        """Produce (source) or transform/consume (step, sink) one item; the return value is sent on."""
        return None

    def teardown(self) -> None:
        """Release resources after the last step."""

    # -- what a running node can use ---------------------------------------------------------------
    @property
    def logger(self) -> logging.Logger:
        """The logger of this node (``chimera_lab.node.<name>``)."""
        return logging.getLogger(f"chimera_lab.node.{self.name}")

    @property
    def running(self) -> bool:
        """True while the Manager wants this node to run (for nodes that own their loop in `main`)."""
        return self._runner is not None and self._runner.still_running()

    def send(self, value: Any) -> None:
        """Send `value` downstream now (for nodes that own their loop in `main`)."""
        if self._runner is None:
            raise RuntimeError(f"Node {self.name!r}: send() only works while the node runs on a worker")
        self._runner.emit(value)

    def receive(self, timeout: float | None = None) -> dict[str, DataChunk] | None:
        """Wait for the next inputs (a dict like `step` gets), or None on timeout or stop."""
        if self._runner is None:
            raise RuntimeError(f"Node {self.name!r}: receive() only works while the node runs on a worker")
        return self._runner.receive(timeout)

    # -- recording (written on a background thread of the node process while the Manager records) ---
    def save_video(self, name: str, frame: Any, fps: float | None = None, quality: int = 90,
                   timestamp: float | None = None) -> None:
        """Append a frame (uint8 HxW or HxWx3) to video stream `name` (MJPG AVI; fps None: measured)."""
        self._save("video", name, frame, timestamp, fps=fps, quality=quality)

    def save_image(self, name: str, img: Any, timestamp: float | None = None) -> None:
        """Save an image (uint8 HxW or HxWx3) as the next lossless PNG of stream `name`."""
        self._save("image", name, img, timestamp)

    def save_audio(self, name: str, samples: Any, rate: int, channels: int, timestamp: float | None = None) -> None:
        """Append samples ((n,) or (n, channels); int16, int32 or float32) to WAV stream `name`."""
        self._save("audio", name, samples, timestamp, rate=rate, channels=channels)

    def save_tabular(self, name: str, data: Any, timestamp: float | None = None) -> None:
        """Append a row (a dict) or rows (a pandas DataFrame) to CSV stream `name`."""
        self._save("tabular", name, data, timestamp)

    def save_json(self, name: str, obj: Any, timestamp: float | None = None) -> None:
        """Append a JSON-serializable object to JSON-lines stream `name`."""
        self._save("json", name, obj, timestamp)

    def save_text(self, name: str, text: str, timestamp: float | None = None) -> None:
        """Append text to text stream `name`."""
        self._save("text", name, text, timestamp)

    def _save(self, kind: str, name: str, value: Any, timestamp: float | None, **opts: Any) -> None:
        if self._runner is None:
            raise RuntimeError(f"Node {self.name!r}: save_{kind}() only works while the node runs on a worker")
        self._runner.save(kind, name, value, timestamp, opts)

    # -- plumbing ----------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runner"] = None
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


_INIT_CALL = "_init_call"


def init_signature(cls: type) -> inspect.Signature | None:
    """The signature of ``cls.__init__`` without ``self``, or None if it cannot be inspected."""
    try:
        sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # self
    return sig.replace(parameters=params)


def bind_init_args(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``cls(*args, **kwargs)``'s arguments by parameter name (the format of `Node.init_args`)."""
    sig = init_signature(cls)
    try:
        bound = sig.bind(*args, **kwargs) if sig is not None else None
    except TypeError:  # __init__ was replaced after the call, or its signature lies
        bound = None
    if bound is None:
        return {**({"*args": tuple(args)} if args else {}), **kwargs}
    out: dict[str, Any] = {}
    for pname, param in bound.signature.parameters.items():
        if pname in bound.arguments:
            value = bound.arguments[pname]
        elif pname == "name" and param.default is not param.empty:
            value = param.default  # the name is always recorded, so a saved node shows it
        else:
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                out[f"*{pname}"] = value
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[pname] = value
    return out


def has_custom_main(node: Node) -> bool:
    """Whether the node's class overrides `main` (it owns its loop)."""
    return callable(getattr(type(node), "main", None))
