"""Exceptions shared by the sub-commands (kept apart from cli.py so `python -m fusionrs_hf.cli` sees one class)."""


class CliError(Exception):
    """A usage or input problem reported as one line on stderr with exit code 2."""
