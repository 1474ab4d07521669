"""SavedModel export of any tfrec recommender, in TF Serving's layout.

``export(model, base_dir)`` writes ``base_dir/<version>/`` (``saved_model.pb``,
``variables/``, ``assets.extra/``) atomically: the version is written to a
temporary directory next to ``base_dir`` and renamed into place, so a server
polling ``base_dir`` never sees a half-written version.

The graph takes and returns **raw string item ids**: the item vocabulary is a
``tf.lookup.StaticHashTable`` inside the graph (unknown ids follow the
out-of-vocabulary policy: ``"pad"`` ignores them like padding, ``"error"`` fails
the request with INVALID_ARGUMENT). Only core TensorFlow ops are used, so the
SavedModel runs in TF Serving and in a Python process without tfrec.

Signatures (``B`` = batch, ``T`` = padded history length, every input has the
batch dimension first so TF Serving's request batching applies):

``serving_default`` (recommend)
    inputs ``items`` string ``[B, T]`` (right-padded, padding is ignored),
    ``lengths`` int32 ``[B]``, ``k`` int32 ``[B]``, ``exclude_seen`` bool ``[B]``,
    plus the model's features: ``timestamps`` float64 ``[B, T]`` (seconds; the
    model's time deltas are computed in the graph), ``values`` float32 ``[B, T]``,
    ``user_id`` string ``[B]``, and for models that read the gap from the last
    event to the request (``next_deltas`` models: HRNN-meta's control signal,
    HNVM's session rule) ``query_timestamp`` float64 ``[B]``: the time of the
    request in the seconds of ``timestamps`` (``NaN`` when unknown: the next
    item then continues the last session, as at a gap of 0; a time before the
    last history event is INVALID_ARGUMENT).
    outputs ``item_ids`` string ``[B, K]`` and ``scores`` float32 ``[B, K]`` with
    ``K = max(k)``; a row asking for fewer items is filled with ``""`` / ``-inf``.
    The padding item is never recommended.
``recommend_ragged``
    as ``serving_default`` with the history as ragged components:
    ``item_values`` string ``[N]`` and ``row_lengths`` int32 ``[B]`` (and
    ``timestamp_values`` / ``value_values`` ``[N]``, ``user_id`` and
    ``query_timestamp`` ``[B]`` when the model reads them).
``score``
    the history inputs plus ``candidates`` string ``[B, C]`` -> ``scores``
    ``[B, C]`` (an unknown candidate scores ``-inf`` under the ``"pad"`` policy).
``initial_state`` / ``step``
    ``initial_state(sessions [B] string)`` -> ``state_*`` tensors;
    ``step(state_*, item [B], k [B], [timestamp [B], value [B], user_id [B]])``
    -> new ``state_*``, ``item_ids``, ``scores``: advances sessions one event at a
    time; the scores are those at the time of the new event (a query gap of 0).
    A model exposing ``initial_state(batch_size)`` and
    ``step(state, inputs) -> (logits, new_state)`` (recurrent models) is advanced in
    O(1) by its own step; its state tensors travel flat, ``state_<i>`` ``[B, D_i]`` in
    the order of ``tf.nest.flatten(initial_state)`` (an LSTM: ``state_0`` = h,
    ``state_1`` = c). For any other model (or with ``step_mode="window"``) the
    state is a bounded window of the last ``step_window`` events (``state_items``,
    ``state_length``, ...), re-scored with ``prefix_logits`` each step -- equal to
    full replay while the history fits the window, and to scoring the last
    ``step_window`` events after that (not O(1): the cost of a window replay).

The item vocabulary travels with the model: pass ``item_vocab`` (and
``user_vocab``), or a ``data`` :class:`~tfrec.data.SequenceDataset`; the CLI
takes them from the run directory's data spec. Without a vocabulary the raw id
of item index ``i`` is ``str(i)``.

``assets.extra/tf_serving_warmup_requests`` holds TF Serving warmup records
(``PredictionLog`` TFRecords) for each signature; ``assets.extra/tfrec.json``
describes the export (model, features, signatures, step kind).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Optional, Sequence

import numpy as np

#: Fallback window for the generic ``step`` signature.
DEFAULT_STEP_WINDOW = 50
WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO = "tfrec.json"
PAD_ID = ""


def _tf():
    import tensorflow as tf

    return tf


def _identity_tokens(n: int) -> list:
    return [str(i) for i in range(1, n)]


def existing_versions(base_dir: str) -> list:
    """Sorted integer version directories under ``base_dir``."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(d) for d in os.listdir(base_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(base_dir, d)))


