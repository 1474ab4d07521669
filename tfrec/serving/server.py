"""A model server speaking TensorFlow Serving's gRPC and REST APIs.

It serves any SavedModel laid out as TF Serving expects
(``MODEL_BASE_PATH/<integer version>/saved_model.pb``), so the same export
directory works with the official ``tensorflow/serving`` image and with
``tfrec serve`` where that binary cannot run (this platform, a laptop, tests).

* gRPC ``tensorflow.serving.PredictionService``: ``Predict`` and
  ``GetModelMetadata`` (``Classify``, ``Regress``, ``MultiInference`` answer
  UNIMPLEMENTED); ``tensorflow.serving.ModelService``: ``GetModelStatus`` and
  ``HandleReloadConfigRequest``. Implemented on the official
  ``tensorflow_serving.apis`` service definitions.
* REST: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with
  ``instances`` (row format) or ``inputs`` (columnar format),
  ``GET /v1/models/NAME[/versions/N]`` (status) and ``.../metadata``.
* Versions: the base path is polled every ``file_system_poll_wait_seconds``; a new
  version is loaded (and warmed up with ``assets.extra/tf_serving_warmup_requests``)
  beside the serving one and swapped in atomically, so in-flight requests finish
  on the version they started with. A version that fails to load is reported
  (log + ``GetModelStatus``) and skipped; the previous version keeps serving.
  Version policies ``latest`` (default, 1 version), ``all`` and ``specific``, and
  version labels, come from a ``model_config_list`` file.
* Batching: with ``enable_batching`` concurrent requests to the same signature
  are merged along the batch dimension, with TF Serving's knobs
  (``max_batch_size``, ``batch_timeout_micros``, ``num_batch_threads``,
  ``max_enqueued_batches``, ``pad_variable_length_inputs``).
* Errors carry TF Serving's status codes: NOT_FOUND (unknown model, version,
  label or signature), INVALID_ARGUMENT (missing or extra input, wrong dtype or
  shape, or an op failing on the input, e.g. ``k`` out of range); a request never
  brings the process down. Binds ``127.0.0.1`` unless told otherwise.

Example:

>>> server = ModelServer.from_base_path("recommender", "savedmodels/gru4rec")  # doctest: +SKIP
>>> server.start(port=8500, rest_api_port=8501)                                 # doctest: +SKIP
>>> server.stop()                                                               # doctest: +SKIP
"""

from __future__ import annotations

import base64
import collections
import copy
import itertools
import json
import logging
import os
import re
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

import numpy as np

log = logging.getLogger("tfrec.serving")

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------- errors
class ServingError(Exception):
    """An error with a TF Serving (gRPC) status code name, e.g. ``"NOT_FOUND"``."""

    HTTP = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "FAILED_PRECONDITION": 400,
            "UNIMPLEMENTED": 501, "RESOURCE_EXHAUSTED": 503, "UNAVAILABLE": 503,
            "DEADLINE_EXCEEDED": 504, "OUT_OF_RANGE": 400}

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.HTTP.get(self.code, 500)


def _tf_error_code(err) -> str:
    import grpc

    for c in grpc.StatusCode:
        if c.value[0] == getattr(err, "error_code", 2):
            return c.name
    return "UNKNOWN"


def clean_tf_message(message: str) -> str:
    """The informative lines of a TF runtime error (no graph-node boilerplate)."""
    keep = []
    for line in message.splitlines():
        t = line.strip()
        if not t or t.startswith(("Graph execution error", "Detected at node", "<stack traces",
                                  "[[{{node", "File ")) or t.endswith("(most recent call last):"):
            continue
        t = re.sub(r"\s*\[Op:__inference_\w+\]$", "", t)
        keep.append(t)
    return " ".join(keep) or message.strip()


