"""How the example trainers end on an error: one scrubbed line on stderr and an exit code, never a traceback.

``fusionrs``'s own commands do this in :func:`fusionrs_hf.cli.main`; ``examples/train_clip.py`` and
``examples/train_vlm.py`` run through :func:`run_main`, which follows the same rules:

- exit 2, unusable input: a config, split, preset or option that does not fit (:class:`UnusableInputError`,
  the trainers' ``PresetError``, :class:`~fusionrs_hf.eval.ProtocolError`), an image that does not decode
  (:class:`~fusionrs_hf.decode.DecodeError`, a refused one), a shard that is gone or unreadable, a store that
  does not answer (any ``OSError``: ``FileNotFoundError``, ``ConnectionError``, aiohttp's and requests'
  connection errors are ones), a checkpoint that is not plain weights, a missing extra;
- exit 1, anything else: a bug of ours or of a library, said as ``PROG: unexpected TYPE: message``;
  ``FUSIONRS_TRACEBACK=1`` adds its (scrubbed) traceback, as for ``fusionrs``;
- 130 on Ctrl-C.

Why not a traceback: it is many lines about our code when the problem is the user's input, and its text
(a URL with a token, a header echoed by a server) never passed the secret filter. Every line printed here
goes through :func:`fusionrs_hf.secrets.scrub`.

An error raised in a ``DataLoader`` worker reaches the training process as "Caught X in DataLoader worker
process N" followed by the worker's traceback: the line keeps only the worker's last line (the error itself).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from ..errors import CliError, UnusableInputError

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_WORKER_RE = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.")


class DistributedRunError(UnusableInputError, ValueError):
    """A run of several processes that cannot go on: ``train_vlm`` under torchrun (or inside an initialised
    process group of several processes), which it does not support (each process would train its own model on
    its share of the rows); ``train_clip``'s process group that did not start, or ranks that disagree on the data."""


