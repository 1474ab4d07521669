"""GRU4Rec: session-parallel state resets, evaluation resets, AdagradM, and the
prefix-parallel == prefix-augmented loss identity of the causal models."""

import numpy as np
import pytest

import keras
from keras import ops

from tfrec.data import SequenceSet
from tfrec.data.pipelines import Batcher, session_parallel_batches
from tfrec.models.base import masked_sparse_ce
from tfrec.models.narm import NARM
from tfrec.models.gru4rec import (
    AdagradM, GRU4Rec, GRU4RecCE, LSTM4Rec, bpr_max_session_loss_t, num_session_steps_bound, session_step_dataset,
)

SEQS = SequenceSet.from_lists([[1, 2, 3, 4, 5], [6, 7], [2, 8, 9], [3, 3, 4, 1], [5, 9]])


def _model(**kw):
    cfg = dict(num_items=10, units=6, n_sample=0, batch_size=2, seed=1, loss="bpr_max")
    cfg.update(kw)
    m = GRU4Rec(**cfg)
    m.build()
    return m


def _expected_states(model, steps, late=False, no_reset=False):
    """Reference hidden state per step and lane: the GRU run from a zero state over
    the lane's current sequence (variants: reset one step late / never)."""
    hist = [[] for _ in range(model.batch_size)]
    out = []
    for k, (inp, tgt, reset, valid) in enumerate(steps):
        row = []
        for lane in range(model.batch_size):
            if reset[lane] and not late and not no_reset:
                hist[lane] = []
            if late and k > 0 and steps[k - 1][2][lane]:
                hist[lane] = []
            hist[lane].append(int(inp[lane]))
            h = model.encode_sequence({"items": np.array([hist[lane]], "int32")})
            row.append(ops.convert_to_numpy(h)[0, -1])
        out.append(np.stack(row))
    return out


def test_train_step_zeroes_state_exactly_at_session_starts():
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # weights fixed: the state is what changes
    steps = list(session_parallel_batches(SEQS, 2))
    assert any(s[2][1] and k > 0 for k, s in enumerate(steps))  # a mid-stream reset exists
    want = _expected_states(model, steps)
    late = _expected_states(model, steps, late=True)
    never = _expected_states(model, steps, no_reset=True)
    got = []
    for inp, tgt, reset, valid in steps:
        model.train_step({"items": ops.convert_to_tensor(inp), "targets": ops.convert_to_tensor(tgt),
                          "reset": ops.convert_to_tensor(reset), "valid": ops.convert_to_tensor(valid)})
        got.append(model.session_state.numpy())
    for k, (inp, tgt, reset, valid) in enumerate(steps):
        np.testing.assert_allclose(got[k][valid], want[k][valid], rtol=1e-5, atol=1e-6)
    # the reference is sensitive to the bugs the test must rule out
    assert max(np.abs(w - x).max() for w, x in zip(want, late)) > 1e-3
    assert max(np.abs(w - x).max() for w, x in zip(want, never)) > 1e-3


def test_evaluation_resets_state_per_sequence():
    model = _model()
    # session-parallel scoring with resets == whole-sequence scoring from a zero state
    sp_scores, sp_targets = model.session_parallel_scores(SEQS, batch_size=2)
    b = Batcher(SEQS)
    x, y = b.sequence_batch(np.arange(len(SEQS)))
    seq_scores = model.score_sequence_batch(x)
    # replay the lane assignment (sequences are taken in order, lanes in order)
    lane_seq, lane_pos, nxt, want = [-1, -1], [0, 0], 0, []
    for inp, tgt, reset, valid in session_parallel_batches(SEQS, 2):
        for lane in range(2):
            if reset[lane]:
                lane_seq[lane], lane_pos[lane], nxt = nxt, 0, nxt + 1
        for lane in range(2):
            if valid[lane]:
                assert y[lane_seq[lane], lane_pos[lane]] == tgt[lane]
                want.append(seq_scores[lane_seq[lane], lane_pos[lane]])
                lane_pos[lane] += 1
    np.testing.assert_allclose(sp_scores, np.stack(want), rtol=1e-5, atol=1e-5)
    # a sequence's scores do not depend on the sequences batched with it
    alone = model.score_sequence_batch({"items": x["items"][1:2, :1]})
    np.testing.assert_allclose(alone[0, 0], seq_scores[1, 0], rtol=1e-5, atol=1e-6)