# ------------------------------------------------------------------- batching
class BatchingOptions:
    """TF Serving's batching knobs (``BatchingParameters``)."""

    def __init__(self, max_batch_size: int = 32, batch_timeout_micros: int = 1000,
                 num_batch_threads: int = 2, max_enqueued_batches: int = 100,
                 allowed_batch_sizes=(), pad_variable_length_inputs: bool = False):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = int(max_batch_size)
        self.batch_timeout_micros = int(batch_timeout_micros)
        self.num_batch_threads = max(int(num_batch_threads), 1)
        self.max_enqueued_batches = int(max_enqueued_batches)
        self.allowed_batch_sizes = tuple(int(b) for b in allowed_batch_sizes)
        self.pad_variable_length_inputs = bool(pad_variable_length_inputs)

    @classmethod
    def from_file(cls, path: str) -> "BatchingOptions":
        from tfrec.serving.configs import parse_batching_parameters

        p = parse_batching_parameters(open(path).read())
        kw = {}
        for f in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
            if p.HasField(f):
                kw[f] = getattr(p, f).value
        kw["allowed_batch_sizes"] = list(p.allowed_batch_sizes)
        kw["pad_variable_length_inputs"] = p.pad_variable_length_inputs
        return cls(**kw)

    def as_dict(self) -> dict:
        return dict(vars(self), allowed_batch_sizes=list(self.allowed_batch_sizes))


class _Task:
    __slots__ = ("signature", "inputs", "rows", "done", "result", "error")

    def __init__(self, signature, inputs):
        self.signature = signature
        self.inputs = inputs
        self.rows = next(iter(inputs.values())).shape[0] if inputs else 0
        self.done = threading.Event()
        self.result = None
        self.error = None