class PeerFailedError(RuntimeError):
    """Another process of a multi-process ``train_clip`` run failed, so this one stops too (rather than wait for
    it in a collective). The message names that process and carries its error line; :attr:`code` is its exit
    code (2 for unusable input, 1 for a bug), which :func:`exit_code` gives for this error too."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = int(code)


class NoTrainingDataError(UnusableInputError, ValueError):
    """The data the user named has nothing to train on (no caption, no full batch, no sample of the setting)."""


def usage_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "this input cannot be used" (exit 2), imported where they live."""
    from ..decode import DecodeError
    from ..eval.protocol import ProtocolError
    from ..limits import ImageRefused
    from ..schema import SchemaError
    from ..storage import MissingExtraError
    from . import clip, vlm

    kinds: list[type[BaseException]] = [UnusableInputError, CliError, clip.PresetError, vlm.PresetError,
                                        ProtocolError, DecodeError, ImageRefused, SchemaError, MissingExtraError,
                                        OSError]
    try:
        import pyarrow as pa

        kinds.append(pa.ArrowInvalid)  # a shard that is not a readable Parquet file (truncated, not Parquet)
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    # connection errors that are not OSErrors: httpx's (huggingface_hub >= 1), aiohttp's (fsspec's HTTP store:
    # a server that hangs up); looked up only where the library is loaded already
    for module, name in (("httpx", "TransportError"), ("aiohttp", "ClientConnectionError")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            kinds.append(cls)
    return tuple(kinds)


_CONNECTION_NAMES = frozenset({
    "ClientConnectionError", "ClientConnectorError", "ClientOSError", "ServerDisconnectedError",
    "ServerTimeoutError", "ClientPayloadError", "TransportError", "ConnectError", "ConnectTimeout", "ReadError",
    "ReadTimeout", "RemoteProtocolError", "NetworkError",
})
"""Connection errors of aiohttp and httpx by name: a worker's error that torch re-raises as a RuntimeError
("Caught NAME in DataLoader worker") is judged by its name, and those libraries may not be loaded here."""


def _names(kinds: tuple[type[BaseException], ...]) -> set[str]:
    """The class names of ``kinds`` and every subclass loaded now (to judge a worker's error by its name)."""
    seen: set[str] = set()
    todo = list(kinds)
    while todo:
        cls = todo.pop()
        if cls.__name__ not in seen:
            seen.add(cls.__name__)
            try:
                todo.extend(cls.__subclasses__())
            except TypeError:  # pragma: no cover - type.__subclasses__ needs an argument
                pass
    return seen


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one scrubbed line: a DataLoader worker's error without the worker's traceback
    (its last line, which is the error, with "in DataLoader worker N"), a multi-line message joined by '; '."""
    from ..secrets import scrub

    text = scrub(str(exc))
    m = _WORKER_RE.match(text)
    if m and "Original Traceback" in text:
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
        last = re.sub(r"^[\w.]*\b" + re.escape(m.group(1)) + r": ?", "", last)
        return f"{last or m.group(1)} (in DataLoader worker {m.group(2)})"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def exit_code(exc: BaseException) -> int:
    """2 when ``exc`` (or an error it was raised from) says the input is unusable, else 1 (a bug)."""
    kinds = usage_errors()
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, PeerFailedError):  # another process's error: its exit code
            return e.code
        if isinstance(e, kinds):
            return EXIT_USAGE
        m = _WORKER_RE.match(str(e))  # torch re-raises a worker's error as RuntimeError when it cannot rebuild it
        if m and (m.group(1) in _CONNECTION_NAMES or m.group(1) in _names(kinds)):
            return EXIT_USAGE
        e = e.__cause__
    return EXIT_BUG


def error_line(prog: str, exc: BaseException) -> str:
    """``PROG: message`` for unusable input (the prefix once, also when the message already has it) and
    ``PROG: unexpected TYPE: message`` for anything else; always scrubbed."""
    msg = one_line(exc)
    if isinstance(exc, PeerFailedError):  # says what the other process said, with the prefix already
        return msg if msg.startswith(f"{prog}:") else f"{prog}: {msg}"
    worker = _WORKER_RE.match(str(exc))
    name = worker.group(1) if worker else type(exc).__name__  # a worker's error that torch could not rebuild
    if exit_code(exc) == EXIT_USAGE:
        # our own errors say what they are; a library's (FileNotFoundError, ClientConnectorError) is named
        ours = type(exc).__module__.startswith("fusionrs_hf")
        body = msg if ours or msg.startswith(name) else f"{name}: {msg}"
        return body if body.startswith(f"{prog}:") else f"{prog}: {body}"
    return f"{prog}: unexpected {name}: {msg} (FUSIONRS_TRACEBACK=1 shows where)"


def run_main(prog: str, body: Callable[[], int]) -> int:
    """Run ``body`` (a trainer's work after argument parsing) and turn what it raises into one line and an exit
    code (see the module docstring). Log records are scrubbed too, as under ``fusionrs``."""
    from ..secrets import install_log_filter, scrub

    install_log_filter()
    try:
        return int(body() or 0)
    except BrokenPipeError:  # `train_clip ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback that may carry a token
        print(error_line(prog, exc), file=sys.stderr, flush=True)
        if os.environ.get("FUSIONRS_TRACEBACK"):
            import traceback

            print(scrub(traceback.format_exc()), file=sys.stderr)
        return exit_code(exc)


def refuse_distributed(prog: str) -> None:
    """Raise :class:`DistributedRunError` when this process is one of several (torchrun's ``WORLD_SIZE``, or an
    initialised process group): ``train_vlm`` runs in one process (``train_clip`` runs under torchrun, see
    :mod:`fusionrs_hf.train.clip.ddp`, and does not call this).

    Why refuse: :func:`fusionrs_hf.torch.make_dataloader` reads torchrun's rank and splits the rows, but the VLM
    trainer (the Hugging Face ``Trainer`` on our data) is neither set up nor tested for several processes (under
    torchrun on the CPU each process trained the whole split on its own and all wrote the same adapter). The
    message says how to train under DDP with the loader in one's own loop.
    """
    import torch

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        world, where = dist.get_world_size(), "the initialised process group"
    else:
        from ..torch.plan import _env_int

        world, where = _env_int("WORLD_SIZE", 1), "WORLD_SIZE (torchrun)"
    if world <= 1:
        return
    raise DistributedRunError(
        f"{prog}: {where} says {world} processes, but {prog} trains in one process (no DistributedDataParallel: "
        f"each process would train its own model on 1/{world} of the rows and score part of the split); run it "
        "without torchrun (examples/train_clip.py is the trainer that runs under torchrun), or write your own DDP "
        "loop: make_dataloader(repo, config, 'train', drop_last=True) gives each rank its share by itself (rank and "
        "world size from the process group or RANK/WORLD_SIZE), wrap the model in DistributedDataParallel, save on "
        "rank 0, and score the checkpoint with `fusionrs eval` in one process")
