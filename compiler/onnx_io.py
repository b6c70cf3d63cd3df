"""Import ONNX models into the ptqc IR and export them back, losslessly.

Imports nothing of ptqc but the core (``ptqc.ir``, ``ptqc.errors``); uses onnx's own
helpers (numpy_helper, external_data_helper, shape_inference) wherever they do the job.
"""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

_A = AttributeProto


def attribute_value(attr: AttributeProto) -> Any:
    """An ONNX attribute as a plain Python value.

    FLOAT -> float, INT -> int, STRING -> str (bytes if not UTF-8), TENSOR -> np.ndarray,
    FLOATS/INTS/STRINGS/TENSORS -> lists of those; GRAPH(S), SPARSE_TENSOR(S) and
    TYPE_PROTO(S) stay protobuf objects (opaque: ptqc never edits subgraphs).
    """
    t = attr.type
    if t == _A.FLOAT:
        return float(attr.f)
    if t == _A.INT:
        return int(attr.i)
    if t == _A.STRING:
        return _decode(attr.s)
    if t == _A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == _A.FLOATS:
        return [float(v) for v in attr.floats]
    if t == _A.INTS:
        return [int(v) for v in attr.ints]
    if t == _A.STRINGS:
        return [_decode(s) for s in attr.strings]
    if t == _A.TENSORS:
        return [numpy_helper.to_array(v) for v in attr.tensors]
    if t == _A.GRAPH:
        return attr.g
    if t == _A.GRAPHS:
        return list(attr.graphs)
    if t == _A.SPARSE_TENSOR:
        return attr.sparse_tensor
    if t == _A.SPARSE_TENSORS:
        return list(attr.sparse_tensors)
    if t == _A.TYPE_PROTO:
        return attr.tp
    if t == _A.TYPE_PROTOS:
        return list(attr.type_protos)
    return onnx.helper.get_attribute_value(attr)


def _decode(s: bytes) -> str | bytes:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def make_attribute(name: str, value: Any, attr_type: int | None = None) -> AttributeProto:
    """The inverse of :func:`attribute_value`; ``attr_type`` disambiguates empty lists."""
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        value = [numpy_helper.from_array(v) for v in value]
    elif isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if attr_type is None or attr_type == _A.UNDEFINED:
        return onnx.helper.make_attribute(name, value)
    return onnx.helper.make_attribute(name, value, attr_type=attr_type)


# --------------------------------------------------------------------------- loading
import os
import tempfile
from pathlib import Path

from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper

from ptqc.errors import GraphError, ModelError
from ptqc.ir import ConstantOrigin, Graph, ModelInfo, Value
from ptqc.vocab import Meta

_TWO_GB = 2**31
_DEFAULT_DOMAINS = ("", "ai.onnx")


