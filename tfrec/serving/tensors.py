"""Fast ``TensorProto`` <-> numpy conversion for the common dtypes (falls back to
``tf.make_ndarray`` / ``tf.make_tensor_proto`` for anything else).

Numbers travel as ``tensor_content`` (one memcpy each way), strings as
``string_val``; the dtype tables are built once at import.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

_NUMERIC = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT32: np.int32,
            types_pb2.DT_INT64: np.int64, types_pb2.DT_BOOL: np.bool_}
_FIELDS = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
           types_pb2.DT_INT64: "int64_val", types_pb2.DT_BOOL: "bool_val"}
_TO_DT = {np.dtype(v): k for k, v in _NUMERIC.items()}


def to_ndarray(proto) -> np.ndarray:
    """``TensorProto`` -> numpy (strings as ``object`` arrays of ``bytes``)."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    n = math.prod(shape)
    dtype = proto.dtype
    if dtype == types_pb2.DT_STRING:
        vals = proto.string_val
        if len(vals) == n:
            out = np.empty(n, dtype=object)
            out[:] = list(vals)
            return out.reshape(shape)
    elif dtype in _NUMERIC:
        dt = _NUMERIC[dtype]
        if proto.tensor_content:
            a = np.frombuffer(proto.tensor_content, dtype=dt)
            if a.size == n:
                return a.reshape(shape).copy()
        else:
            vals = getattr(proto, _FIELDS[dtype])
            if len(vals) == n:
                return np.asarray(vals, dtype=dt).reshape(shape)
    import tensorflow as tf

    return tf.make_ndarray(proto)


def to_proto(a: np.ndarray, out: Optional[tensor_pb2.TensorProto] = None):
    """numpy -> ``TensorProto`` (``tensor_content`` for numbers, ``string_val`` for
    strings). With ``out`` (e.g. ``response.outputs[name]``), fills that message in
    place instead of building and copying a new one; returns it."""
    a = np.asarray(a)
    p = tensor_pb2.TensorProto() if out is None else out
    if a.dtype == object or a.dtype.kind == "S":
        flat = a.reshape(-1).tolist()
        if all(type(x) is bytes for x in flat):
            p.dtype = types_pb2.DT_STRING
            dims = p.tensor_shape.dim
            for s in a.shape:
                dims.add().size = s
            p.string_val.extend(flat)
            return p
    elif a.dtype in _TO_DT:
        p.dtype = _TO_DT[a.dtype]
        dims = p.tensor_shape.dim
        for s in a.shape:
            dims.add().size = s
        p.tensor_content = np.ascontiguousarray(a).tobytes()
        return p
    import tensorflow as tf

    made = tf.make_tensor_proto(a)
    if out is None:
        return made
    out.CopyFrom(made)
    return out