def test_session_step_dataset_has_fixed_length_and_padding_steps_are_skipped():
    n = num_session_steps_bound(SEQS, 2)
    ds = session_step_dataset(SEQS, 2, seed=0)
    for _ in range(2):  # two epochs with different shuffles: same length
        steps = list(ds.as_numpy_iterator())
        assert len(steps) == n
        assert not steps[-1]["valid"].any()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [w.copy() for w in model.get_weights()]
    z = np.zeros(2, "int32")
    model.train_step({"items": z, "targets": z, "reset": np.zeros(2, bool), "valid": np.zeros(2, bool)})
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------- fast training path
_RNG = np.random.default_rng(0)
FAST_SEQS = SequenceSet.from_lists([list(_RNG.integers(1, 10, _RNG.integers(2, 7))) for _ in range(12)])


def _train(epochs=2, **kw):
    cfg = dict(num_items=10, units=6, batch_size=3, seed=1, loss="bpr_max", n_sample=4, elu_param=0.5,
               bpreg=1.0, dropout_embed=0.0, dropout_hidden=0.0)
    cfg.update(kw)
    keras.utils.set_random_seed(0)
    m = GRU4Rec(**cfg)
    m.compile(optimizer=AdagradM(0.1, momentum=0.4))
    m.set_sampler(FAST_SEQS.item_counts(10))
    hist = keras.Model.fit(m, m.make_dataset(FAST_SEQS), epochs=epochs, verbose=0)
    return hist.history["loss"], m.get_weights(), m