def read_model(source: str | os.PathLike | bytes | onnx.ModelProto, *,
               check: bool = True) -> tuple[onnx.ModelProto, Path | None]:
    """Parse an ONNX model (path, bytes or proto) and run the checker, leaving external data
    on disk; returns the proto and the folder its external data is relative to.

    Every failure is a :class:`ModelError` with one line naming the file: missing file,
    bytes that are not an ONNX protobuf, a truncated file, or a checker failure.
    """
    base: Path | None = None
    if isinstance(source, onnx.ModelProto):
        label, model = "<model>", source
    elif isinstance(source, (bytes, bytearray)):
        label, model = "<bytes>", _parse(bytes(source), "<bytes>")
    else:
        path = Path(source)
        label, base = str(path), path.parent
        if not path.exists():
            raise ModelError(f"{label}: no such file")
        if path.is_dir():
            raise ModelError(f"{label}: is a directory, not an ONNX model file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"{label}: cannot read ({e.strerror})") from None
        model = _parse(data, label)
    if check:
        check_model(model, label, path=None if base is None else Path(source))
    return model, base


def load_model(source: str | os.PathLike | bytes | onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """Like :func:`read_model`, with external data loaded into the proto."""
    model, base = read_model(source, check=check)
    if base is not None and _uses_external_data(model):
        try:
            external_data_helper.load_external_data_for_model(model, str(base))
        except (OSError, ValueError) as e:
            raise ModelError(f"{source}: cannot load its external data ({e})") from None
    return model


def _external_array(t: TensorProto, base: Path | None, label: str) -> np.ndarray:
    """An external tensor memory-mapped from its file: weights never pass through protobuf."""
    info = {e.key: e.value for e in t.external_data}
    if base is None:
        raise ModelError(f"{label}: tensor {t.name!r} has external data; load the model from its path")
    file = base / info.get("location", "")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    offset, count = int(info.get("offset", 0)), int(np.prod(shape, dtype=np.int64))
    if not file.is_file():
        raise ModelError(f"{label}: external data file {file} of tensor {t.name!r} is missing")
    if file.stat().st_size < offset + count * dtype.itemsize:
        raise ModelError(f"{label}: external data file {file} is too short for tensor {t.name!r}")
    if count == 0:
        return np.zeros(shape, dtype)
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{label}: file is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError:
        raise ModelError(f"{label}: not an ONNX model, or truncated (protobuf parse failed)") from None
    # protobuf accepts many byte strings; an ONNX model has a version and a graph.
    if not model.ir_version or not model.HasField("graph"):
        raise ModelError(f"{label}: not an ONNX model (no ir_version or graph in the protobuf)")
    return model


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(external_data_helper.uses_external_data(t)
               for t in external_data_helper._get_all_tensors(model))


def with_outputs(model: onnx.ModelProto | Graph, names: list[str]) -> bytes:
    """``model`` serialized with ``names`` (intermediate tensors) added to its outputs, so one
    onnxruntime run returns them too; typed from the graph when given one (a Graph is
    exported with constants as initializers), else float."""
    types: dict[str, int] = {}
    if isinstance(model, Graph):
        types = {n: model.value(n).elem_type for n in names if model.has_value(n)}
        model = export_model(model, constants_as_initializers=True)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, types.get(n) or TensorProto.FLOAT, None)
                          for n in dict.fromkeys(names) if n not in have)
    return m.SerializeToString()


def check_model(model: onnx.ModelProto, label: str = "<model>", path: Path | None = None) -> None:
    """onnx.checker, with a one-line ModelError.  A graph whose only fault is node order is
    accepted (ptqc re-sorts it); a cyclic graph is reported as such.  A model with external
    data is checked from its ``path`` so the data files are found beside it."""
    try:
        if path is not None and _uses_external_data(model):
            onnx.checker.check_model(str(path))
        elif model.ByteSize() < _TWO_GB:
            onnx.checker.check_model(model)
        else:  # the checker cannot take >2 GB in memory: check the structure without weights
            onnx.checker.check_model(_strip_tensors(model, 0))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        if "'shape' of 'type' is required" in first and _shapeless_io(model):
            # The checker wants a shape field on graph inputs/outputs; onnxruntime and shape
            # inference accept unknown rank.  Check a copy with the field present.
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            for vi in _shapeless_io(copy):
                vi.type.tensor_type.shape.SetInParent()
            return check_model(copy, label)
        if "topologically sorted" in first:
            try:
                import_model(model, check=False).topological_order()
                return
            except GraphError as ge:
                raise ModelError(f"{label}: {ge}") from None
        raise ModelError(f"{label}: fails the ONNX checker: {first}") from None


