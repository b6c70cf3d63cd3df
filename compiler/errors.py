"""Exceptions that mean "the user's input is wrong" (exit code 2), as opposed to bugs.

Every message is one line that names the file, node, flag or rule at fault; the CLI
prints it as is.  Imports nothing of ptqc.
"""
from __future__ import annotations


class PtqcError(Exception):
    """Bad input or bad configuration: the CLI prints the message and exits 2."""


class ModelError(PtqcError):
    """The model file is missing, unreadable, malformed or fails the ONNX checker."""


class GraphError(PtqcError):
    """The graph is structurally wrong (cycle, dangling value, duplicate name...)."""


class ConfigError(PtqcError):
    """A flag or configuration value is invalid or names a feature not built yet."""


class PassOrderError(PtqcError):
    """A pass ran before an analysis it requires was established."""