@pytest.mark.parametrize("n_sample", [4, 16])  # 16: B + n_sample >= num_items -> dense scoring
def test_chunked_xla_training_equals_step_by_step_training(n_sample):
    # reference: one session-parallel step per dataset element, no XLA
    loss0, w0, ref = _train(n_sample=n_sample, session_chunk=1, jit_step=False)
    assert ref.dense_scoring == (n_sample == 16)
    loss1, w1, fast = _train(n_sample=n_sample, session_chunk=4, jit_step=True)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    for a, b in zip(w1, w0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fast.optimizer.iterations.numpy() == ref.optimizer.iterations.numpy() > 0  # padding skipped alike
    if n_sample != 4:
        return
    # with dropout (XLA draws its own masks): chunks of steps == one step per element
    loss2, w2, _ = _train(n_sample=n_sample, session_chunk=1, jit_step=True, dropout_embed=0.3, dropout_hidden=0.1)
    loss3, w3, _ = _train(n_sample=n_sample, session_chunk=5, jit_step=True, dropout_embed=0.3, dropout_hidden=0.1)
    np.testing.assert_allclose(loss3, loss2, rtol=1e-6)
    for a, b in zip(w3, w2):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_dense_scoring_equals_sparse_scoring(monkeypatch):
    loss0, w0, m = _train(n_sample=16, session_chunk=1, jit_step=False)
    assert m.dense_scoring
    monkeypatch.setattr(GRU4Rec, "dense_scoring", property(lambda self: False))
    loss1, w1, m1 = _train(n_sample=16, session_chunk=1, jit_step=False)
    assert not m1.dense_scoring
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    for a, b in zip(w1, w0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_transposed_dense_bpr_max_equals_the_shared_loss_and_its_gradient():
    # the dense training step's transposed layout: same scores, loss and gradients
    import tensorflow as tf

    from tfrec import losses as L

    rng = np.random.default_rng(3)
    B, S = 5, 7
    scores = tf.constant(rng.normal(size=(B, B + S)).astype("float32") * 3)
    valid = tf.constant([True, False, True, True, False])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(scores)
        ref = L.session_loss("bpr_max", scores, valid, S, 1.95)
        got = bpr_max_session_loss_t(tf.transpose(scores), valid, S, 1.95)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(got, scores).numpy(), tape.gradient(ref, scores).numpy(),
                               rtol=1e-5, atol=1e-7)
    # an invalid lane's target column is no negative of anyone: changing it changes nothing
    bumped = scores.numpy()
    bumped[:, 1] += 5.0
    np.testing.assert_allclose(float(bpr_max_session_loss_t(bumped.T, valid, S, 1.95)), float(got), rtol=1e-6)
    m = _model(n_sample=0, batch_size=3, elu_param=0.5)
    out = tf.constant(rng.normal(size=(3, 6)).astype("float32"))
    tg, smp = tf.constant([1, 4, 4]), tf.constant([2, 9, 1, 1])
    np.testing.assert_allclose(m.sampled_scores_dense_t(out, tg, smp).numpy().T,
                               m.sampled_scores(out, tg, smp).numpy(), rtol=1e-5, atol=1e-6)


def test_adagradm_dense_gradient_with_touched_rows_equals_sparse_gradient():
    import tensorflow as tf

    init = np.arange(8, dtype="float32").reshape(4, 2) / 8
    grads = [tf.IndexedSlices(tf.constant([[1.0, 2.0], [0.0, 0.0]]), tf.constant([0, 2]), tf.constant([4, 2])),
             tf.IndexedSlices(tf.constant([[0.5, -1.0]]), tf.constant([1]), tf.constant([4, 2]))]
    sparse, dense = keras.Variable(init.copy()), keras.Variable(init.copy())
    o1, o2 = AdagradM(0.1, momentum=0.4), AdagradM(0.1, momentum=0.4)
    for g in grads:
        o1.apply_gradients([(g, sparse)])
        touched = tf.math.unsorted_segment_max(tf.ones_like(g.indices), g.indices, 4) > 0
        o2.apply_gradients_with_rows([(tf.convert_to_tensor(g), dense)], [(dense, touched)])
    np.testing.assert_allclose(ops.convert_to_numpy(dense), ops.convert_to_numpy(sparse), rtol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(dense)[3], init[3])  # never touched
    # row 2 (touched with a zero gradient in step 1) got momentum in step 1 only as a touched row
    assert not np.allclose(ops.convert_to_numpy(dense)[0], init[0])


def test_adagradm_matches_hand_computation():
    v = keras.Variable(np.array([1.0, 2.0], "float32"))
    opt = AdagradM(learning_rate=0.1, momentum=0.4, epsilon=1e-6)
    g1, g2 = np.array([0.5, -1.0], "float32"), np.array([0.2, 0.3], "float32")
    opt.apply_gradients([(ops.convert_to_tensor(g1), v)])
    opt.apply_gradients([(ops.convert_to_tensor(g2), v)])
    acc1 = g1**2
    m1 = -0.1 * g1 / np.sqrt(acc1 + 1e-6)
    acc2 = acc1 + g2**2
    m2 = 0.4 * m1 - 0.1 * g2 / np.sqrt(acc2 + 1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(v), np.array([1.0, 2.0]) + m1 + m2, rtol=1e-5)


def test_adagradm_updates_only_touched_embedding_rows():
    import tensorflow as tf

    v = keras.Variable(np.ones((3, 2), "float32"))
    opt = AdagradM(learning_rate=0.1, momentum=0.4)
    opt.apply_gradients([(tf.IndexedSlices(tf.ones((2, 2)), tf.constant([0, 1])), v)])
    after1 = ops.convert_to_numpy(v).copy()
    opt.apply_gradients([(tf.IndexedSlices(tf.ones((1, 2)), tf.constant([0])), v)])
    after2 = ops.convert_to_numpy(v)
    np.testing.assert_array_equal(after1[2], [1.0, 1.0])  # never touched
    np.testing.assert_array_equal(after2[1], after1[1])  # momentum not applied to untouched row
    assert np.all(after2[0] < after1[0])


def _loss_both_layouts(model):
    b = Batcher(SEQS)
    xs, ys = b.sequence_batch(np.arange(len(SEQS)))
    seq_loss = float(masked_sparse_ce(ys, model.sequence_logits(xs)))
    s_idx, pos = SEQS.target_index()
    xp, yp = b.prefix_batch(s_idx, pos)
    prefix_loss = float(masked_sparse_ce(yp, model.prefix_logits(xp)))
    return seq_loss, prefix_loss


@pytest.mark.parametrize("cls,kw", [(GRU4RecCE, {"embedding_dim": 5, "units": 6}),
                                    (LSTM4Rec, {"embedding_dim": 5, "units": 6}),
                                    (GRU4Rec, {"units": 6, "loss": "cross_entropy"}),
                                    (NARM, {"embedding_dim": 5, "units": 6})])
def test_prefix_parallel_loss_equals_prefix_augmented_loss(cls, kw):
    model = cls(num_items=10, layout="sequence", seed=3, **kw)
    a, b = _loss_both_layouts(model)
    assert a == pytest.approx(b, rel=1e-5)
    assert a > 0


def test_table_gru_uses_tf1_gru_semantics():
    m = GRU4RecCE(num_items=10, embedding_dim=4, units=3)
    m.score_prefix_batch({"items": np.array([[1, 2]])})
    assert m.rnn.cell.reset_after is False
    bias = ops.convert_to_numpy(m.rnn.cell.bias)
    np.testing.assert_array_equal(bias, [1, 1, 1, 1, 1, 1, 0, 0, 0])


def test_target_normalizer_divides_summed_loss_by_a_constant():
    b = Batcher(SEQS)
    xs, ys = b.sequence_batch(np.arange(len(SEQS)))
    n = int((ys != 0).sum())
    plain = GRU4RecCE(num_items=10, embedding_dim=4, units=4, layout="sequence", seed=2)
    fixed = GRU4RecCE(num_items=10, embedding_dim=4, units=4, layout="sequence", seed=2,
                      target_normalizer=2 * n)
    logits = plain.sequence_logits(xs)
    a = float(plain.compute_loss(y=ys, y_pred=logits))
    c = float(fixed.compute_loss(y=ys, y_pred=logits))
    assert c == pytest.approx(a / 2, rel=1e-5)
    assert fixed.get_config()["target_normalizer"] == 2 * n


# ------------------------------------------------------------ O(1) serving step
STEP_MODELS = {
    "gru4rec_ce": lambda: GRU4RecCE(num_items=10, embedding_dim=5, units=6, seed=1),
    "lstm4rec": lambda: LSTM4Rec(num_items=10, embedding_dim=5, units=6, seed=1),
    "gru4rec": lambda: GRU4Rec(num_items=10, units=6, batch_size=2, seed=1),
}


@pytest.mark.parametrize("name", sorted(STEP_MODELS))
def test_step_from_initial_state_equals_scoring_the_prefix(name):
    model = STEP_MODELS[name]()
    rng = np.random.default_rng(0)
    items = rng.integers(1, 10, (3, 6)).astype("int32")
    model.score_prefix_batch({"items": items[:, :1]})  # builds lazily created weights
    state = model.initial_state(3)
    assert all(tuple(s.shape) == (3, model.units) for s in state)
    assert len(state) == (2 if name == "lstm4rec" else 1)
    for t in range(items.shape[1]):
        logits, state = model.step(state, {"items": ops.convert_to_tensor(items[:, t])})
        want = model.score_prefix_batch({"items": items[:, : t + 1]})
        np.testing.assert_allclose(ops.convert_to_numpy(logits), want, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name} step {t}")
    # the state carries the history: the last scores differ from a one-item history
    one = model.score_prefix_batch({"items": items[:, -1:]})
    assert np.abs(ops.convert_to_numpy(logits) - one).max() > 1e-4


@pytest.mark.parametrize("name", sorted(STEP_MODELS))
def test_exported_step_signature_is_o1_and_matches_prefix_scores(name, tmp_path):
    import json
    import os

    import tensorflow as tf

    from tfrec.data import simulate_sessions
    from tfrec.models import registry
    from tfrec.savedmodels import export
    from tfrec.savedmodels.export import EXPORT_INFO

    data = simulate_sessions(num_users=40, seed=0)
    keras.utils.set_random_seed(0)
    model = registry.build(name, data, **registry.get(name).test_config)
    path = export(model, str(tmp_path / name), data=data, warmup=False)
    info = json.load(open(os.path.join(path, "assets.extra", EXPORT_INFO)))
    assert info["step"] == "model"  # the model's own step, not the window replay
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(1)
    B, T, K = 3, 5, data.num_items - 1
    items = rng.integers(1, data.num_items, (B, T)).astype("int32")
    raw = np.array([[t.encode() for t in data.item_vocab.ids(r)] for r in items], object)
    pos = {tok.encode(): i + 1 for i, tok in enumerate(data.item_vocab.tokens)}  # 0 = padding
    state = loaded.signatures["initial_state"](sessions=tf.constant(np.array([b"a", b"b", b"c"], object)))
    names = sorted(k for k in state if k.startswith("state_"))
    assert len(names) == (2 if name == "lstm4rec" else 1)
    for t in range(T):
        inp = {k: state[k] for k in names}
        state = loaded.signatures["step"](item=tf.constant(raw[:, t]), k=tf.fill([B], K), **inp)
        want = model.score_prefix_batch({"items": items[:, : t + 1]})
        got = np.full_like(want, np.nan)
        ids, scores = state["item_ids"].numpy(), state["scores"].numpy()
        for b in range(B):
            for j, tok in enumerate(ids[b]):
                got[b, pos[tok]] = scores[b, j]
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-5, atol=1e-5, err_msg=f"step {t}")


