"""SavedModel export: scores equal the model's for every registered model, TF-Serving-clean graphs,
loading without tfrec, saved_model_cli, warmup records, step signatures, atomic versions."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tfrec.data import simulate_sessions
from tfrec.data.pipelines import Batcher
from tfrec.layers.state import lane_states
from tfrec.models import registry
from tfrec.models.base import SequentialRecommender, gather_last, lengths_of
from tfrec.savedmodels import export, existing_versions
from tfrec.savedmodels.export import EXPORT_INFO, WARMUP_FILE

FORBIDDEN_OPS = {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


# ---------------------------------------------------------------- tiny test models
class TinyStepGRU(SequentialRecommender):
    """GRU over items and time deltas with its own O(1) ``step`` (the recurrent protocol)."""

    input_features = ("items", "deltas")

    def __init__(self, num_items, units=8, **kwargs):
        super().__init__(num_items, **kwargs)
        self.units = units
        self.emb = keras.layers.Embedding(num_items, units)
        self.cell = keras.layers.GRUCell(units)
        self.out = keras.layers.Dense(num_items)

    def _features(self, items, deltas):
        d = ops.where(ops.isinf(deltas), ops.zeros_like(deltas), ops.log1p(ops.maximum(deltas, 0.0)))
        return self.emb(items) + ops.expand_dims(d, -1) * 0.1

    def prefix_logits(self, inputs, training=False):
        x = self._features(inputs["items"], inputs["deltas"])
        mask = ops.not_equal(inputs["items"], 0)

        def body(t, h):
            out, [h2] = self.cell(x[:, t], [h])
            return t + 1, ops.where(mask[:, t : t + 1], h2, h)

        _, h = ops.while_loop(lambda t, h: t < ops.shape(x)[1], body,
                              (0, ops.zeros((ops.shape(x)[0], self.units))))
        return self.out(h)

    def initial_state(self, batch_size):
        return [ops.zeros((batch_size, self.units))]

    def step(self, state, inputs, training=False):
        x = self._features(inputs["items"], inputs["deltas"])
        h, [h2] = self.cell(x, state)
        return self.out(h), [h2]

    def get_config(self):
        return dict(super().get_config(), units=self.units)


class TinyWindowMean(SequentialRecommender):
    """Non-recurrent model reading every feature (items, deltas, values, user): mean pooling.
    It has no ``step``, so export gives it the bounded-window step state."""

    input_features = ("items", "deltas", "values", "user")
    max_length = 6

    def __init__(self, num_items, num_users=10, units=8, **kwargs):
        super().__init__(num_items, **kwargs)
        self.num_users, self.units = num_users, units
        self.emb = keras.layers.Embedding(num_items, units)
        self.user_emb = keras.layers.Embedding(num_users, units)
        self.out = keras.layers.Dense(num_items)

    def prefix_logits(self, inputs, training=False):
        items = inputs["items"]
        m = ops.cast(ops.not_equal(items, 0), "float32")[..., None]
        d = inputs["deltas"]
        w = ops.where(ops.isinf(d), ops.ones_like(d), 1.0 / (1.0 + ops.log1p(ops.maximum(d, 0.0))))
        e = self.emb(items) * (w[..., None] + inputs["values"][..., None]) * m
        pooled = ops.sum(e, 1) / ops.maximum(ops.sum(m, 1), 1.0)
        first = gather_last(self.emb(items), ops.ones_like(lengths_of(items)))
        return self.out(pooled + self.user_emb(inputs["user"]) + 0.5 * first)

    def get_config(self):
        return dict(super().get_config(), num_users=self.num_users, units=self.units)


class TinyStepMatrix(TinyStepGRU):
    """:class:`TinyStepGRU` whose recurrent state is a nested, higher-rank structure
    (``{"h": [B, 2, units / 2]}``): export must carry it as one flat ``state_0`` ``[B, units]``."""

    def initial_state(self, batch_size):
        return {"h": ops.zeros((batch_size, 2, self.units // 2))}

    def step(self, state, inputs, training=False):
        h = ops.reshape(state["h"], (-1, self.units))
        logits, [h2] = super().step([h], inputs, training)
        return logits, {"h": ops.reshape(h2, (-1, 2, self.units // 2))}


TINY_MODELS = {"tiny_step_gru": TinyStepGRU, "tiny_step_matrix": TinyStepMatrix,
               "tiny_window_mean": TinyWindowMean}


# ---------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def data():
    return simulate_sessions(num_users=200, seed=0)


@pytest.fixture(scope="module")
def gambler():
    from tfrec.data import simulate_gambler

    return simulate_gambler(num_sequences=200, seed=0)


def build(name, data):
    if name in TINY_MODELS:
        keras.utils.set_random_seed(0)
        cls = TINY_MODELS[name]
        return cls(data.num_items, num_users=data.num_users) if cls is TinyWindowMean else cls(data.num_items)
    spec = registry.get(name)
    keras.utils.set_random_seed(0)
    model = registry.build(name, data, **spec.test_config)
    if not spec.neural:
        model.fit(data, verbose=0)
    return model


def history_batch(data, features, n=12, seed=0):
    """Prefix batch of the test split as model inputs and as raw-id signature inputs."""
    seqs = data.test
    s_idx, pos = seqs.target_index()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(s_idx), size=min(n, len(s_idx)), replace=False)
    feats = tuple(f for f in features if f in ("items", "deltas", "values", "user"))
    if "next_deltas" in features:  # export feeds previous-event deltas to such models
        feats += ("deltas",)
    x = dict(Batcher(seqs, ("items",)).prefix_batch(s_idx[pick], pos[pick])[0])
    B, T = x["items"].shape
    lengths = (x["items"] != 0).sum(1).astype(np.int32)
    raw = np.full((B, T), b"", object)
    for i in range(B):
        raw[i, : lengths[i]] = [t.encode() for t in data.item_vocab.ids(x["items"][i, : lengths[i]])]
    sig = {"items": raw, "lengths": lengths}
    rng = np.random.default_rng(seed + 1)
    if "deltas" in feats:
        ts = np.zeros((B, T), np.float64)
        for i, (s, p) in enumerate(zip(s_idx[pick], pos[pick])):
            a = seqs.offsets[s]
            ts[i, :p] = seqs.times[a : a + p]
        d = np.zeros((B, T), np.float32)
        d[:, 1:] = np.diff(ts, axis=1).astype(np.float32)
        d[:, 0] = np.inf
        d[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
        x["deltas"], sig["timestamps"] = d, ts
    if "values" in feats:
        v = rng.uniform(0.5, 1.5, (B, T)).astype(np.float32)
        v[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
        x["values"], sig["values"] = v, v
    if "user" in feats:
        u = rng.integers(0, data.num_users, B).astype(np.int32)
        x["user"] = u
        sig["user_id"] = np.array([(data.user_vocab.ids([j])[0] if j else "nobody").encode() for j in u], object)
    if "next_deltas" in features:  # the request time is unknown: the last session continues
        sig["query_timestamp"] = np.full(B, np.nan)
    return x, sig


def graph_ops(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    ops_ = set()
    for mg in sm.meta_graphs:
        ops_ |= {n.op for n in mg.graph_def.node}
        for fn in mg.graph_def.library.function:
            ops_ |= {n.op for n in fn.node_def}
    return ops_


ALL_MODELS = registry.names() + sorted(TINY_MODELS)


@pytest.fixture(scope="module")
def exports(data, gambler, tmp_path_factory):
    """Exports every registered model (and the tiny test models) once; cached per name.
    Models are built on the session simulation, or on the gambler simulation (which has
    user/item features and values) when they need features the former lacks."""
    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(name):
        if name not in cache:
            errors = []
            for ds in (data, gambler):
                try:
                    model = build(name, ds)
                    break
                except (ValueError, KeyError) as e:
                    errors.append(e)
            else:
                raise errors[0]
            path = export(model, str(root / name), data=ds, oov="pad")
            cache[name] = (model, path, ds)
        return cache[name]

    return get


# ------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", ALL_MODELS)
def test_export_scores_equal_model_scores(name, exports):
    model, path, data = exports(name)
    feats = tuple(getattr(model, "input_features", ("items",)))
    x, sig = history_batch(data, feats)
    want = np.asarray(model.score_prefix_batch(x), np.float32)
    loaded = tf.saved_model.load(path)
    tokens = np.array([t.encode() for t in data.item_vocab.tokens], object)
    cand = np.tile(tokens[None, :], (len(want), 1))
    got = loaded.signatures["score"](candidates=tf.constant(cand), **{k: tf.constant(v) for k, v in sig.items()})
    np.testing.assert_allclose(got["scores"].numpy(), want[:, 1:], rtol=1e-4, atol=1e-5)
    # recommend: top-k ids and scores agree with ranking the model's scores
    k = 5
    rec = loaded.signatures["serving_default"](
        k=tf.fill([len(want)], k), exclude_seen=tf.zeros([len(want)], tf.bool),
        **{kk: tf.constant(v) for kk, v in sig.items()})
    top = np.sort(want[:, 1:], axis=1)[:, ::-1][:, :k]
    np.testing.assert_allclose(rec["scores"].numpy(), top, rtol=1e-4, atol=1e-5)
    ids = rec["item_ids"].numpy()
    idx = np.array([[data.item_vocab.lookup([i.decode()])[0] for i in row] for row in ids])
    np.testing.assert_allclose(np.take_along_axis(want, idx, 1), top, rtol=1e-4, atol=1e-5)
    assert not (FORBIDDEN_OPS & graph_ops(path)), f"{name}: Python ops in the graph"


@pytest.mark.parametrize("name", ["hrnn", "hrnn_meta", "hnvm"])
def test_query_timestamp_is_the_models_query_gap(name, exports):
    """Models whose scores depend on the time from the last event to the request get it
    as ``query_timestamp``: the exported scores equal the model's with that gap as the
    last entry of its own ``next_deltas`` input."""
    model, path, data = exports(name)
    assert "next_deltas" in model.input_features
    x, sig = history_batch(data, model.input_features)
    B, T = x["items"].shape
    lengths = sig["lengths"]
    last_t = sig["timestamps"][np.arange(B), lengths - 1]
    gaps = np.where(np.arange(B) % 2 == 0, 10 * 86400.0, 60.0)  # a new session / the same one
    nd = np.zeros((B, T), np.float32)  # gap from each event to the next; the last: the query gap
    nd[:, :-1] = x["deltas"][:, 1:]
    nd[np.arange(B), lengths - 1] = gaps
    nd[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    want = np.asarray(model.score_prefix_batch({**x, "next_deltas": nd}), np.float32)
    at_gap_0 = np.asarray(model.score_prefix_batch(x), np.float32)
    assert np.abs(want - at_gap_0)[::2].max() > 1e-3  # the gap changes the scores

    m = tf.saved_model.load(path)
    tokens = np.array([t.encode() for t in data.item_vocab.tokens], object)
    inputs = {k: tf.constant(v) for k, v in dict(sig, query_timestamp=last_t + gaps).items()}
    got = m.signatures["score"](candidates=tf.constant(np.tile(tokens[None, :], (B, 1))), **inputs)
    np.testing.assert_allclose(got["scores"].numpy(), want[:, 1:], rtol=1e-4, atol=1e-5)
    rec = m.signatures["serving_default"](k=tf.fill([B], 5), exclude_seen=tf.zeros([B], tf.bool), **inputs)
    np.testing.assert_allclose(rec["scores"].numpy(), np.sort(want[:, 1:], 1)[:, ::-1][:, :5], rtol=1e-4,
                               atol=1e-5)
    rows = [sig["items"][i, : lengths[i]] for i in range(B)]
    rag = m.signatures["recommend_ragged"](
        item_values=tf.constant(np.concatenate(rows)), row_lengths=tf.constant(lengths),
        timestamp_values=tf.constant(np.concatenate([sig["timestamps"][i, : lengths[i]] for i in range(B)])),
        k=tf.fill([B], 5), exclude_seen=tf.zeros([B], tf.bool),
        **{k: inputs[k] for k in ("user_id", "query_timestamp") if k in inputs},
        **({"value_values": tf.constant(np.concatenate([sig["values"][i, : lengths[i]] for i in range(B)]))}
           if "values" in sig else {}))
    np.testing.assert_allclose(rag["scores"].numpy(), rec["scores"].numpy(), rtol=1e-5, atol=1e-6)
    early = dict(inputs, query_timestamp=tf.constant(last_t - 1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="query_timestamp must not precede the last"):
        m.signatures["serving_default"](k=tf.fill([B], 5), exclude_seen=tf.zeros([B], tf.bool), **early)
    too_long = dict(inputs, lengths=tf.constant(lengths + T))  # checked before the query gap reads it
    with pytest.raises(tf.errors.InvalidArgumentError, match="lengths must not exceed the padded history"):
        m.signatures["serving_default"](k=tf.fill([B], 5), exclude_seen=tf.zeros([B], tf.bool), **too_long)


@pytest.mark.parametrize("name", ["hrnn", "gru4rec"])
def test_export_after_fit_with_lane_state(name, data, tmp_path):
    """A model trained with replica-local lane state (the HRNN TBPTT carry, GRU4Rec's
    session-parallel lanes) exports, and the export scores equal the model's. Regression:
    SavedModel used to serialize the tracked Keras model's default signature, a trace of
    ``model(inputs)`` with the training inputs, which read the carry and failed to save."""
    keras.utils.set_random_seed(0)
    model = registry.build(name, data, **registry.get(name).test_config)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(data, epochs=1, verbose=0)
    assert lane_states(model), "the case needs a model with lane state"
    path = export(model, str(tmp_path / name), data=data, warmup=False)
    x, sig = history_batch(data, tuple(model.input_features), n=6, seed=3)
    want = np.asarray(model.score_prefix_batch(x), np.float32)[:, 1:]
    loaded = tf.saved_model.load(path)
    tokens = np.array([t.encode() for t in data.item_vocab.tokens], object)
    got = loaded.signatures["score"](candidates=tf.constant(np.tile(tokens[None, :], (len(want), 1))),
                                     **{k: tf.constant(v) for k, v in sig.items()})
    np.testing.assert_allclose(got["scores"].numpy(), want, rtol=1e-4, atol=1e-5)
    assert not hasattr(loaded, "model"), "the Keras model object is not part of the export"


@pytest.mark.parametrize("name", ["tiny_step_gru", "tiny_step_matrix", "tiny_window_mean", "itemknn",
                                  "hrnn", "hgru", "hrnn_meta"])
def test_step_signature_matches_replay(name, exports):
    """Advancing a session event by event through ``step`` gives the scores of replaying its
    history (recurrent protocol: exactly; window state: exactly while the history fits the window,
    then the model on the last ``window`` events)."""
    model, path, data = exports(name)
    feats = tuple(getattr(model, "input_features", ("items",)))
    loaded = tf.saved_model.load(path)
    info = json.load(open(os.path.join(path, "assets.extra", EXPORT_INFO)))
    window = int(info["step"].split(":")[1]) if info["step"].startswith("window") else None
    own_step = name.startswith("tiny_step") or name in ("hrnn", "hgru", "hrnn_meta")
    assert (window is None) == own_step
    rng = np.random.default_rng(3)
    L, B = 9, 3
    items = rng.integers(1, data.num_items, (B, L)).astype(np.int32)
    times = np.cumsum(rng.uniform(1, 5000, (B, L)), axis=1)
    values = rng.uniform(0.5, 1.5, (B, L)).astype(np.float32)
    users = rng.integers(1, data.num_users, B).astype(np.int32)
    raw = np.array([[t.encode() for t in data.item_vocab.ids(r)] for r in items], object)
    uid = np.array([t.encode() for t in data.user_vocab.ids(users)], object)
    state = loaded.signatures["initial_state"](sessions=tf.constant(np.array([b"a", b"b", b"c"], object)))
    K = data.num_items - 1
    tokens = np.array([t.encode() for t in data.item_vocab.tokens], object)
    for t in range(L):
        inp = {k: v for k, v in state.items() if k.startswith("state_")}
        inp.update(item=tf.constant(raw[:, t]), k=tf.fill([B], K))
        if "deltas" in feats:
            inp["timestamp"] = tf.constant(times[:, t])
        if "values" in feats:
            inp["value"] = tf.constant(values[:, t])
        if "user" in feats:
            inp["user_id"] = tf.constant(uid)
        state = loaded.signatures["step"](**inp)
        if window is None:  # the model's own state travels flat: [B, D] per tensor
            flat = {k: tuple(v.shape) for k, v in state.items() if k.startswith("state_") and k[6:].isdigit()}
            if name.startswith("tiny_step"):
                assert flat == {"state_0": (B, model.units)}, flat
            else:  # HRNN family: cell states, then the pending event (item, value)
                proto = tf.nest.flatten(model.initial_state(1))
                assert flat == {f"state_{i}": (B, int(np.prod(p.shape[1:]))) for i, p in enumerate(proto)}, flat
        a = 0 if window is None else max(0, t + 1 - window)
        x = {"items": items[:, a : t + 1]}
        if "deltas" in feats:
            d = np.zeros_like(times[:, a : t + 1], np.float32)
            d[:, 1:] = np.diff(times[:, a : t + 1], axis=1)
            d[:, 0] = np.inf
            x["deltas"] = d
        if "values" in feats:
            x["values"] = values[:, a : t + 1]
        if "user" in feats:
            x["user"] = users
        want = np.asarray(model.score_prefix_batch(x))
        # the step's top-K (K = all items) is the full ranking; compare scores by item id
        ids = state["item_ids"].numpy()
        got = np.full_like(want, np.nan)
        pos = {tok: i + 1 for i, tok in enumerate(tokens)}
        for b in range(B):
            for j, tok in enumerate(ids[b]):
                got[b, pos[tok]] = state["scores"].numpy()[b, j]
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-4, atol=1e-5, err_msg=f"step {t}")
    if window is not None:
        assert L > window or name == "itemknn"  # the window overflowed at least for the tiny model


@pytest.mark.parametrize("name", ["gru4rec_ce", "lstm4rec"])
def test_exported_rnn_step_equals_replaying_the_full_history(name, exports):
    """The ``step`` signature of an exported recurrent model uses the model's own O(1)
    state and gives, after every event, the top-K of replaying the whole history through
    ``serving_default`` of the same SavedModel (K = all items, so the full ranking)."""
    model, path, data = exports(name)
    info = json.load(open(os.path.join(path, "assets.extra", EXPORT_INFO)))
    assert info["step"] == "model"
    loaded = tf.saved_model.load(path)
    step_sig = loaded.signatures["step"]
    state_inputs = sorted(k for k in step_sig.structured_input_signature[1] if k.startswith("state_"))
    assert state_inputs == (["state_0", "state_1"] if name == "lstm4rec" else ["state_0"])
    rng = np.random.default_rng(5)
    B, L, K = 3, 12, data.num_items - 1
    items = rng.integers(1, data.num_items, (B, L)).astype(np.int32)
    raw = np.array([[t.encode() for t in data.item_vocab.ids(r)] for r in items], object)
    state = loaded.signatures["initial_state"](sessions=tf.constant(np.array([b"a", b"b", b"c"], object)))
    for t in range(L):
        prev = {k: state[k] for k in state_inputs}
        for v in prev.values():  # flat float state, [B, units]
            assert v.dtype == tf.float32 and tuple(v.shape) == (B, model.units)
        state = step_sig(item=tf.constant(raw[:, t]), k=tf.fill([B], K), **prev)
        rep = loaded.signatures["serving_default"](
            items=tf.constant(raw[:, : t + 1]), lengths=tf.fill([B], t + 1), k=tf.fill([B], K),
            exclude_seen=tf.zeros([B], tf.bool))
        for b in range(B):  # compare scores by item id (ties may order ids differently)
            got = dict(zip(state["item_ids"].numpy()[b], state["scores"].numpy()[b]))
            want = dict(zip(rep["item_ids"].numpy()[b], rep["scores"].numpy()[b]))
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} session {b} after {t + 1} events")
    # the state carries the history: a fresh session fed only the last item ranks differently
    fresh = loaded.signatures["initial_state"](sessions=tf.constant([b"z"]))
    one = step_sig(item=tf.constant(raw[:1, -1]), k=tf.constant([K]), **{k: fresh[k] for k in state_inputs})
    assert not np.allclose(one["scores"].numpy()[0], state["scores"].numpy()[0], atol=1e-4)
    # the server's runner takes the step (no control flow) on the single-threaded executor,
    # replay (a loop) on the default one; both give the public call's answer
    from tfrec.serving.server import SignatureRunner

    run = SignatureRunner(step_sig)
    assert run.single_threaded and not SignatureRunner(loaded.signatures["serving_default"]).single_threaded
    inp = {"item": raw[:, 0], "k": np.full(B, 5, np.int32), **{k: prev[k].numpy() for k in state_inputs}}
    want = step_sig(**{k: tf.constant(v) for k, v in inp.items()})
    got = run(inp)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v.numpy(), rtol=1e-6) if v.dtype != tf.string else \
            np.testing.assert_array_equal(got[k], v.numpy())


def test_step_mode(data, exports, tmp_path):
    """``step_mode="window"`` gives a recurrent model the generic window state instead of its
    own step; ``step_mode="model"`` refuses a model without one."""
    model, _, ds = exports("gru4rec_ce")
    path = export(model, str(tmp_path / "win"), data=ds, step_mode="window", step_window=4, warmup=False)
    info = json.load(open(os.path.join(path, "assets.extra", EXPORT_INFO)))
    assert info["step"] == "window:4"
    st = tf.saved_model.load(path).signatures["initial_state"](sessions=tf.constant([b"a"]))
    assert {"state_items", "state_length"} <= set(st) and tuple(st["state_items"].shape) == (1, 4)
    spop, _, ds2 = exports("spop")
    with pytest.raises(ValueError, match="no initial_state/step"):
        export(spop, str(tmp_path / "spop"), data=ds2, step_mode="model", warmup=False)
    with pytest.raises(ValueError, match="step_mode"):
        export(spop, str(tmp_path / "spop"), data=ds2, step_mode="fast", warmup=False)


def test_loads_in_fresh_process_without_tfrec(exports, tmp_path):
    """The SavedModels run in a Python process where importing tfrec is impossible."""
    neural = [n for n in registry.names() if registry.get(n).neural]
    names = ["itemknn", "tiny_step_gru", "tiny_window_mean"] + (
        ["gru4rec_ce"] if "gru4rec_ce" in neural else neural[:1])
    cases = {}
    for name in names:
        model, path, data = exports(name)
        x, sig = history_batch(data, tuple(getattr(model, "input_features", ("items",))), n=6, seed=7)
        np.savez(tmp_path / f"{name}.npz", **{k: v for k, v in sig.items()})
        tokens = np.array([t.encode() for t in data.item_vocab.tokens], object)
        np.save(tmp_path / f"{name}.npy", tokens, allow_pickle=True)
        cases[name] = (path, np.asarray(model.score_prefix_batch(x))[:, 1:])
    script = r'''
import sys, json, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tfrec" or name.startswith("tfrec."):
            raise ImportError("tfrec is blocked in this process")
sys.meta_path.insert(0, Block())
sys.path = [p for p in sys.path if "/work/main" not in p and p not in ("", ".")]
import numpy as np, tensorflow as tf
try:
    import tfrec  # noqa
    raise SystemExit("tfrec importable")
except ImportError:
    pass
cases = json.loads(sys.argv[1])
out = {}
for name, (path, npz, tok) in cases.items():
    sig = dict(np.load(npz, allow_pickle=True))
    tokens = np.load(tok, allow_pickle=True)
    m = tf.saved_model.load(path)
    cand = np.tile(tokens[None, :], (len(sig["lengths"]), 1))
    r = m.signatures["score"](candidates=tf.constant(cand), **{k: tf.constant(v) for k, v in sig.items()})
    out[name] = r["scores"].numpy().tolist()
print("RESULT" + json.dumps(out))
'''
    arg = json.dumps({n: [p, str(tmp_path / f"{n}.npz"), str(tmp_path / f"{n}.npy")]
                      for n, (p, _) in cases.items()})
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script, arg],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    got = json.loads(line[len("RESULT"):])
    for name, (_, want) in cases.items():
        np.testing.assert_allclose(np.array(got[name]), want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_saved_model_cli_run(exports):
    _, path, _ = exports("spop")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    expr = "items=[[b'1',b'2',b'']];lengths=[2];k=[3];exclude_seen=[True]"
    proc = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                           "serving_default", "--input_exprs", expr],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "item_ids" in proc.stdout and "scores" in proc.stdout
    assert "b'1'" not in proc.stdout.split("item_ids")[1].split("scores")[0]  # seen items excluded


def test_warmup_records_replay(exports):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path, _ = exports("tiny_window_mean")
    loaded = tf.saved_model.load(path)
    records = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", WARMUP_FILE)))
    sigs = set()
    for rec in records:
        entry = prediction_log_pb2.PredictionLog.FromString(rec.numpy())
        req = entry.predict_log.request
        assert req.model_spec.name
        fn = loaded.signatures[req.model_spec.signature_name]
        fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
        sigs.add(req.model_spec.signature_name)
    assert sigs == {"serving_default", "score", "step", "initial_state", "recommend_ragged"}


def test_ragged_signature_and_bad_inputs(exports):
    _, path, data = exports("spop")
    m = tf.saved_model.load(path)
    rag = m.signatures["recommend_ragged"](item_values=tf.constant([b"1", b"2", b"3"]),
                                           row_lengths=tf.constant([2, 1]), k=tf.constant([3, 3]),
                                           exclude_seen=tf.constant([False, False]))
    pad = m.signatures["serving_default"](items=tf.constant([[b"1", b"2"], [b"3", b"zzz"]]),
                                          lengths=tf.constant([2, 1]), k=tf.constant([3, 3]),
                                          exclude_seen=tf.constant([False, False]))
    np.testing.assert_array_equal(rag["item_ids"].numpy(), pad["item_ids"].numpy())
    # rows asking for fewer items are padded with "" / -inf
    r = m.signatures["serving_default"](items=tf.constant([[b"1"], [b"2"]]), lengths=tf.constant([1, 1]),
                                        k=tf.constant([1, 3]), exclude_seen=tf.constant([False, False]))
    assert r["item_ids"].numpy()[0, 1] == b"" and np.isneginf(r["scores"].numpy()[0, 1:]).all()
    ok = dict(items=tf.constant([[b"1"]]), lengths=tf.constant([1]), exclude_seen=tf.constant([False]))
    for bad_k in (0, data.num_items):
        with pytest.raises(tf.errors.InvalidArgumentError, match="k must be"):
            m.signatures["serving_default"](k=tf.constant([bad_k]), **ok)
    with pytest.raises(tf.errors.InvalidArgumentError, match="lengths"):
        m.signatures["serving_default"](items=tf.constant([[b"1"]]), lengths=tf.constant([2]),
                                        k=tf.constant([1]), exclude_seen=tf.constant([False]))


def test_oov_policies(data, exports, tmp_path):
    model, lax_path, _ = exports("spop")  # exported with oov="pad"
    strict = tf.saved_model.load(export(model, str(tmp_path / "strict"), data=data, oov="error", warmup=False))
    lax = tf.saved_model.load(lax_path)
    args = dict(items=tf.constant([[b"1", b"nope", b""]]), lengths=tf.constant([2]), k=tf.constant([2]),
                exclude_seen=tf.constant([False]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="nope"):
        strict.signatures["serving_default"](**args)
    got = lax.signatures["serving_default"](**args)["item_ids"].numpy()
    same = lax.signatures["serving_default"](items=tf.constant([[b"1"]]), lengths=tf.constant([1]),
                                             k=tf.constant([2]), exclude_seen=tf.constant([False]))
    np.testing.assert_array_equal(got, same["item_ids"].numpy())  # unknown id ignored like padding
    # padding beyond `lengths` is never looked up, even under "error"
    strict.signatures["serving_default"](items=tf.constant([[b"1", b"junk"]]), lengths=tf.constant([1]),
                                         k=tf.constant([2]), exclude_seen=tf.constant([False]))
    # the message lists exactly the unknown ids, in order, on every lookup path
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[nope nix\]") as err:
        strict.signatures["serving_default"](items=tf.constant([[b"1", b"nope"], [b"nix", b"1"]]),
                                             lengths=tf.constant([2, 2]), k=tf.constant([2, 2]),
                                             exclude_seen=tf.constant([False, False]))
    assert "unknown item id(s)" in str(err.value)
    state = strict.signatures["initial_state"](sessions=tf.constant([b"a", b"b"]))
    state = {k: v for k, v in state.items() if k.startswith("state_")}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\] \[gone\]"):
        strict.signatures["step"](**state, item=tf.constant([b"1", b"gone"]), k=tf.constant([2, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"unknown candidate id\(s\).*\] \[zz\]"):
        strict.signatures["score"](items=tf.constant([[b"1"]]), lengths=tf.constant([1]),
                                   candidates=tf.constant([[b"1", b"zz"]]))


def test_atomic_versions(data, tmp_path, monkeypatch):
    model = build("pop", data)
    base = tmp_path / "models" / "pop"
    p1 = export(model, str(base), data=data, warmup=False)
    assert os.path.basename(p1) == "1"
    assert export(model, str(base), version=7, data=data, warmup=False).endswith("7")
    with pytest.raises(FileExistsError):
        export(model, str(base), version=7, data=data)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", boom)
    with pytest.raises(RuntimeError):
        export(model, str(base), data=data)  # would be version 8
    assert existing_versions(str(base)) == [1, 7]
    assert sorted(os.listdir(base.parent)) == ["pop"]  # no temporary directory left behind


def test_cli_export_from_run_dir(tmp_path):
    from tfrec.cli import main
    from tfrec.data.specs import load_spec
    from tfrec.training.runs import train

    spec = "sim:sessions"
    run = tmp_path / "run"
    train("spop", load_spec(spec), out_dir=str(run), data_spec=spec, verbose=0, evaluate_test=False)
    assert main(["export", str(run), str(tmp_path / "sm"), "--version", "3"]) == 0
    path = tmp_path / "sm" / "3"
    info = json.load(open(path / "assets.extra" / EXPORT_INFO))
    assert info["model"] == "spop"
    m = tf.saved_model.load(str(path))
    out = m.signatures["serving_default"](items=tf.constant([[b"1"]]), lengths=tf.constant([1]),
                                          k=tf.constant([2]), exclude_seen=tf.constant([False]))
    assert out["item_ids"].numpy()[0, 0] == b"1"  # S-POP ranks the history's item first


@pytest.mark.parametrize("name", ["gru4rec_ce", "hrnn"])
def test_tf1_session_loader_equals_tf2_load(name, exports):
    """TF Serving and ``saved_model_cli run`` load a SavedModel the TF1 way (restore the
    checkpoint into the MetaGraph's variables, then run the signature's tensors in a
    session). Keras models' variables must be restored there too (Keras 3's variable
    wrappers used to be saved as a second, never-read copy: "Could not find variable"),
    and every signature must give what ``tf.saved_model.load`` gives."""
    from tfrec.serving.server import SignatureRunner

    model, path, ds = exports(name)
    x, sig = history_batch(ds, getattr(model, "input_features", ("items",)), n=4)
    inputs = {"serving_default": dict(sig, k=np.full(len(sig["lengths"]), 5, np.int32),
                                      exclude_seen=np.zeros(len(sig["lengths"]), bool))}
    loaded = tf.saved_model.load(path)
    state = SignatureRunner(loaded.signatures["initial_state"])({"sessions": np.array([b"a", b"b"], object)})
    step = dict(state, item=sig["items"][:2, 0], k=np.array([3, 3], np.int32))
    if "timestamps" in sig:
        step["timestamp"] = sig["timestamps"][:2, 0]
    if "values" in sig:
        step["value"] = sig["values"][:2, 0]
    if "user_id" in sig:
        step["user_id"] = sig["user_id"][:2]
    inputs["step"] = step
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        for signame, inp in inputs.items():
            sd = meta.signature_def[signame]
            got = sess.run({k: v.name for k, v in sd.outputs.items()},
                           {sd.inputs[k].name: v for k, v in inp.items()})
            want = SignatureRunner(loaded.signatures[signame])(inp)
            assert set(got) == set(want)
            for k in want:
                if want[k].dtype == object:
                    np.testing.assert_array_equal(got[k], want[k], err_msg=f"{signame}/{k}")
                else:
                    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{signame}/{k}")