#: model input features the export feeds (``next_deltas`` models accept previous-event
#: ``deltas`` and the query gap ``query_deltas`` instead, computed in the graph from
#: ``timestamps`` and ``query_timestamp``).
EXPORT_FEATURES = ("deltas", "values", "user", "query_deltas")


def export_features(model) -> tuple:
    """The non-item features the exported graph feeds ``model`` (from ``input_features``)."""
    feats = set(getattr(model, "input_features", ("items",)))
    if "next_deltas" in feats:
        feats |= {"deltas", "query_deltas"}
    return tuple(f for f in EXPORT_FEATURES if f in feats)


def _is_keras(model) -> bool:
    import keras

    return isinstance(model, keras.Model)


def _ensure_built(model) -> None:
    """Runs the model once on a dummy batch so that lazily built layers exist."""
    if not _is_keras(model):
        return
    x = {"items": np.array([[1, 0], [1, 1]], np.int32)}
    feats = export_features(model)
    if "deltas" in feats:
        x["deltas"] = np.array([[np.inf, 0.0], [np.inf, 5.0]], np.float32)
    if "values" in feats:
        x["values"] = np.ones((2, 2), np.float32)
    if "user" in feats:
        x["user"] = np.zeros(2, np.int32)
    import keras

    if not model.built and type(model).build is not keras.Model.build:
        model.build()  # models that create their weights in ``build()`` (e.g. GRU4Rec)
    # one eager call creates lazily built weights (cheaper than tracing a tf.function)
    model.prefix_logits({k: _tf().constant(v) for k, v in x.items()}, training=False)


def has_own_step(model) -> bool:
    """True when ``model`` advances a session in O(1) with its own ``initial_state`` /
    ``step`` (export then uses them; otherwise the bounded-window step state)."""
    return callable(getattr(model, "step", None)) and callable(getattr(model, "initial_state", None))


def _backing_variable(v):
    """The ``tf.Variable`` behind a Keras 3 variable (``v`` itself when it is one)."""
    tf = _tf()
    if isinstance(v, tf.Variable):
        return v
    inner = getattr(v, "_value", None)
    return inner if isinstance(inner, tf.Variable) else v