# ------------------------------------------------- replica-aware lanes (2 replicas)
MIRRORED_SCRIPT = r'''
import dataclasses, json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from tfrec.data import SequenceSet, simulate_sessions
from tfrec.data.pipelines import session_parallel_batches
from tfrec.models.gru4rec import AdagradM, GRU4Rec

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}

def make(strategy, num_items, lr=0.1, **kw):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        m = GRU4Rec(num_items=num_items, units=6, batch_size=4, seed=1, loss="bpr_max", n_sample=5, bpreg=1.0, **kw)
        m.compile(optimizer=AdagradM(lr, momentum=0.4))
        m.optimizer.build(m.trainable_variables)
    return m

# 1. the lanes of each replica reset exactly at their session boundaries (weights fixed)
rng = np.random.default_rng(0)
SEQS = SequenceSet.from_lists([list(rng.integers(1, 12, rng.integers(2, 8))) for _ in range(24)])
m = make(mirrored, 12, lr=0.0)
m.set_sampler(SEQS.item_counts(12))
out["lanes_per_replica"] = m.session_state.per_replica_batch_size
step = tf.function(lambda batch: mirrored.run(m.train_step, args=(batch,)))
states = []
for batch in mirrored.experimental_distribute_dataset(m.make_dataset(SEQS, shuffle=False)):
    step(batch)
    states.append(m.session_state.numpy())  # global view: replica 0's lanes, then replica 1's
steps = list(session_parallel_batches(SEQS, 4))

def expected(late):
    # the GRU run from a zero state over each lane's history (all in one batched call)
    hist, rows = [[] for _ in range(4)], []
    for k, (inp, tgt, reset, valid) in enumerate(steps):
        for lane in range(4):
            if (late and k > 0 and steps[k - 1][2][lane]) or (not late and reset[lane]):
                hist[lane] = []
            hist[lane].append(int(inp[lane]))
            rows.append(list(hist[lane]) if valid[lane] else [])
    T = max(len(r) for r in rows)
    x = np.array([r + [1] * (T - len(r)) for r in rows], "int32")
    h = m.encode_sequence({"items": x}).numpy()
    last = np.stack([h[i, len(r) - 1] if r else np.zeros(h.shape[-1], "float32") for i, r in enumerate(rows)])
    return list(last.reshape(len(steps), 4, -1))

want, late = expected(False), expected(True)
out["state_err"] = max(float(np.abs(states[k] - want[k]).max()) for k in range(len(steps)))
out["late_gap"] = max(float(np.abs(want[k] - late[k]).max()) for k in range(len(steps)))
out["mid_stream_resets"] = [int(sum(s[2][2 * r:2 * r + 2].sum() for s in steps[1:])) for r in range(2)]
out["padding_states_zero"] = bool(all(np.all(s == 0) for s in states[len(steps):]))

# 2. fit: 2 replicas vs one device (the fast chunked XLA path), same data and seed, no dropout
data = simulate_sessions(num_users=40, seed=0)
data = dataclasses.replace(data, valid=data.valid.subset(np.arange(0)))

def train(strategy):
    m = make(strategy, data.num_items)
    h = m.fit(data, epochs=2, verbose=0)
    return h.history["loss"], m.get_weights(), int(m.optimizer.iterations.numpy())

l1, w1, it1 = train(tf.distribute.get_strategy())
l2, w2, it2 = train(mirrored)
out.update(single=l1, mirrored=l2, iterations=[it1, it2],
           weight_err=max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)))
print("RESULT " + json.dumps(out), flush=True)
'''


def test_lanes_are_replica_local_and_mirrored_training_follows_one_device(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "mirrored_gru4rec.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    rows = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert rows, p.stderr[-3000:]
    r = rows[0]
    assert r["lanes_per_replica"] == 2
    assert min(r["mid_stream_resets"]) > 0  # both replicas' lanes restart mid-stream
    assert r["state_err"] < 1e-5  # each replica's lanes reset exactly at their boundaries
    assert r["late_gap"] > 1e-3  # (a reset one step late would be caught)
    assert r["padding_states_zero"]
    assert r["iterations"][0] == r["iterations"][1] > 0  # the same real steps, padding skipped
    np.testing.assert_allclose(r["mirrored"], r["single"], rtol=1e-4)
    assert r["weight_err"] < 1e-4
