"""Exceptions that mean "the user's input is wrong" (exit code 2), as opposed to bugs.

Every message is one line that names the file, node, flag or rule at fault; the CLI
prints it as is.  Imports nothing of ptqc.
"""
from __future__ import annotations

import re


class PtqcError(Exception):
    """Bad input or bad configuration: the CLI prints the message and exits 2."""


class ModelError(PtqcError):
    """The model file is missing, unreadable, malformed or fails the ONNX checker."""


class GraphError(PtqcError):
    """The graph is structurally wrong (cycle, dangling value, duplicate name...)."""


class ConfigError(PtqcError, ValueError):
    """A flag or configuration value is invalid or names a feature not built yet."""


class PassOrderError(PtqcError):
    """A pass ran before an analysis it requires was established."""


def cannot_reread(flag: str) -> ConfigError:
    """What a search or correction that reads the calibration data again says when the second
    pass saw nothing."""
    return ConfigError(f"{flag}: the calibration data cannot be read again (a CalibrationDataReader without "
                       "rewind() is used up by calibration); give it rewind(), or a folder or infer function")


_ORT_RUN = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)")
_ORT_NODE = re.compile(r"in node \(([^)]*)\)")
_ORT_SIGNATURE = re.compile(r"^(?:\w+ )?[\w:~<>]+\([^()]*\)\s*")


def onnxruntime_error(exc: BaseException, label: str, nodes: dict[str, str] | None = None) -> ModelError | None:
    """An exception onnxruntime raised on the user's model as a one-line ModelError naming the
    node (``nodes``: node name -> op type, to find the ONNX node behind a name onnxruntime's
    optimizer made up), or None when ``exc`` is not onnxruntime's."""
    if type(exc).__module__ != "onnxruntime.capi.onnxruntime_pybind11_state":
        return None
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(exc).split()))
    where = ""
    run = _ORT_RUN.search(text)
    if run:
        op, name, text = run.groups()
        if nodes is not None and name not in nodes:  # a fused or renamed node: name the model's
            same = sorted(n for n, t in nodes.items() if t == op)
            name = same[0] if len(same) == 1 else name
        where = f"{op} node {name!r}: "
    elif _ORT_NODE.search(text):
        name = _ORT_NODE.search(text).group(1)
        where = f"node {name!r}{f' ({nodes[name]})' if nodes and name in nodes else ''}: "
    text = re.sub(r"/onnxruntime_src/\S+:\d+ ", "", text)
    text = _ORT_SIGNATURE.sub("", text)
    text = text.split(" was false. ", 1)[-1]
    opset = re.search(r"Opset \d+ is [^.]*\.", text)
    if "ONNX Runtime only" in text and opset:
        text = opset.group(0)
    return ModelError(f"{label}: {where}onnxruntime cannot run the model: {text}")