def _make_module(model, item_tokens: Sequence[str], user_tokens: Optional[Sequence[str]],
                 oov: str, step_window: int, step_mode: str = "auto"):
    tf = _tf()

    class RecommenderModule(tf.Module):
        """Holds the model's variables and vocabularies; builds the signature functions."""

        def __init__(self):
            super().__init__(name="tfrec_export")
            self.keras = _is_keras(model)
            self.features = export_features(model)
            self.num_items = int(model.num_items)
            if self.keras:
                # the variables, not the Keras model: a tracked Keras model makes SavedModel
                # also serialize its ``_default_save_signature``, a trace of ``model(inputs)``
                # with the training build shapes (extra export time, and it can read
                # training-only state such as replica-local TBPTT carries, which then
                # fails to save). The signatures reach the model through this closure.
                # The backing tf.Variables, not Keras 3's wrappers: a tracked wrapper is
                # saved as a second variable that the checkpoint restores while the graph
                # reads the first, so TF1-style loaders (TF Serving, saved_model_cli run)
                # failed with "Could not find variable ..." (tf.saved_model.load worked).
                self.model_variables = [_backing_variable(v) for v in model.variables]
            else:
                self.model_state = {k: tf.Variable(np.asarray(v), trainable=False, name=k)
                                    for k, v in model.state().items()}
            tokens = list(item_tokens)
            self.item_tokens = tf.Variable([PAD_ID] + tokens, trainable=False, name="item_tokens")
            self.item_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(tokens, tf.string), tf.range(1, len(tokens) + 1, dtype=tf.int32)),
                default_value=0)
            if "user" in self.features:
                ut = list(user_tokens or [])
                self.user_table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant(ut if ut else ["<none>"], tf.string),
                        tf.range(1, max(len(ut), 1) + 1, dtype=tf.int32)),
                    default_value=0)
            self.oov = oov
            self.has_step = step_mode != "window" and has_own_step(model)
            if step_mode == "model" and not self.has_step:
                raise ValueError(f"{type(model).__name__} has no initial_state/step; use step_mode='auto'")
            self.window = int(step_window)
            if self.has_step:
                # the model's state structure and per-tensor trailing shapes, taken once (eagerly);
                # the signatures carry every state tensor flat as ``state_<i>`` ``[B, prod(shape)]``
                proto = tf.nest.map_structure(tf.convert_to_tensor, model.initial_state(1))
                self.state_structure = proto
                self.state_shapes = [tuple(int(d) for d in t.shape[1:]) for t in tf.nest.flatten(proto)]
            self._logits_fn = None

        # ---------------------------------------------------------- lookups
        def lookup_items(self, ids, mask=None, what="item"):
            """Raw ids -> indices (0 = padding / unknown); ``mask`` False marks padding
            (``None``: every entry is an id)."""
            idx = self.item_table.lookup(ids)
            if mask is not None:
                idx = tf.where(mask, idx, tf.zeros_like(idx))
            if self.oov == "error":
                unknown = tf.equal(idx, 0) if mask is None else tf.logical_and(mask, tf.equal(idx, 0))
                # the unknown ids in row-major order (what tf.boolean_mask gives) in two ops
                # instead of boolean_mask's dozen shape ops, which ran on every request
                bad = tf.gather_nd(ids, tf.where(unknown))
                check = tf.debugging.Assert(
                    tf.logical_not(tf.reduce_any(unknown)),
                    [f"unknown {what} id(s) (out-of-vocabulary policy 'error'):", bad], summarize=5)
                with tf.control_dependencies([check]):
                    idx = tf.identity(idx)
            return idx

        def lookup_users(self, user_id):
            return self.user_table.lookup(user_id)

        # ---------------------------------------------------------- scoring
        def _logits_impl(self, inputs):
            if self.keras:
                out = model.prefix_logits(inputs, training=False)
            else:
                out = model.tf_score(inputs, dict(self.model_state))
            return tf.cast(out, tf.float32)

        def logits(self, inputs):
            """Scores ``[B, num_items]``; the model is traced once (one inner function
            shared by every signature)."""
            inputs = {k: v for k, v in inputs.items() if k == "items" or k in self.features}
            if self._logits_fn is None:
                spec = {"items": tf.TensorSpec([None, None], tf.int32),
                        "deltas": tf.TensorSpec([None, None], tf.float32),
                        "values": tf.TensorSpec([None, None], tf.float32),
                        "user": tf.TensorSpec([None], tf.int32),
                        "query_deltas": tf.TensorSpec([None], tf.float32)}
                spec = {k: v for k, v in spec.items() if k in inputs}
                self._logits_fn = tf.function(self._logits_impl, input_signature=[spec])
            return self._logits_fn(inputs)

        def history_inputs(self, items, lengths, timestamps=None, values=None, user_id=None,
                           query_timestamp=None):
            lengths = tf.cast(lengths, tf.int32)
            checks = [
                tf.debugging.assert_equal(tf.shape(lengths)[0], tf.shape(items)[0],
                                          message="lengths must have one entry per row of items"),
                tf.debugging.assert_non_negative(lengths, message="lengths must be >= 0"),
                tf.debugging.assert_less_equal(lengths, tf.shape(items)[1],
                                               message="lengths must not exceed the padded history length")]
            for name, f in (("timestamps", timestamps), ("values", values)):
                if f is not None:
                    checks.append(tf.debugging.assert_equal(
                        tf.shape(f), tf.shape(items), message=f"{name} must have the shape of items"))
            if user_id is not None:
                checks.append(tf.debugging.assert_equal(
                    tf.shape(user_id)[0], tf.shape(items)[0], message="user_id needs one entry per row"))
            query_gap = None
            if "query_deltas" in self.features:
                checks.append(tf.debugging.assert_equal(
                    tf.shape(query_timestamp)[0], tf.shape(items)[0],
                    message="query_timestamp needs one entry per row"))
                with tf.control_dependencies(checks):  # lengths and shapes are valid first
                    # seconds from the last history event to the request; unknown
                    # (NaN) or an empty history: 0, i.e. the session continues
                    last = tf.gather(tf.cast(timestamps, tf.float64), tf.maximum(lengths - 1, 0),
                                     axis=1, batch_dims=1)
                    q = tf.cast(query_timestamp, tf.float64) - last
                query_gap = tf.where(tf.math.is_nan(q) | (lengths <= 0), tf.zeros_like(q), q)
                checks.append(tf.debugging.assert_non_negative(
                    query_gap, message="query_timestamp must not precede the last history timestamp"))
            with tf.control_dependencies(checks):
                lengths = tf.identity(lengths)
            mask = tf.sequence_mask(lengths, tf.shape(items)[1])
            x = {"items": self.lookup_items(items, mask)}
            if "deltas" in self.features:
                ts = tf.cast(timestamps, tf.float64)
                diff = tf.cast(ts[:, 1:] - ts[:, :-1], tf.float32)
                first = tf.fill([tf.shape(ts)[0], 1], tf.constant(np.inf, tf.float32))
                d = tf.concat([first, diff], axis=1)
                x["deltas"] = tf.where(mask, d, tf.zeros_like(d))
            if "values" in self.features:
                v = tf.cast(values, tf.float32)
                x["values"] = tf.where(mask, v, tf.zeros_like(v))
            if "user" in self.features:
                x["user"] = self.lookup_users(user_id)
            if query_gap is not None:
                x["query_deltas"] = tf.cast(query_gap, tf.float32)
            return x

        def top_k(self, logits, k, seen=None):
            k = tf.cast(k, tf.int32)
            n = self.num_items - 1
            checks = [tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1"),
                      tf.debugging.assert_less_equal(k, n, message=f"k must be <= the number of items ({n})"),
                      tf.debugging.assert_equal(tf.shape(k)[0], tf.shape(logits)[0],
                                                message="k needs one entry per row")]
            with tf.control_dependencies(checks):
                k = tf.identity(k)
            # the padding item (column 0) is never recommended: rank columns 1.. only
            logits = logits[:, 1:]
            if seen is not None:
                logits = tf.where(seen[:, 1:], tf.fill(tf.shape(logits), tf.constant(-np.inf, tf.float32)),
                                  logits)
            kmax = tf.reduce_max(tf.concat([k, [1]], 0))
            scores, idx = tf.math.top_k(logits, k=kmax)
            valid = tf.range(kmax)[None, :] < k[:, None]
            ids = tf.gather(self.item_tokens, idx + 1)
            ids = tf.where(valid, ids, tf.fill(tf.shape(ids), PAD_ID))
            scores = tf.where(valid, scores, tf.fill(tf.shape(scores), tf.constant(-np.inf, tf.float32)))
            return {"item_ids": ids, "scores": scores}

        def recommend(self, items, lengths, k, exclude_seen, **feats):
            x = self.history_inputs(items, lengths, **feats)
            logits = self.logits(x)
            hist = tf.math.bincount(x["items"], minlength=self.num_items, maxlength=self.num_items,
                                    binary_output=True, axis=-1)
            seen = tf.logical_and(tf.cast(hist, tf.bool), tf.cast(exclude_seen, tf.bool)[:, None])
            return self.top_k(logits, k, seen)

        def score(self, items, lengths, candidates, **feats):
            x = self.history_inputs(items, lengths, **feats)
            logits = self.logits(x)
            cidx = self.lookup_items(candidates, None, "candidate")
            s = tf.gather(logits, cidx, axis=1, batch_dims=1)
            return {"scores": tf.where(cidx > 0, s, tf.fill(tf.shape(s), tf.constant(-np.inf, tf.float32)))}

        # ------------------------------------------------------------- step
        def initial_state(self, sessions):
            b = tf.shape(sessions)[0]
            if self.has_step:
                st = tf.nest.flatten(model.initial_state(b))
                state = {f"state_{i}": tf.reshape(tf.convert_to_tensor(s), [b, int(np.prod(shape))])
                         for i, (s, shape) in enumerate(zip(st, self.state_shapes))}
            else:
                state = {"state_items": tf.zeros([b, self.window], tf.int32),
                         "state_length": tf.zeros([b], tf.int32)}
                if "deltas" in self.features:
                    state["state_deltas"] = tf.zeros([b, self.window], tf.float32)
                if "values" in self.features:
                    state["state_values"] = tf.zeros([b, self.window], tf.float32)
            if "deltas" in self.features:
                state["state_last_time"] = tf.fill([b], tf.constant(np.nan, tf.float64))
            return state

        def step(self, state, item, k, timestamp=None, value=None, user_id=None):
            idx = self.lookup_items(item)
            out = {}
            delta = None
            if "deltas" in self.features:
                ts = tf.cast(timestamp, tf.float64)
                last = state["state_last_time"]
                delta = tf.where(tf.math.is_nan(last), tf.constant(np.inf, tf.float64), ts - last)
                delta = tf.cast(delta, tf.float32)
                out["state_last_time"] = ts
            if self.has_step:
                b = tf.shape(idx)[0]
                flat = [tf.reshape(state[f"state_{i}"], tf.concat([[b], tf.constant(shape, tf.int32)], 0))
                        if len(shape) != 1 else state[f"state_{i}"]
                        for i, shape in enumerate(self.state_shapes)]
                prev = tf.nest.pack_sequence_as(self.state_structure, flat)
                ev = {"items": idx}
                if delta is not None:
                    ev["deltas"] = delta
                if "values" in self.features:
                    ev["values"] = tf.cast(value, tf.float32)
                if "user" in self.features:
                    ev["user"] = self.lookup_users(user_id)
                logits, new = model.step(prev, ev)
                for i, s in enumerate(tf.nest.flatten(new)):
                    s = tf.convert_to_tensor(s)
                    out[f"state_{i}"] = s if s.shape.rank == 2 else tf.reshape(s, [b, -1])
                logits = tf.cast(logits, tf.float32)
            else:
                W = self.window
                L = state["state_length"]
                full = L >= W

                def push(buf, v):
                    shifted = tf.concat([buf[:, 1:], tf.zeros_like(buf[:, :1])], axis=1)
                    buf = tf.where(full[:, None], shifted, buf)
                    pos = tf.minimum(L, W - 1)
                    onehot = tf.one_hot(pos, W, on_value=True, off_value=False)
                    return tf.where(onehot, tf.cast(v, buf.dtype)[:, None], buf)

                # the item at position 0 of a window that dropped events starts the window
                items = push(state["state_items"], idx)
                newL = tf.minimum(L + 1, W)
                out["state_items"], out["state_length"] = items, newL
                x = {"items": items}
                if "deltas" in self.features:
                    d = push(state["state_deltas"], delta)
                    d = tf.concat([tf.fill([tf.shape(d)[0], 1], tf.constant(np.inf, tf.float32)),
                                   d[:, 1:]], axis=1)
                    out["state_deltas"] = d
                    x["deltas"] = d
                if "values" in self.features:
                    v = push(state["state_values"], value)
                    out["state_values"] = v
                    x["values"] = v
                if "user" in self.features:
                    x["user"] = self.lookup_users(user_id)
                if "query_deltas" in self.features:  # scored at the time of the new event
                    x["query_deltas"] = tf.zeros(tf.shape(idx), tf.float32)
                logits = self.logits(x)
            out.update(self.top_k(logits, k))
            return out

    return RecommenderModule()