def _shapeless_io(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [vi for vi in (*model.graph.input, *model.graph.output)
            if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]


def _strip_tensors(model: onnx.ModelProto, threshold: int) -> onnx.ModelProto:
    """A copy whose tensors over ``threshold`` bytes keep dtype and dims but no data."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for t in external_data_helper._get_all_tensors(stripped):
        if t.HasField("raw_data") and len(t.raw_data) > threshold:
            set_external_data_fields(t, "__ptqc_stripped__", 0, len(t.raw_data))
            t.ClearField("raw_data")
    return stripped


def set_external_data_fields(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    """Point ``tensor`` at external data (onnx's helper, which wants raw_data present)."""
    if not tensor.HasField("raw_data"):
        tensor.raw_data = b""
    external_data_helper.set_external_data(tensor, location, offset=offset, length=length)
    tensor.data_location = TensorProto.EXTERNAL


# --------------------------------------------------------------------------- import
def import_model(source: str | os.PathLike | bytes | onnx.ModelProto, *, check: bool = True) -> Graph:
    """Build a :class:`Graph` from an ONNX model.

    Initializers and Constant nodes become constant values (each remembers its origin so
    export writes it back the same way); subgraphs of If/Loop/Scan stay opaque attributes,
    and the outer values they read are recorded as the node's ``captures``.
    """
    model, base = read_model(source, check=check)
    label = str(source) if isinstance(source, (str, os.PathLike)) else "<model>"
    g = model.graph
    info = ModelInfo(
        ir_version=model.ir_version,
        opset_imports={o.domain: o.version for o in model.opset_import},
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        metadata_props=[(p.key, p.value) for p in model.metadata_props],
        functions=list(model.functions),
    )
    if len(model.training_info):
        info.extra["training_info"] = list(model.training_info)
    if len(g.quantization_annotation):
        info.extra["quantization_annotation"] = list(g.quantization_annotation)
    graph = Graph(g.name, info)
    graph.doc_string = g.doc_string
    if hasattr(g, "metadata_props") and len(g.metadata_props):
        info.extra["graph_metadata_props"] = [(p.key, p.value) for p in g.metadata_props]

    for vi in g.input:
        _apply_type(graph.add_input(vi.name), vi)
    for init in g.initializer:
        _add_tensor_constant(graph, init, ConstantOrigin("initializer", doc_string=init.doc_string),
                             base, label)
    for sp in g.sparse_initializer:
        dense = _sparse_to_dense(sp)
        _add_array_constant(graph, sp.values.name, dense, ConstantOrigin("sparse_initializer", proto=sp))

    for n in g.node:
        if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS and len(n.output) == 1 and len(n.attribute) == 1:
            array = _constant_node_array(n)
            if array is not None:
                origin = ConstantOrigin("constant_node", node_name=n.name, attr=n.attribute[0].name,
                                        doc_string=n.doc_string)
                _add_array_constant(graph, n.output[0], array, origin)
                continue
        attrs = {a.name: attribute_value(a) for a in n.attribute}
        extra: dict[str, Any] = {}
        if getattr(n, "overload", ""):
            extra["overload"] = n.overload
        if hasattr(n, "metadata_props") and len(n.metadata_props):
            extra["metadata_props"] = [(p.key, p.value) for p in n.metadata_props]
        graph.add_node(n.op_type, list(n.input), list(n.output), attrs, name=n.name, domain=n.domain,
                       doc_string=n.doc_string, attr_types={a.name: a.type for a in n.attribute},
                       extra=extra, captures=tuple(sorted(_captured_names(n))))

    for vi in g.value_info:
        if graph.has_value(vi.name):
            _apply_type(graph.value(vi.name), vi)
            graph.value(vi.name).meta.setdefault(Meta.VALUE_INFO, True)
    for vi in g.output:
        graph.outputs.append(vi.name)
        v = graph._ensure_value(vi.name)  # an output may be a graph input passed through
        _apply_type(v, vi)
    return graph


def _add_tensor_constant(graph: Graph, tensor: TensorProto, origin: ConstantOrigin,
                         base: Path | None, label: str) -> Value:
    if external_data_helper.uses_external_data(tensor):
        array = _external_array(tensor, base, label)
    else:
        array = numpy_helper.to_array(tensor)
    v = _add_array_constant(graph, tensor.name, array, origin)
    v.elem_type = tensor.data_type  # keeps bfloat16/float8 tags that numpy cannot name
    return v


def _add_array_constant(graph: Graph, name: str, array: np.ndarray, origin: ConstantOrigin) -> Value:
    if graph.has_value(name) and name in graph.inputs:
        # an initializer that is also a graph input: an overridable default (ir_version < 4)
        v = graph.value(name)
        v.const, v.origin = np.asarray(array), origin
        return v
    return graph.add_constant(name, array, origin)


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices)
    dense = np.zeros(int(np.prod(sp.dims)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), tuple(sp.dims))
    dense[indices] = values
    return dense.reshape(tuple(sp.dims))


def _constant_node_array(n: onnx.NodeProto) -> np.ndarray | None:
    a = n.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    if a.name == "sparse_value":
        return _sparse_to_dense(a.sparse_tensor)
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    return None  # value_string(s): kept as a node


def _apply_type(v: Value, vi: onnx.ValueInfoProto) -> None:
    if vi.doc_string:
        v.doc_string = vi.doc_string
    if not vi.HasField("type"):
        return
    t = vi.type
    if t.HasField("tensor_type"):
        if t.tensor_type.elem_type:
            v.elem_type = t.tensor_type.elem_type
        if t.tensor_type.HasField("shape"):
            v.shape = tuple(_dim(d) for d in t.tensor_type.shape.dim)
        v.type_proto = None
    else:
        v.type_proto = onnx.TypeProto()
        v.type_proto.CopyFrom(t)


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    if d.HasField("dim_param"):
        return d.dim_param
    return None


def _captured_names(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names read by the subgraphs of ``node`` (recursively)."""
    found: set[str] = set()
    for a in node.attribute:
        subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
        for sg in subs:
            found |= _free_names(sg)
    return found


def _free_names(g: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | \
              {t.values.name for t in g.sparse_initializer}
    free: set[str] = set()
    for n in g.node:
        free |= {i for i in n.input if i and i not in defined}
        free |= _captured_names(n) - defined
        defined |= set(n.output)
    free |= {o.name for o in g.output if o.name not in defined}
    return free


# --------------------------------------------------------------------------- export
def export_model(graph: Graph, *, constants_as_initializers: bool = False,
                 strip_threshold: int | None = None) -> onnx.ModelProto:
    """Build an ONNX model from ``graph``.

    Constants that came from Constant nodes are written back as Constant nodes (placed just
    before their first consumer) unless ``constants_as_initializers``; the others become
    initializers in their original order.  ``strip_threshold`` (bytes) writes larger tensors
    as data-less external references: enough for shape inference and the checker, and never
    over protobuf's 2 GB limit.
    """
    info = graph.info
    nodes: list[onnx.NodeProto] = []
    initializers: list[TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    pending_constant_nodes: dict[str, Value] = {}
    typed = _quant_param_names(graph)
    for v in graph.values():
        if v.const is None:
            continue
        if v.origin is not None and v.origin.kind == "constant_node" and not constants_as_initializers \
                and v.name not in graph.inputs:
            pending_constant_nodes[v.name] = v
        elif v.origin is not None and v.origin.kind == "sparse_initializer" and v.origin.proto is not None \
                and _same_as_sparse(v):
            sparse.append(v.origin.proto)
        else:
            initializers.append(_tensor(v, strip_threshold, v.name in typed))
            if v.origin is not None and v.origin.doc_string:
                initializers[-1].doc_string = v.origin.doc_string

    def emit_constant(name: str) -> None:
        v = pending_constant_nodes.pop(name, None)
        if v is not None:
            nodes.append(_constant_node(v, strip_threshold))

    for name in graph.outputs:  # constant graph outputs come first
        emit_constant(name)
    for node in graph.topological_order():
        for name in node.inputs + node.captures:
            emit_constant(name)
        nodes.append(_node_proto(node))
    for name in list(pending_constant_nodes):  # unused constants: keep them, at the end
        emit_constant(name)

    value_info = [_value_info(v) for v in graph.values()
                  if v.const is None and v.name not in graph.inputs and v.name not in graph.outputs
                  and (v.elem_type or v.type_proto is not None) and v.producer_id is not None]
    g = onnx.helper.make_graph(
        nodes, graph.name,
        [_value_info(graph.value(n)) for n in graph.inputs],
        [_value_info(graph.value(n)) for n in graph.outputs],
        initializer=initializers, doc_string=graph.doc_string or None, value_info=value_info,
        sparse_initializer=sparse or None)
    for key, val in info.extra.get("graph_metadata_props", []):
        g.metadata_props.add(key=key, value=val)
    g.quantization_annotation.extend(info.extra.get("quantization_annotation", []))
    model = onnx.helper.make_model(
        g, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in info.opset_imports.items()],
        producer_name=info.producer_name, producer_version=info.producer_version,
        domain=info.domain, model_version=info.model_version, doc_string=info.doc_string,
        functions=info.functions or None)
    model.ir_version = info.ir_version
    for key, val in info.metadata_props:
        model.metadata_props.add(key=key, value=val)
    model.training_info.extend(info.extra.get("training_info", []))
    return model


def _same_as_sparse(v: Value) -> bool:
    dense = _sparse_to_dense(v.origin.proto)
    return dense.dtype == v.const.dtype and dense.shape == v.const.shape and np.array_equal(dense, v.const)


# quantization parameters (scales, zero points: at most 1-D) are written in the typed fields
# (float_data, int32_data) rather than raw_data, as onnxruntime's quantizer writes them, so tools
# reading ``scale.float_data[0]`` find them
_TYPED_FIELDS = {np.dtype(t) for t in (np.float32, np.int8, np.uint8, np.int16, np.uint16, np.int32, ml_dtypes.int4,
                                       ml_dtypes.uint4)}


def _quant_param_names(graph: Graph) -> set[str]:
    """The scale and zero-point constants of quantized ops (every input but the data ones)."""
    names = set()
    for node in graph.nodes():
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            names.update(node.inputs[1:3])
        elif node.op_type.startswith("QLinear") or node.op_type == "QGemm":
            names.update(node.inputs[1:])
    return names


def _tensor(v: Value, strip_threshold: int | None, typed: bool = False) -> TensorProto:
    if strip_threshold is not None and v.const.dtype != object and v.const.nbytes > strip_threshold:
        t = TensorProto(name=v.name, dims=v.const.shape,
                        data_type=v.elem_type or onnx.helper.np_dtype_to_tensor_dtype(v.const.dtype))
        set_external_data_fields(t, "__ptqc_stripped__", 0, v.const.nbytes)
        return t
    arr = np.asarray(v.const)
    if typed and arr.ndim <= 1 and arr.dtype in _TYPED_FIELDS:
        values = arr.ravel() if arr.dtype == np.float32 else arr.astype(np.int64).ravel()
        return onnx.helper.make_tensor(v.name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape,
                                       values.tolist())
    t = numpy_helper.from_array(arr, v.name)
    if v.elem_type and v.elem_type != t.data_type and t.HasField("raw_data"):
        t.data_type = v.elem_type  # bfloat16 / float8 stored as raw bits
    return t


def _constant_node(v: Value, strip_threshold: int | None) -> onnx.NodeProto:
    o = v.origin
    attr, arr = o.attr, v.const
    scalar_forms = {"value_float": (np.float32, 0), "value_int": (np.int64, 0),
                    "value_floats": (np.float32, 1), "value_ints": (np.int64, 1)}
    if attr in scalar_forms and arr.dtype == scalar_forms[attr][0] and arr.ndim == scalar_forms[attr][1]:
        value: Any = arr.item() if arr.ndim == 0 else arr.tolist()
        node = onnx.helper.make_node("Constant", [], [v.name], name=o.node_name or None, **{attr: value})
    else:
        node = onnx.helper.make_node("Constant", [], [v.name], name=o.node_name or None)
        node.attribute.append(onnx.helper.make_attribute("value", _tensor(v, strip_threshold)))
    if o.doc_string:
        node.doc_string = o.doc_string
    return node


def _node_proto(node) -> onnx.NodeProto:
    proto = onnx.NodeProto()
    proto.op_type = node.op_type
    proto.input.extend(node.inputs)
    proto.output.extend(node.outputs)
    if node.name:
        proto.name = node.name
    if node.domain:
        proto.domain = node.domain
    if node.doc_string:
        proto.doc_string = node.doc_string
    if node.extra.get("overload"):
        proto.overload = node.extra["overload"]
    for key, val in node.extra.get("metadata_props", []):
        proto.metadata_props.add(key=key, value=val)
    for name, value in node.attrs.items():
        proto.attribute.append(make_attribute(name, value, node.attr_types.get(name)))
    return proto


def _value_info(v: Value) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto()
    vi.name = v.name
    if v.doc_string:
        vi.doc_string = v.doc_string
    if v.type_proto is not None:
        vi.type.CopyFrom(v.type_proto)
    elif v.elem_type or v.shape is not None:
        tt = vi.type.tensor_type
        tt.elem_type = v.elem_type
        if v.shape is not None:
            tt.shape.SetInParent()
            for d in v.shape:
                dim = tt.shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif isinstance(d, str):
                    dim.dim_param = d
    return vi


# --------------------------------------------------------------------------- saving
def save_model(graph: Graph | onnx.ModelProto, path: str | os.PathLike, *,
               external_data: bool | None = None, constants_as_initializers: bool = False,
               size_threshold: int = 1024) -> Path:
    """Write a model atomically: to a temporary file in the target folder, then rename, so a
    failed run never leaves a half-written model.

    ``external_data`` None means "only when the model would not fit a 2 GB protobuf"; then
    tensors over ``size_threshold`` bytes go to ``<name>.data`` beside the model, streamed
    one by one (no 2 GB protobuf is ever built).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelError(f"{folder}: save directory does not exist")
    if not os.access(folder, os.W_OK):
        raise ModelError(f"{folder}: save directory is not writable")
    if isinstance(graph, onnx.ModelProto):
        proto, tensor_bytes = graph, graph.ByteSize()
    else:
        proto = None
        tensor_bytes = sum(v.const.nbytes for v in graph.values() if v.const is not None)
    if external_data is None:
        external_data = tensor_bytes >= _TWO_GB - (64 << 20)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=folder))
    try:
        tmp_model = tmp_dir / path.name
        data_name = path.name + ".data"
        if external_data:
            if proto is None:
                proto = export_model(graph, constants_as_initializers=constants_as_initializers,
                                     strip_threshold=size_threshold)
                _write_stripped_tensors(graph, proto, tmp_dir / data_name, data_name, size_threshold)
            else:
                onnx.save_model(proto, str(tmp_model), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=data_name,
                                size_threshold=size_threshold)
            if proto is not None and not tmp_model.exists():
                tmp_model.write_bytes(proto.SerializeToString())
        else:
            if proto is None:
                proto = export_model(graph, constants_as_initializers=constants_as_initializers)
            tmp_model.write_bytes(proto.SerializeToString())
        final_data = folder / data_name
        if (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, final_data)
        os.replace(tmp_model, path)
    except OSError as e:
        raise ModelError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        for f in tmp_dir.iterdir() if tmp_dir.exists() else ():
            f.unlink()
        if tmp_dir.exists():
            tmp_dir.rmdir()
    return path


def _write_stripped_tensors(graph: Graph, proto: onnx.ModelProto, data_path: Path, location: str,
                            threshold: int) -> None:
    """Fill the data-less tensors of ``proto`` into one external data file, 4 KB aligned."""
    with open(data_path, "wb") as f:
        for t in external_data_helper._get_all_tensors(proto):
            if t.data_location != TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in t.external_data}
            if info.get("location") != "__ptqc_stripped__":
                continue
            array = graph.value(t.name).const if graph.has_value(t.name) else None
            if array is None:  # a Constant node's tensor is named after its output value
                raise ModelError(f"tensor {t.name!r}: no data to write")
            pad = (-f.tell()) % 4096
            f.write(b"\0" * pad)
            offset = f.tell()
            data = np.ascontiguousarray(array)
            if data.dtype.byteorder == ">":
                data = data.byteswap().view(data.dtype.newbyteorder("<"))
            data.tofile(f)
            t.ClearField("external_data")
            set_external_data_fields(t, location, offset, data.nbytes)
