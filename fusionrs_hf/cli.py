"""The ``fusionrs`` command: one entry point, one sub-command per module.

Each sub-command module defines ``configure_parser(parser)`` and ``run(args) -> int``. Exit
codes are shared: 0 success (or a clean check), 1 findings or a failed operation, 2 usage
error or unreadable input; scripts can rely on them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CliError

__all__ = ["CliError", "main", "build_parser", "COMMANDS"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fusionrs_hf.demo_cli", "write the embedded synthetic sample repo and stream it back"),
    "build": ("fusionrs_hf.build", "rebuild FusionRS shards from the official index and your source copies"),
    "check": ("fusionrs_hf.check", "verify pairing integrity, counts and split leakage of a repo"),
    "push": ("fusionrs_hf.push", "upload new or changed shards and the card to the Hub or an fsspec URL"),
    "card": ("fusionrs_hf.card_cli", "re-render a repo's README.md (configs, dataset_info, counts)"),
    "bench": ("fusionrs_hf.bench", "measure streaming throughput against stock datasets and webdataset"),
}


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except CliError as e:
        print(f"fusionrs {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `fusionrs ... --json | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
