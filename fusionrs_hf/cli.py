"""The ``fusionrs`` command: one entry point, one sub-command per module.

Each sub-command module defines ``configure_parser(parser)`` and ``run(args) -> int``. Exit
codes are shared: 0 success (or a clean check), 1 findings or a failed operation, 2 usage
error or unreadable input; scripts can rely on them.

Every error is one line on stderr, ``fusionrs COMMAND: error: ...``, passed through the one secret
filter (:func:`fusionrs_hf.secrets.scrub`: tokens, their URL-encoded forms, credentials in URLs), and
so is everything logged through the root handlers. An unexpected exception is such a line too (exit
1); ``FUSIONRS_TRACEBACK=1`` adds its (scrubbed) traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import CliError, UnusableInputError
from .secrets import install_log_filter, scrub
from .storage import HubUnreachableError, MissingExtraError
from .terminal import printable

__all__ = ["CliError", "main", "build_parser", "COMMANDS"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fusionrs_hf.demo_cli", "write the embedded synthetic sample repo and stream it back"),
    "build": ("fusionrs_hf.build", "rebuild FusionRS shards from the official index and your source copies"),
    "check": ("fusionrs_hf.check", "verify pairing integrity, counts and split leakage of a repo"),
    "push": ("fusionrs_hf.push", "upload new or changed shards and the card to the Hub or an fsspec URL"),
    "card": ("fusionrs_hf.card_cli", "re-render a repo's README.md (configs, dataset_info, counts)"),
    "bench": ("fusionrs_hf.bench", "measure streaming throughput against stock datasets and webdataset"),
    "eval": ("fusionrs_hf.eval.cli", "score a model or embeddings on a split: Table 4 retrieval (rc4 protocol), zero-shot"),
}


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named on the command line (its first non-option word), if it is one of ours."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, only that sub-command's module is imported.

    ``fusionrs check ...`` thus never imports the build machinery (faster start, and a problem in one
    sub-command's module cannot break the others); the other sub-commands are still listed.
    """
    parser = argparse.ArgumentParser(
        prog="fusionrs",
        description=(
            "FusionRS on Hugging Face datasets. Typical flow: `fusionrs build` (or `fusionrs demo`) writes a "
            "repo folder, `fusionrs check` verifies it, `fusionrs push` uploads it, and training code reads "
            "it with datasets.load_dataset or fusionrs_hf.torch.make_dataloader. "
            "Exit codes: 0 ok, 1 findings/failure, 2 usage or unreadable input."
        ),
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fusionrs-hf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)  # listed, not loaded
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def _one_line(e: BaseException) -> str:
    """An error message as one scrubbed line (a server's multi-line error body joined with '; ')."""
    text = scrub(str(e))
    return printable("; ".join(line.strip() for line in text.splitlines() if line.strip())) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    install_log_filter()  # whatever a library logs through the root handlers or lastResort is scrubbed too
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except (CliError, UnusableInputError) as e:  # a usage problem, or a config/split the user named that is not there
        print(f"fusionrs {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (HubUnreachableError, MissingExtraError) as e:  # no Hub / a missing extra: unusable input, one line
        print(f"fusionrs {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `fusionrs ... --json | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback that may carry a token
        print(f"fusionrs {args.command}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        if os.environ.get("FUSIONRS_TRACEBACK"):
            import traceback

            print(scrub(traceback.format_exc()), file=sys.stderr)
        return EXIT_FINDINGS


if __name__ == "__main__":
    sys.exit(main())