def _signature_functions(mod, window: int):
    """tf.functions with input signatures for every exported signature."""
    tf = _tf()
    S = tf.TensorSpec
    feats = mod.features
    hist = {"items": S([None, None], tf.string, "items"), "lengths": S([None], tf.int32, "lengths")}
    extra = {}
    if "deltas" in feats:
        extra["timestamps"] = S([None, None], tf.float64, "timestamps")
    if "values" in feats:
        extra["values"] = S([None, None], tf.float32, "values")
    if "user" in feats:
        extra["user_id"] = S([None], tf.string, "user_id")
    if "query_deltas" in feats:
        extra["query_timestamp"] = S([None], tf.float64, "query_timestamp")

    def split(kw):
        return {n: kw.pop(n) for n in ("timestamps", "values", "user_id", "query_timestamp") if n in kw}

    rec_spec = dict(hist, k=S([None], tf.int32, "k"), exclude_seen=S([None], tf.bool, "exclude_seen"), **extra)

    @tf.function(input_signature=[rec_spec], autograph=False)
    def recommend(inp):
        kw = dict(inp)
        f = split(kw)
        return mod.recommend(kw["items"], kw["lengths"], kw["k"], kw["exclude_seen"], **f)

    rag_spec = {"item_values": S([None], tf.string, "item_values"),
                "row_lengths": S([None], tf.int32, "row_lengths"),
                "k": S([None], tf.int32, "k"), "exclude_seen": S([None], tf.bool, "exclude_seen")}
    if "deltas" in feats:
        rag_spec["timestamp_values"] = S([None], tf.float64, "timestamp_values")
    if "values" in feats:
        rag_spec["value_values"] = S([None], tf.float32, "value_values")
    if "user" in feats:
        rag_spec["user_id"] = S([None], tf.string, "user_id")
    if "query_deltas" in feats:
        rag_spec["query_timestamp"] = S([None], tf.float64, "query_timestamp")

    @tf.function(input_signature=[rag_spec], autograph=False)
    def recommend_ragged(inp):
        rl = tf.cast(inp["row_lengths"], tf.int64)
        check = tf.debugging.assert_equal(tf.reduce_sum(rl), tf.shape(inp["item_values"], tf.int64)[0],
                                          message="row_lengths must sum to the number of item_values")
        with tf.control_dependencies([check]):
            rl = tf.identity(rl)
        items = tf.RaggedTensor.from_row_lengths(inp["item_values"], rl).to_tensor(PAD_ID)
        f = {}
        if "timestamp_values" in inp:
            f["timestamps"] = tf.RaggedTensor.from_row_lengths(inp["timestamp_values"], rl).to_tensor(0.0)
        if "value_values" in inp:
            f["values"] = tf.RaggedTensor.from_row_lengths(inp["value_values"], rl).to_tensor(0.0)
        for n in ("user_id", "query_timestamp"):
            if n in inp:
                f[n] = inp[n]
        return mod.recommend(items, inp["row_lengths"], inp["k"], inp["exclude_seen"], **f)

    score_spec = dict(hist, candidates=S([None, None], tf.string, "candidates"), **extra)

    @tf.function(input_signature=[score_spec], autograph=False)
    def score(inp):
        kw = dict(inp)
        f = split(kw)
        return mod.score(kw["items"], kw["lengths"], kw["candidates"], **f)

    @tf.function(input_signature=[{"sessions": S([None], tf.string, "sessions")}], autograph=False)
    def initial_state(inp):
        return mod.initial_state(inp["sessions"])

    state_proto = initial_state.get_concrete_function().structured_outputs
    step_spec = {n: S([None] + list(t.shape[1:]), t.dtype, n) for n, t in state_proto.items()}
    step_spec["item"] = S([None], tf.string, "item")
    step_spec["k"] = S([None], tf.int32, "k")
    if "deltas" in feats:
        step_spec["timestamp"] = S([None], tf.float64, "timestamp")
    if "values" in feats:
        step_spec["value"] = S([None], tf.float32, "value")
    if "user" in feats:
        step_spec["user_id"] = S([None], tf.string, "user_id")

    @tf.function(input_signature=[step_spec], autograph=False)
    def step(inp):
        state = {n: v for n, v in inp.items() if n.startswith("state_")}
        return mod.step(state, inp["item"], inp["k"], timestamp=inp.get("timestamp"),
                        value=inp.get("value"), user_id=inp.get("user_id"))

    return {"serving_default": recommend, "recommend_ragged": recommend_ragged, "score": score,
            "initial_state": initial_state, "step": step}, {
        "serving_default": rec_spec, "recommend_ragged": rag_spec, "score": score_spec,
        "initial_state": {"sessions": None}, "step": step_spec}


