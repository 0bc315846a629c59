"""Exceptions shared by the sub-commands (kept apart from cli.py so `python -m fusionrs_hf.cli` sees one class)."""


class CliError(Exception):
    """A usage or input problem reported as one line on stderr with exit code 2."""


class UnusableInputError(Exception):
    """Something the user named does not exist (a config, a split): a library error that every command reports
    as one line with exit code 2, like :class:`CliError`. Subclasses also derive from the builtin a caller would
    catch (``ValueError``, ``FileNotFoundError``)."""


class UnknownConfigError(UnusableInputError, ValueError):
    """A config name the repo does not have; the message lists those it has."""