class BatchScheduler:
    """Merges concurrent requests for one servable along dimension 0.

    A batch thread takes the oldest waiting request and, for up to
    ``batch_timeout_micros``, adds later ones for the same signature whose inputs
    agree in dtype and in every dimension but the first (or any dimension, with
    ``pad_variable_length_inputs``: shorter inputs are padded with 0 / ``b""``),
    up to ``max_batch_size`` rows. Outputs are split back by rows.
    """

    def __init__(self, run, options: BatchingOptions):
        self.run = run
        self.options = options
        self.queue = collections.deque()
        self.cv = threading.Condition()
        self.closed = False
        self.threads = [threading.Thread(target=self._loop, daemon=True, name=f"batch-{i}")
                        for i in range(options.num_batch_threads)]
        for t in self.threads:
            t.start()

    def submit(self, signature: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        task = _Task(signature, inputs)
        if task.rows == 0 or task.rows > self.options.max_batch_size or any(
                v.ndim == 0 for v in inputs.values()):
            return self.run(signature, inputs)
        with self.cv:
            closed = self.closed
            if not closed:
                if len(self.queue) >= self.options.max_enqueued_batches * self.options.max_batch_size:
                    raise ServingError("UNAVAILABLE", "the batch queue is full; retry later")
                self.queue.append(task)
                self.cv.notify()
        if closed:  # the version was unloaded after this request resolved it: run unbatched
            return self.run(signature, inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def _compatible(self, a: _Task, b: _Task) -> bool:
        if a.signature != b.signature or a.inputs.keys() != b.inputs.keys():
            return False
        for k, v in a.inputs.items():
            w = b.inputs[k]
            if v.dtype != w.dtype or v.ndim != w.ndim:
                return False
            if not self.options.pad_variable_length_inputs and v.shape[1:] != w.shape[1:]:
                return False
        return True

    def _loop(self):
        timeout = self.options.batch_timeout_micros / 1e6
        while True:
            with self.cv:
                while not self.queue and not self.closed:
                    self.cv.wait()
                if self.closed and not self.queue:
                    return
                first = self.queue.popleft()
                batch, rows = [first], first.rows
                deadline = time.monotonic() + timeout
                while rows < self.options.max_batch_size:
                    found = None
                    for t in self.queue:
                        if self._compatible(first, t) and rows + t.rows <= self.options.max_batch_size:
                            found = t
                            break
                    if found is not None:
                        self.queue.remove(found)
                        batch.append(found)
                        rows += found.rows
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0 or self.closed:
                        break
                    self.cv.wait(left)
            self._process(batch)

    def _process(self, batch: List[_Task]):
        if len(batch) == 1:
            t = batch[0]
            try:
                t.result = self.run(t.signature, t.inputs)
            except Exception as e:  # noqa: BLE001 - reported to the caller
                t.error = e
            t.done.set()
            return
        try:
            merged = {}
            for k in batch[0].inputs:
                parts = [t.inputs[k] for t in batch]
                if self.options.pad_variable_length_inputs:
                    shape = np.max([p.shape for p in parts], axis=0)
                    parts = [_pad_to(p, shape) for p in parts]
                merged[k] = np.concatenate(parts, axis=0)
            total = sum(t.rows for t in batch)
            pad_rows = 0
            for size in self.options.allowed_batch_sizes:
                if size >= total:
                    pad_rows = size - total
                    break
            if pad_rows:
                merged = {k: np.concatenate([v, np.repeat(v[:1], pad_rows, axis=0)]) for k, v in merged.items()}
            out = self.run(batch[0].signature, merged)
            a = 0
            for t in batch:
                t.result = {}
                for k, v in out.items():
                    if v.ndim == 0 or v.shape[0] != total + pad_rows:
                        raise ServingError("INTERNAL", f"output {k!r} has no batch dimension; "
                                                       "cannot split a batched request")
                    t.result[k] = v[a : a + t.rows]
                a += t.rows
        except ServingError as e:
            if e.code != "INVALID_ARGUMENT":
                for t in batch:
                    t.error = e
            else:  # one bad request must not fail the others: run them one by one
                for t in batch:
                    try:
                        t.result = self.run(t.signature, t.inputs)
                    except Exception as e2:  # noqa: BLE001
                        t.error = e2
        except Exception as e:  # noqa: BLE001
            for t in batch:
                t.error = e
        for t in batch:
            t.done.set()

    def close(self):
        with self.cv:
            self.closed = True
            self.cv.notify_all()


def _pad_to(a: np.ndarray, shape) -> np.ndarray:
    if tuple(a.shape[1:]) == tuple(shape[1:]):
        return a
    fill = b"" if a.dtype == object else 0
    out = np.full((a.shape[0],) + tuple(shape[1:]), fill, dtype=a.dtype)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


# ------------------------------------------------------------------ servables
class SignatureRunner:
    """Calls one signature of a loaded SavedModel with numpy inputs, as fast as TF allows.

    Everything that does not depend on the request is prepared once: the flat input
    order (a signature takes a dict, flattened in sorted key order), the input dtypes
    and the captured inputs (variable handles, tables), the function's eager op name,
    its flat output names and the call attributes of both executors. A request then
    costs one eager tensor per input (a copy of the array, as ``tf.constant`` makes),
    one ``TFE_Py_Execute`` of the function (the call ``ConcreteFunction._call_flat``
    ends in, without its per-call Python: executor context, option copies, tape and
    distribution checks, output packing; on a ``step`` that Python took about as long
    as the graph) and one ``.numpy()`` per output. When these private entry points
    are missing or look different (another TF version), the concrete function's flat
    call is used, and when that is missing too or the function's inputs are not the
    plain dict this expects, the public keyword call. Inputs must already match the
    signature (see :meth:`Servable.check_inputs`).

    A signature whose graph has no control flow (e.g. a recurrent model's ``step``) runs
    on TF's single-threaded executor: its kernels execute on the calling thread instead
    of being handed to TF's inter-op threads and back, which saves the hops on a call of
    a few hundred small ops. Graphs with loops or conditionals (which that executor does
    not support) use the default executor; so does a signature on which it ever fails.

    Example:

    >>> fn = tf.saved_model.load(path).signatures["serving_default"]     # doctest: +SKIP
    >>> SignatureRunner(fn)({"items": items, "lengths": lengths, ...})    # doctest: +SKIP
    {'item_ids': array(...), 'scores': array(...)}
    """

    #: ops that TF's single-threaded executor cannot run (control flow, in any function)
    CONTROL_FLOW = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase",
                              "Enter", "Exit", "Switch", "Merge", "NextIteration", "LoopCond",
                              "RefEnter", "RefExit", "RefSwitch", "RefMerge", "RefNextIteration"})

    def __init__(self, fn, single_threaded: Optional[bool] = None):
        import tensorflow as tf

        self._tf = tf
        self.fn = fn
        self.single_threaded = self._no_control_flow(fn) if single_threaded is None else bool(single_threaded)
        args, kwargs = fn.structured_input_signature
        self.names = sorted(kwargs)
        self.dtypes = [kwargs[n].dtype for n in self.names]
        self.fast = False
        try:
            placeholders = [t.name.split(":")[0] for t in fn.inputs[: len(self.names)]]
            if (not args and placeholders == self.names and callable(getattr(fn, "_call_flat", None))
                    and all(isinstance(kwargs[n], tf.TensorSpec) for n in self.names)):
                self.captured = list(fn.captured_inputs)
                self.fast = True
        except Exception:  # noqa: BLE001 - any surprise: use the public call
            self.fast = False
        self.direct = False
        if self.fast:
            try:
                self._prepare_direct()
                self.direct = True
            except Exception:  # noqa: BLE001 - any surprise: the flat call
                self.direct = False

    def _prepare_direct(self):
        """Binds the function's own eager op once: its name, its flat outputs' names,
        the resource handles it captures and the call attributes for both executors,
        so that a request is one ``TFE_Py_Execute`` (what ``_call_flat`` ends in, minus
        its per-call Python: executor context, option copies, tape checks, output
        packing)."""
        from tensorflow.python import pywrap_tfe
        from tensorflow.python.eager import context, core
        from tensorflow.python.framework import ops

        tf = self._tf
        atomic = self.fn._inference_function
        name = atomic.name
        self._op_name = name.decode() if isinstance(name, bytes) else str(name)
        outputs = self.fn.structured_outputs
        if not isinstance(outputs, dict) or not all(isinstance(v, (tf.Tensor, tf.TensorSpec))
                                                    for v in outputs.values()):
            raise TypeError("signature outputs are not a flat dict of tensors")
        self.out_names = sorted(outputs)  # the flat order of a dict's values
        flat = atomic.function_type.flat_outputs
        n_out = len(flat)
        if n_out != len(self.out_names) or any(getattr(f, "name", None) not in (None, n)
                                               for f, n in zip(flat, self.out_names)):
            raise TypeError("unexpected flat outputs")
        handles = []
        for c in self.captured:
            h = c.handle if isinstance(c, tf.Variable) else c
            if not isinstance(h, ops.EagerTensor):
                raise TypeError("a captured input is not an eager tensor")
            handles.append(h)
        if len(atomic.cached_definition.signature.input_arg) != len(self.names) + len(handles):
            raise TypeError("unexpected number of function inputs")
        self._handles = handles
        self._n_out = n_out
        ctx = context.context()
        ctx.ensure_initialized()
        self._ctx = ctx
        base = ctx.function_call_options
        attrs = {}
        for executor in ("", "SINGLE_THREADED_EXECUTOR"):
            opts = copy.copy(base)
            opts.executor_type = executor
            attrs[executor] = tuple(itertools.chain(*opts.as_attrs().items()))
        self._attrs = attrs
        self._enums = [d.as_datatype_enum for d in self.dtypes]
        self._execute = pywrap_tfe.TFE_Py_Execute
        self._eager_tensor = ops.EagerTensor
        self._not_ok = core._NotOkStatusException  # noqa: SLF001
        self._to_exception = core._status_to_exception  # noqa: SLF001
        self._op_error = tf.errors.OpError

    @classmethod
    def _no_control_flow(cls, fn) -> bool:
        try:
            gd = fn.graph.as_graph_def()
        except Exception:  # noqa: BLE001 - cannot tell: default executor
            return False
        ops_ = {n.op for n in gd.node}
        for f in gd.library.function:
            ops_.update(n.op for n in f.node_def)
        return not (ops_ & cls.CONTROL_FLOW)

    def _call(self, tensors):
        if self.fast:
            return self.fn._call_flat(tensors, self.captured)
        return self.fn(**dict(zip(self.names, tensors)))

    def _call_direct(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        ctx = self._ctx
        device = ctx.device_name
        make = self._eager_tensor
        # A copy, as tf.constant makes: the tensor must not alias the caller's array. With
        # no device the handle wraps that host copy as it is; a device name (tf.constant's
        # way) would run one more eager op per input (``_EagerConst``) copying it again.
        # The function call places its inputs where its graph wants them either way.
        args = [make(np.array(inputs[n], copy=True), None, e) for n, e in zip(self.names, self._enums)]
        args += self._handles
        try:
            outs = self._execute(ctx._handle, device, self._op_name, args,  # noqa: SLF001
                                 self._attrs["SINGLE_THREADED_EXECUTOR" if self.single_threaded else ""],
                                 self._n_out)
        except (self._not_ok, self._op_error) as e:
            err = self._to_exception(e) if isinstance(e, self._not_ok) else e
            if self.single_threaded and "Single-threaded executor does not support" in str(err):
                self.single_threaded = False  # unsupported op: the default executor from now on
                return self._call_direct(inputs)
            raise err from None
        return {k: v.numpy() for k, v in zip(self.out_names, outs)}

    def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.direct:
            return self._call_direct(inputs)
        tf = self._tf
        constant = tf.constant
        tensors = [constant(inputs[n], dtype=d) for n, d in zip(self.names, self.dtypes)]
        if self.single_threaded:
            try:
                with tf.experimental.function_executor_type("SINGLE_THREADED_EXECUTOR"):
                    res = self._call(tensors)
            except tf.errors.OpError as e:
                if "Single-threaded executor does not support" not in str(e):
                    raise
                self.single_threaded = False  # unsupported op: the default executor from now on
                res = self._call(tensors)
        else:
            res = self._call(tensors)
        return {k: v.numpy() for k, v in res.items()}


class Servable:
    """One loaded SavedModel version: signatures, their specs and a run method."""

    def __init__(self, name: str, version: int, path: str, batching: Optional[BatchingOptions] = None):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, int(version), path
        pb = os.path.join(path, "saved_model.pb")
        if not os.path.isfile(pb):
            raise ServingError("NOT_FOUND", f"no saved_model.pb in {path}")
        sm = saved_model_pb2.SavedModel()
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
        meta = next((m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags), None)
        if meta is None:
            raise ServingError("NOT_FOUND", f"{path} has no MetaGraph tagged 'serve'")
        self.signature_defs = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
        self.loaded = tf.saved_model.load(path)
        self.functions = dict(self.loaded.signatures)
        self.runners = {k: SignatureRunner(f) for k, f in self.functions.items()}
        self._op_error = tf.errors.OpError
        self.inputs = {}
        self._np_dtypes = {}  # signature -> input -> the numpy dtype a request array has when it is right
        for sig, sd in self.signature_defs.items():
            self.inputs[sig] = {
                k: (tf.dtypes.as_dtype(ti.dtype),
                    None if ti.tensor_shape.unknown_rank else [d.size for d in ti.tensor_shape.dim])
                for k, ti in sd.inputs.items()}
            self._np_dtypes[sig] = {k: (np.dtype(object) if dt == tf.string else np.dtype(dt.as_numpy_dtype))
                                    for k, (dt, _) in self.inputs[sig].items()}
        self.scheduler = BatchScheduler(self._run, batching) if batching is not None else None

    def warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` like TF Serving does."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, WARMUP_PATH)
        if not os.path.isfile(path):
            return 0
        n = 0
        for rec in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(rec.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            req = entry.predict_log.request
            sig = req.model_spec.signature_name or "serving_default"
            self.predict(sig, {k: tf.make_ndarray(v) for k, v in req.inputs.items()})
            n += 1
        return n

    def check_inputs(self, signature: str, inputs: Dict[str, np.ndarray], coerce: bool = False):
        """Validates (and, for JSON, converts) inputs against the signature."""
        import tensorflow as tf

        if signature not in self.signature_defs:
            raise ServingError("NOT_FOUND", f"Serving signature name: \"{signature}\" not found in signature "
                                            f"def (available: {', '.join(sorted(self.signature_defs))})")
        spec = self.inputs[signature]
        missing = sorted(set(spec) - set(inputs))
        extra = sorted(set(inputs) - set(spec))
        if missing or extra:
            msg = "input size does not match signature: "
            if missing:
                msg += f"missing input(s) {missing}"
            if extra:
                msg += ("; " if missing else "") + f"unknown input(s) {extra}"
            raise ServingError("INVALID_ARGUMENT", msg + f"; signature {signature!r} expects {sorted(spec)}")
        out = {}
        np_dtypes = self._np_dtypes[signature]
        for k, (dtype, shape) in spec.items():
            v = inputs[k]
            if coerce:
                try:
                    v = _coerce(v, dtype)
                except (ValueError, TypeError) as e:
                    raise ServingError("INVALID_ARGUMENT", f"input {k!r}: cannot convert to {dtype.name}: {e}")
            elif v.dtype == np_dtypes[k]:
                pass  # the common case, without a TF dtype conversion
            else:
                got = tf.dtypes.as_dtype(v.dtype) if v.dtype != object else tf.string
                if got != dtype:
                    raise ServingError("INVALID_ARGUMENT",
                                       f"input {k!r}: expects {dtype.name} but {got.name} is provided")
            if shape is not None:
                ok = len(shape) == v.ndim and all(d == -1 or d == s for d, s in zip(shape, v.shape))
                if not ok:
                    want = "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"
                    raise ServingError("INVALID_ARGUMENT",
                                       f"input {k!r}: expects shape {want} but got {list(v.shape)}")
            out[k] = v
        return out

    def _run(self, signature: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            return self.runners[signature](inputs)
        except self._op_error as e:
            raise ServingError(_tf_error_code(e), clean_tf_message(e.message))
        except (TypeError, ValueError) as e:
            raise ServingError("INVALID_ARGUMENT", str(e).split("\n")[0])

    def predict(self, signature: str, inputs: Dict[str, np.ndarray], coerce: bool = False):
        inputs = self.check_inputs(signature, inputs, coerce)
        if self.scheduler is not None:
            return self.scheduler.submit(signature, inputs)
        return self._run(signature, inputs)

    def close(self):
        if self.scheduler is not None:
            self.scheduler.close()


def _coerce(v, dtype) -> np.ndarray:
    if dtype.name == "string":
        def enc(x):
            if isinstance(x, dict) and "b64" in x:
                return base64.b64decode(x["b64"])
            if isinstance(x, bytes):
                return x
            if isinstance(x, str):
                return x.encode("utf-8")
            raise TypeError(f"expected a string, got {type(x).__name__} {x!r}")

        a = np.asarray(v, dtype=object)
        flat = [enc(x) for x in a.reshape(-1)]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(a.shape)
    a = np.asarray(v)
    if a.dtype == object or a.dtype.kind in "US":
        raise TypeError(f"got non-numeric values {a.reshape(-1)[:3].tolist()}")
    if dtype.is_integer and a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise TypeError("got non-integer numbers")
    if dtype.is_bool and a.dtype.kind != "b":
        raise TypeError("expected true/false")
    return a.astype(dtype.as_numpy_dtype)


# --------------------------------------------------------------- model state
STATES = ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")


class ModelConfig:
    """One entry of a ``model_config_list``."""

    def __init__(self, name: str, base_path: str, policy: str = "latest", num_versions: int = 1,
                 versions=(), labels: Optional[Dict[str, int]] = None):
        if policy not in ("latest", "all", "specific"):
            raise ValueError(f"unknown version policy {policy!r}")
        self.name, self.base_path = name, os.path.abspath(base_path)
        self.policy, self.num_versions = policy, max(int(num_versions), 1)
        self.versions = tuple(int(v) for v in versions)
        self.labels = dict(labels or {})

    def wanted(self, on_disk: List[int]) -> List[int]:
        if self.policy == "all":
            return list(on_disk)
        if self.policy == "specific":
            return [v for v in on_disk if v in self.versions]
        return sorted(on_disk)[-self.num_versions:]

    @classmethod
    def from_proto(cls, c) -> "ModelConfig":
        which = c.model_version_policy.WhichOneof("policy_choice")
        kw = {}
        if which == "all":
            kw["policy"] = "all"
        elif which == "specific":
            kw.update(policy="specific", versions=list(c.model_version_policy.specific.versions))
        elif which == "latest" and c.model_version_policy.latest.num_versions:
            kw["num_versions"] = c.model_version_policy.latest.num_versions
        if c.model_platform and c.model_platform != "tensorflow":
            raise ValueError(f"model {c.name!r}: only model_platform 'tensorflow' is supported")
        return cls(c.name, c.base_path, labels=dict(c.version_labels), **kw)


class ManagedModel:
    """A model name: its config, loaded versions and per-version status."""

    def __init__(self, config: ModelConfig, batching: Optional[BatchingOptions]):
        self.config = config
        self.batching = batching
        self.servables: Dict[int, Servable] = {}
        self.status: Dict[int, dict] = {}
        self.failed: Dict[int, float] = {}  # version -> directory mtime when it failed
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    def _set(self, v: int, state: str, code: str = "OK", message: str = ""):
        self.status[v] = {"state": state, "error_code": code, "error_message": message}

    def poll(self) -> None:
        """Loads new wanted versions, then unloads versions no longer wanted."""
        base = self.config.base_path
        try:
            on_disk = sorted(int(d) for d in os.listdir(base)
                             if d.isdigit() and os.path.isdir(os.path.join(base, d)))
        except FileNotFoundError:
            on_disk = []
        wanted = self.config.wanted(on_disk)
        for v in sorted(wanted, reverse=True):
            if v in self.servables:
                continue
            path = os.path.join(base, str(v))
            mtime = _tree_mtime(path)
            if self.failed.get(v) == mtime:
                continue  # failed before and unchanged: do not retry every poll
            self._set(v, "LOADING")
            t0 = time.perf_counter()
            try:
                sv = Servable(self.name, v, path, self.batching)
                n = sv.warmup()
            except Exception as e:  # noqa: BLE001 - a corrupt version must not stop serving
                msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                log.error("model %s version %d failed to load from %s (keeps serving %s): %s",
                          self.name, v, path, sorted(self.servables) or "nothing", msg)
                self.failed[v] = mtime
                self._set(v, "END", "UNKNOWN", f"failed to load version {v}: {msg}")
                continue
            with self.lock:
                self.servables[v] = sv
            self.failed.pop(v, None)
            self._set(v, "AVAILABLE")
            log.info("model %s version %d available (%.2fs, %d warmup requests)",
                     self.name, v, time.perf_counter() - t0, n)
        # unload versions that are no longer wanted (only if something newer serves)
        keep = set(wanted)
        if self.config.policy == "latest" and not any(v in self.servables for v in wanted):
            keep |= set(self.servables)  # nothing wanted is loadable: keep the old one
        for v in list(self.servables):
            if v not in keep:
                self._set(v, "UNLOADING")
                with self.lock:
                    sv = self.servables.pop(v)
                sv.close()
                self._set(v, "END")
                log.info("model %s version %d unloaded", self.name, v)

    def resolve(self, version: Optional[int] = None, label: Optional[str] = None) -> Servable:
        with self.lock:
            if label:
                if label not in self.config.labels:
                    raise ServingError("NOT_FOUND", f"Unrecognized servable version label: {label}")
                version = self.config.labels[label]
            if version is not None:
                sv = self.servables.get(int(version))
                if sv is None:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: "
                                                    f"Specific({self.name}, {version})")
                return sv
            if not self.servables:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")
            return self.servables[max(self.servables)]

    def close(self):
        with self.lock:
            for sv in self.servables.values():
                sv.close()
            self.servables.clear()


def _tree_mtime(path: str) -> float:
    m = 0.0
    for root, dirs, files in os.walk(path):
        for f in files + dirs:
            try:
                m = max(m, os.path.getmtime(os.path.join(root, f)))
            except OSError:
                pass
    return m


# --------------------------------------------------------------------- server
class ModelServer:
    """Serves models over TF Serving's gRPC and REST APIs.

    Args:
        configs: :class:`ModelConfig` entries (one per model name).
        enable_batching: merge concurrent requests (``batching`` knobs).
        batching: :class:`BatchingOptions` (default TF-Serving-like values).
        file_system_poll_wait_seconds: how often base paths are polled for new
            versions (0 disables polling after the first load).
        model_config_file: the file the configs came from; polled every
            ``model_config_file_poll_wait_seconds`` when that is > 0.
        max_message_bytes: gRPC send/receive message size limit.
        grpc_max_threads, rest_api_num_threads: worker threads.
    """

    def __init__(self, configs: List[ModelConfig], enable_batching: bool = False,
                 batching: Optional[BatchingOptions] = None, file_system_poll_wait_seconds: float = 1.0,
                 model_config_file: Optional[str] = None, model_config_file_poll_wait_seconds: float = 0.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, grpc_max_threads: int = 16,
                 rest_api_num_threads: int = 16, grpc_channel_arguments: Optional[list] = None):
        self.batching = (batching or BatchingOptions()) if enable_batching else None
        self.models: Dict[str, ManagedModel] = {}
        self.poll_seconds = float(file_system_poll_wait_seconds)
        self.config_file = model_config_file
        self.config_poll_seconds = float(model_config_file_poll_wait_seconds)
        self._config_mtime = os.path.getmtime(model_config_file) if model_config_file else None
        self.max_message_bytes = int(max_message_bytes)
        self.grpc_max_threads = int(grpc_max_threads)
        self.rest_api_num_threads = int(rest_api_num_threads)
        self.grpc_channel_arguments = list(grpc_channel_arguments or [])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.grpc_server = None
        self.http_server = None
        self.port = None
        self.rest_api_port = None
        self.apply_configs(configs)

    # ------------------------------------------------------------ configs
    @classmethod
    def from_base_path(cls, model_name: str, model_base_path: str, **kwargs) -> "ModelServer":
        return cls([ModelConfig(model_name, model_base_path)], **kwargs)

    @classmethod
    def from_config_file(cls, path: str, **kwargs) -> "ModelServer":
        from tfrec.serving.configs import read_model_config_file

        cfgs = [ModelConfig.from_proto(c) for c in read_model_config_file(path).model_config_list.config]
        return cls(cfgs, model_config_file=path, **kwargs)

    def apply_configs(self, configs: List[ModelConfig]) -> None:
        """Adds, updates and removes models to match ``configs`` (loads synchronously)."""
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in config: {names}")
        with self._lock:
            for c in configs:
                m = self.models.get(c.name)
                if m is None or m.config.base_path != c.base_path:
                    if m is not None:
                        m.close()
                    self.models[c.name] = ManagedModel(c, self.batching)
                else:
                    m.config = c
            for name in list(self.models):
                if name not in names:
                    self.models.pop(name).close()
            models = list(self.models.values())
        for m in models:
            m.poll()

    def model(self, name: str) -> ManagedModel:
        with self._lock:
            m = self.models.get(name)
        if m is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        return m

    def poll_once(self) -> None:
        if self.config_file and self.config_poll_seconds > 0:
            try:
                mt = os.path.getmtime(self.config_file)
                if mt != self._config_mtime:
                    from tfrec.serving.configs import read_model_config_file

                    cfg = read_model_config_file(self.config_file)
                    self.apply_configs([ModelConfig.from_proto(c) for c in cfg.model_config_list.config])
                    self._config_mtime = mt
            except Exception as e:  # noqa: BLE001
                log.error("cannot reload model config file %s: %s", self.config_file, e)
        with self._lock:
            models = list(self.models.values())
        for m in models:
            try:
                m.poll()
            except Exception as e:  # noqa: BLE001
                log.error("polling model %s failed: %s", m.name, e)

    def _poll_loop(self):
        wait = min(x for x in (self.poll_seconds, self.config_poll_seconds) if x > 0)
        while not self._stop.wait(wait):
            self.poll_once()

    # ------------------------------------------------------------ requests
    def predict(self, name: str, inputs: Dict[str, np.ndarray], signature: str = "",
                version: Optional[int] = None, label: Optional[str] = None, coerce: bool = False):
        """In-process Predict; returns ``(servable, outputs)``."""
        sv = self.model(name).resolve(version, label)
        sig = signature or "serving_default"
        return sv, sv.predict(sig, inputs, coerce=coerce)

    def status(self, name: str, version: Optional[int] = None) -> Dict[int, dict]:
        m = self.model(name)
        st = dict(m.status)
        if version is not None:
            if version not in st:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            st = {version: st[version]}
        return st

    # ------------------------------------------------------------ lifecycle
    def start(self, port: Optional[int] = 8500, rest_api_port: Optional[int] = 0,
              host: str = "127.0.0.1") -> "ModelServer":
        """Starts gRPC on ``port`` and REST on ``rest_api_port`` (0 picks a free
        port for gRPC; ``None`` disables the endpoint). Returns ``self``; the
        bound ports are in ``self.port`` / ``self.rest_api_port``."""
        if port is not None:
            self._start_grpc(host, port)
        if rest_api_port is not None:
            self._start_rest(host, rest_api_port)
        if self.poll_seconds > 0 or (self.config_file and self.config_poll_seconds > 0):
            t = threading.Thread(target=self._poll_loop, daemon=True, name="version-poll")
            t.start()
            self._threads.append(t)
        return self

    def _start_grpc(self, host: str, port: int):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from tfrec.serving.grpc_service import ModelServiceServicer, PredictionServiceServicer

        opts = [("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0)] + self.grpc_channel_arguments
        # Requests are handled on the executor's worker threads; with batching off the
        # signature runs on that same thread (no queue, no lock, no further hop).
        # Responses are not compressed (TF Serving's default; compression costs CPU on
        # small tensors and gains nothing on loopback).
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.grpc_max_threads,
                                                        thread_name_prefix="grpc-worker"),
                             options=opts, compression=grpc.Compression.NoCompression)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServiceServicer(self), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServiceServicer(self), server)
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        server.start()
        self.grpc_server, self.port = server, bound
        log.info("gRPC PredictionService/ModelService on %s:%d", host, bound)

    def _start_rest(self, host: str, port: int):
        from tfrec.serving.rest import make_handler

        httpd = ThreadingHTTPServer((host, port), make_handler(self))
        httpd.daemon_threads = True
        t = threading.Thread(target=httpd.serve_forever, daemon=True, name="rest")
        t.start()
        self._threads.append(t)
        self.http_server, self.rest_api_port = httpd, httpd.server_address[1]
        log.info("REST API on http://%s:%d/v1/models/...", host, self.rest_api_port)

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace).wait()
            self.grpc_server = None
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
            self.http_server = None
        with self._lock:
            for m in self.models.values():
                m.close()

    def wait(self) -> None:
        """Blocks until interrupted (Ctrl-C) or stopped."""
        try:
            while not self._stop.wait(3600):
                pass
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