def _warmup_inputs(mod, specs: dict, item_tokens, window: int) -> dict:
    """Small valid example inputs for every signature (used for warmup records)."""
    tok = item_tokens[0] if item_tokens else "1"
    tok2 = item_tokens[min(1, len(item_tokens) - 1)] if item_tokens else "1"
    k = min(10, mod.num_items - 1)
    hist = {"items": np.array([[tok, tok2, ""], [tok2, "", ""]], object),
            "lengths": np.array([2, 1], np.int32)}
    feats = {}
    if "deltas" in mod.features:
        feats["timestamps"] = np.array([[0.0, 30.0, 0.0], [100.0, 0.0, 0.0]], np.float64)
    if "values" in mod.features:
        feats["values"] = np.ones((2, 3), np.float32)
    if "user" in mod.features:
        feats["user_id"] = np.array(["", ""], object)
    if "query_deltas" in mod.features:
        feats["query_timestamp"] = np.array([3600.0, np.nan], np.float64)
    out = {"serving_default": dict(hist, k=np.array([k, k], np.int32),
                                   exclude_seen=np.array([False, True]), **feats),
           "score": dict(hist, candidates=np.array([[tok, tok2], [tok2, tok]], object), **feats),
           "initial_state": {"sessions": np.array(["a", "b"], object)}}
    rag = {"item_values": np.array([tok, tok2, tok2], object), "row_lengths": np.array([2, 1], np.int32),
           "k": np.array([k, k], np.int32), "exclude_seen": np.array([False, False])}
    if "deltas" in mod.features:
        rag["timestamp_values"] = np.array([0.0, 30.0, 100.0])
    if "values" in mod.features:
        rag["value_values"] = np.ones(3, np.float32)
    if "user" in mod.features:
        rag["user_id"] = feats["user_id"]
    if "query_deltas" in mod.features:
        rag["query_timestamp"] = feats["query_timestamp"]
    out["recommend_ragged"] = rag
    return out


def write_warmup(path: str, model_name: str, requests: dict, step_request: Optional[dict] = None) -> int:
    """Writes TF Serving warmup records (TFRecord of ``PredictionLog`` with a
    ``PredictRequest`` per signature). Returns the number of records."""
    tf = _tf()
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    n = 0
    with tf.io.TFRecordWriter(path) as w:
        for sig, inputs in requests.items():
            req = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig))
            for name, value in inputs.items():
                req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
            w.write(log.SerializeToString())
            n += 1
    return n


def export(model, base_dir: str, version: Optional[int] = None, item_vocab=None, user_vocab=None,
           data=None, model_name: Optional[str] = None, oov: Optional[str] = None,
           step_window: Optional[int] = None, warmup: bool = True, step_mode: str = "auto") -> str:
    """Exports ``model`` as ``base_dir/<version>/`` for TF Serving.

    Args:
        model: any tfrec recommender (a ``SequentialRecommender`` or a count
            baseline with ``tf_score``), trained.
        base_dir: the model's base path (TF Serving's ``model_base_path``).
        version: integer version; default one more than the largest existing.
        item_vocab, user_vocab: :class:`~tfrec.data.Vocabulary` objects mapping
            raw ids to the model's indices; default ``data.item_vocab`` /
            ``data.user_vocab`` or the identity (``str(index)``).
        data: a :class:`~tfrec.data.SequenceDataset` to take vocabularies from.
        model_name: the name used in warmup requests (default the registry name).
        oov: ``"pad"`` (unknown ids are ignored) or ``"error"`` (INVALID_ARGUMENT);
            default the item vocabulary's own policy.
        step_window: history kept by the generic ``step`` state (models without
            their own ``step``); default ``model.max_length`` or 50.
        warmup: write ``assets.extra/tf_serving_warmup_requests``.
        step_mode: ``"auto"`` (the model's own ``initial_state``/``step`` when it has
            them, else the bounded window), ``"model"`` (require the model's step) or
            ``"window"`` (always the generic window state, e.g. to compare).

    Returns:
        The path of the written version directory.

    Example:

    >>> from tfrec.data import simulate_sessions                      # doctest: +SKIP
    >>> data = simulate_sessions(num_users=100)                        # doctest: +SKIP
    >>> pop = Pop(data.num_items).fit(data)                            # doctest: +SKIP
    >>> export(pop, "savedmodels/pop", data=data)                      # doctest: +SKIP
    'savedmodels/pop/1'
    """
    tf = _tf()
    if item_vocab is None and data is not None:
        item_vocab = data.item_vocab
    if user_vocab is None and data is not None:
        user_vocab = data.user_vocab
    n = int(model.num_items)
    if item_vocab is not None:
        if len(item_vocab) != n:
            raise ValueError(f"item vocabulary has {len(item_vocab)} entries (padding included) but the "
                             f"model has {n} item classes")
        item_tokens = list(item_vocab.tokens)
    else:
        item_tokens = _identity_tokens(n)
    oov = oov or (getattr(item_vocab, "oov", None) or "pad")
    if oov not in ("pad", "error"):
        raise ValueError(f"oov must be 'pad' or 'error', got {oov!r}")
    if step_mode not in ("auto", "model", "window"):
        raise ValueError(f"step_mode must be 'auto', 'model' or 'window', got {step_mode!r}")
    feats = ("items",) + export_features(model)
    user_tokens = None
    if "user" in feats:
        user_tokens = list(user_vocab.tokens) if user_vocab is not None else None
        if user_tokens is None:
            nu = int(getattr(model, "num_users", 0) or 0)
            user_tokens = _identity_tokens(max(nu, 2))
    window = int(step_window or getattr(model, "max_length", None) or DEFAULT_STEP_WINDOW)
    if not _is_keras(model):
        try:
            model.tf_score({"items": tf.zeros([1, 1], tf.int32)},
                           {k: tf.constant(v) for k, v in model.state().items()})
        except NotImplementedError:
            raise
    _ensure_built(model)

    base_dir = os.path.abspath(base_dir)
    os.makedirs(base_dir, exist_ok=True)
    if version is None:
        vs = existing_versions(base_dir)
        version = (vs[-1] + 1) if vs else 1
    version = int(version)
    if version < 0:
        raise ValueError("version must be >= 0")
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; choose another version")

    mod = _make_module(model, item_tokens, user_tokens, oov, window, step_mode)
    fns, specs = _signature_functions(mod, window)
    name = model_name or getattr(model, "registry_name", "") or type(model).__name__.lower()

    parent = os.path.dirname(base_dir)
    tmp = os.path.join(parent, f".{os.path.basename(base_dir)}.tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(mod, tmp, signatures={k: f.get_concrete_function() for k, f in fns.items()})
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        examples = _warmup_inputs(mod, specs, item_tokens, window)
        st = fns["initial_state"](examples["initial_state"])
        step_ex = {k: v.numpy() for k, v in st.items()}
        step_ex["item"] = np.array([item_tokens[0] if item_tokens else "1"] * 2, object)
        step_ex["k"] = examples["serving_default"]["k"]
        if "deltas" in mod.features:
            step_ex["timestamp"] = np.array([10.0, 20.0])
        if "values" in mod.features:
            step_ex["value"] = np.ones(2, np.float32)
        if "user" in mod.features:
            step_ex["user_id"] = np.array(["", ""], object)
        examples["step"] = step_ex
        if warmup:
            write_warmup(os.path.join(extra, WARMUP_FILE), name, examples)
        info = {
            "model": name, "class": type(model).__name__, "num_items": n,
            "input_features": list(feats), "oov": oov,
            "step": "model" if mod.has_step else f"window:{window}",
            "signatures": sorted(fns), "version": version,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": _jsonable(model.get_config()) if hasattr(model, "get_config") else {},
        }
        with open(os.path.join(extra, EXPORT_INFO), "w") as f:
            json.dump(info, f, indent=2)
        os.rename(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _jsonable(cfg):
    try:
        return json.loads(json.dumps(cfg, default=str))
    except (TypeError, ValueError):
        return {}


def export_run(run_dir: str, base_dir: str, version: Optional[int] = None, **kwargs) -> str:
    """Exports the model of a tfrec run directory; vocabularies come from the
    run's data spec (``config.json``)."""
    from tfrec.training.runs import load_run, run_config

    model = load_run(run_dir)
    cfg = run_config(run_dir)
    if "item_vocab" not in kwargs and "data" not in kwargs:
        spec = cfg.get("data")
        if spec:
            from tfrec.data.specs import load_spec

            try:
                kwargs["data"] = load_spec(spec)
            except (FileNotFoundError, ValueError) as e:
                raise ValueError(f"cannot load the run's data spec {spec!r} for its vocabulary: {e}")
    kwargs.setdefault("model_name", cfg.get("model"))
    return export(model, base_dir, version=version, **kwargs)
