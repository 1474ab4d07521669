"""HRNN-meta: levels, control input, FM decoder with lambda mixing, cold start, TBPTT, HGRU."""

import dataclasses
import os

import keras
import numpy as np
import pytest

from tfrec.data import SequenceDataset, SequenceSet, Vocabulary
from tfrec.data.schema import empty_sequence_set
from tfrec.data.pipelines import Batcher
from tfrec.data.sessionize import hierarchy_levels
from tfrec.data.tbptt import build_stream, padded_stream_batch, tbptt_batches, tbptt_layout
from tfrec.layers import FeatureMixDecoder, HGRUCell, HierarchyLevel, HRNNMetaCell, TemporalConvStack
from tfrec.models import registry
from tfrec.models.hrnn_meta import (
    HRNNMeta, RollingAverageRating, recommend_at, stream_evaluate,
)

TINY = {"embedding_dim": 8, "hidden": 8, "lanes": 2, "chunk": 4, "control_dim": 4}


def toy_dataset(n_seq=40, num_items=12, seed=0, with_features=True):
    """Sequences with times (sessions a day apart), ratings and users."""
    rng = np.random.default_rng(seed)
    seqs, times, values = [], [], []
    for _ in range(n_seq):
        L = int(rng.integers(3, 9))
        seqs.append(rng.integers(1, num_items, size=L).tolist())
        gaps = rng.choice([5.0, 200.0, 7200.0, 2 * 86400.0], size=L)
        times.append(np.cumsum(gaps).tolist())
        values.append(rng.integers(1, 6, size=L).astype(float).tolist())
    s = SequenceSet.from_lists(seqs, times=times, values=values, users=np.arange(1, n_seq + 1))
    vocab = Vocabulary([str(i) for i in range(1, num_items)])
    ds = SequenceDataset(s, s, s, item_vocab=vocab, user_vocab=Vocabulary([f"u{i}" for i in range(1, n_seq + 1)]))
    if with_features:
        ds.item_features["group"] = np.eye(3, dtype=np.float32)[np.arange(num_items) % 3]
        ds.user_features["kind"] = (np.arange(n_seq + 1) % 4).astype(np.int32)
    return ds


# --------------------------------------------------------------------------- levels
def test_level_layer_matches_foundation_levels():
    d = np.array([np.inf, 0.0, 5.0, 59.999, 60.0, 61.0, 3599.0, 3600.0, 86399.0, 86400.0, 1e9], np.float32)
    got = keras.ops.convert_to_numpy(HierarchyLevel()(d))
    assert got.tolist() == hierarchy_levels(d).tolist()
    assert got.tolist() == [4, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    custom = HierarchyLevel([10.0, 100.0])
    assert custom.num_levels == 4
    assert keras.ops.convert_to_numpy(custom(np.array([np.inf, 9.0, 10.0, 500.0]))).tolist() == [3, 0, 1, 2]
    with pytest.raises(ValueError):
        HierarchyLevel([10.0, 5.0])


def test_next_deltas_pipeline_feature():
    s = SequenceSet.from_lists([[1, 2, 3], [4, 5]], times=[[0, 10, 100], [0, 5]])
    b = Batcher(s, ("next_deltas",))
    x, y = b.prefix_batch(np.array([0, 0, 1]), np.array([1, 2, 1]))
    # the last history entry holds the gap to the target (the query time)
    assert x["next_deltas"].tolist() == [[10, 0], [10, 90], [5, 0]]
    x, y = b.sequence_batch(np.array([0, 1]))
    assert x["next_deltas"].tolist() == [[10, 90], [5, 0]]


# --------------------------------------------------------------------------- streams / TBPTT data
def test_stream_has_bos_step_and_first_targets():
    s = SequenceSet.from_lists([[3, 4, 5], [6, 7]], times=[[0, 10, 5000], [0, 1]], values=[[1, 2, 3], [4, 5]],
                               target_start=[1, 2])
    st = build_stream(s, bos=9)
    assert st.items.tolist() == [9, 3, 4, 9, 6]
    assert st.deltas[[0, 3]].tolist() == [np.inf, np.inf]
    assert st.values.tolist() == [0, 1, 2, 0, 4]
    # sequence 0 (target_start 1): first item is a target; sequence 1 (target_start 2): only position 2+
    assert st.targets.tolist() == [3, 4, 5, 0, 0]
    assert build_stream(s, 9, first_targets=False).targets.tolist() == [0, 4, 5, 0, 0]


def test_tbptt_layout_covers_every_step_once():
    ds = toy_dataset()
    st = build_stream(ds.train, bos=ds.num_items)
    idx, valid = tbptt_layout(st, lanes=3, chunk=5, shuffle=True, seed=1)
    assert idx.shape[1] % 5 == 0
    assert sorted(idx[valid].tolist()) == list(range(st.num_steps))
    n = 0
    for c, (x, y) in enumerate(tbptt_batches(st, 3, 5, shuffle=True, seed=1)):
        assert x["s_items"].shape == (3, 5) and x["reset"].tolist() == [c == 0] * 3
        n += int((y["items"] != 0).sum())
    assert n == int((st.targets != 0).sum())


# --------------------------------------------------------------------------- TBPTT equivalence
@pytest.mark.parametrize("cell", ["gru", "lstm", "hgru"])
def test_tbptt_chunks_equal_unchunked_forward(cell):
    ds = toy_dataset()
    model = registry.build("hrnn_meta" if cell != "hgru" else "hgru", ds, cell=cell, **TINY)
    st = build_stream(ds.train, bos=model.bos)
    x, _ = padded_stream_batch(st, np.array([0, 1]))
    S = x["s_items"].shape[1]
    cut = S // 2
    full = model.predict_stream(x)["logits"]
    parts = []
    for k, sl in enumerate([slice(0, cut), slice(cut, S)]):
        xc = {key: keras.ops.convert_to_tensor(v[:, sl]) for key, v in x.items()}
        xc["reset"] = keras.ops.convert_to_tensor(np.full(2, k == 0))
        parts.append(keras.ops.convert_to_numpy(model(xc, training=False)["logits"]))
    np.testing.assert_allclose(np.concatenate(parts, 1), full, rtol=1e-4, atol=1e-4)
    # the carry really matters: restarting the second chunk from zeros changes it
    xc = {key: keras.ops.convert_to_tensor(v[:, cut:]) for key, v in x.items()}
    xc["reset"] = keras.ops.convert_to_tensor(np.full(2, True))
    restarted = keras.ops.convert_to_numpy(model(xc, training=False)["logits"])
    assert not np.allclose(restarted, full[:, cut:], atol=1e-4)


def test_sequence_logits_equal_stream_logits_without_bos_step():
    ds = toy_dataset()
    model = registry.build("hrnn_meta", ds, **TINY)
    b = Batcher(ds.test, model.input_features)
    x, y = b.sequence_batch(np.array([0, 1, 2]))
    seq = model.score_sequence_batch(x)
    st = build_stream(ds.test, bos=model.bos)
    xs, ys = padded_stream_batch(st, np.array([0, 1, 2]))
    stream = model.predict_stream(xs)["logits"]
    T = seq.shape[1]
    mask = y != 0
    np.testing.assert_allclose(seq[mask], stream[:, 1:T + 1][mask], rtol=1e-4, atol=1e-4)
    # prefix scoring (history + query gap) equals the sequence scores at the same position
    xp, yp = b.prefix_batch(np.array([1]), np.array([3]))
    np.testing.assert_allclose(model.score_prefix_batch(xp)[0], seq[1, 2], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- control input
def test_control_embedding_changes_predictions_and_rnn_ignores_time():
    ds = toy_dataset()
    hrnn = registry.build("hrnn", ds, **TINY)
    rnn = registry.build("rnn", ds, **TINY)
    # make the control embedding clearly non-trivial
    emb = hrnn.cell.control_embedding
    emb.build((None,))
    emb.embeddings.assign(np.random.default_rng(0).normal(0, 1, emb.embeddings.shape))
    hist, times = [1, 2, 3], [0.0, 10.0, 20.0]
    x0 = {"items": np.array([hist], np.int32), "next_deltas": np.array([[10, 10, 0]], np.float32)}
    x1 = {"items": np.array([hist], np.int32), "next_deltas": np.array([[10, 10, 86400 * 3]], np.float32)}
    assert not np.allclose(hrnn.score_prefix_batch(x0), hrnn.score_prefix_batch(x1), atol=1e-5)
    assert "next_deltas" not in rnn.input_features
    np.testing.assert_allclose(rnn.score_prefix_batch(x0), rnn.score_prefix_batch(x1))
    # query-time API: the same history at different gaps
    a = hrnn.score_prefix_batch(x0)[0]
    top0 = recommend_at(hrnn, hist, 0.0, times=times, k=5)
    assert top0.tolist() == np.argsort(-np.where(np.arange(len(a)) == 0, -np.inf, a), kind="stable")[:5].tolist()


def test_hrnn_meta_cell_wraps_any_cell():
    for inner in (keras.layers.GRUCell(6), keras.layers.LSTMCell(6), keras.layers.SimpleRNNCell(6)):
        cell = HRNNMetaCell(inner, item_dim=4, num_levels=5, user_dim=3, feedback=True)
        rnn = keras.layers.RNN(cell, return_sequences=True)
        x = HRNNMetaCell.pack(np.zeros((2, 3, 4)), np.array([[4, 0, 2], [4, 1, 3]]), np.ones((2, 3, 3)),
                              np.zeros((2, 3)))
        assert x.shape[-1] == cell.packed_dim == 9
        assert rnn(x).shape == (2, 3, 6)
        clone = HRNNMetaCell.from_config(cell.get_config())
        assert type(clone.cell) is type(inner) and clone.embedded_dim == cell.embedded_dim


def test_hgru_resets_session_state_at_session_starts():
    cell = HGRUCell(4, item_dim=3)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    rng = np.random.default_rng(0)
    e = rng.normal(size=(1, 4, 3)).astype("float32")
    same = HRNNMetaCell.pack(e, np.array([[4, 0, 0, 0]]))
    other = HRNNMetaCell.pack(e, np.array([[4, 0, 3, 0]]))  # a new session after step 2
    a, b = keras.ops.convert_to_numpy(rnn(same)), keras.ops.convert_to_numpy(rnn(other))
    np.testing.assert_allclose(a[:, :2], b[:, :2], atol=1e-6)
    assert not np.allclose(a[:, 2], b[:, 2])
    # a user start (level 4) forgets everything: output = session init from a zero user state
    user_start = HRNNMetaCell.pack(e, np.array([[4, 0, 0, 4]]))
    c = keras.ops.convert_to_numpy(rnn(user_start))
    np.testing.assert_allclose(c[0, 3], c[0, 0], atol=1e-6)


# --------------------------------------------------------------------------- decoder / lambda
def test_lambda_mixing_of_id_and_feature_scores():
    dec = FeatureMixDecoder(num_items=6, num_features=3, lambda_eval=0.25)
    dec.item_features.assign(np.eye(3, dtype="float32")[np.arange(6) % 3])
    h = np.random.default_rng(0).normal(size=(2, 5)).astype("float32")
    dec(h)
    phi = keras.ops.convert_to_numpy(dec.id_logits(h))
    psi = keras.ops.convert_to_numpy(dec.feature_logits(h))
    assert not np.allclose(phi, psi)
    for lam in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(dec(h, lam=lam)), (1 - lam) * phi + lam * psi,
                                   rtol=1e-5, atol=1e-5)
    # inference: seen items use lambda_eval, items never seen in training use features only
    dec.seen.assign(np.array([1, 1, 1, 0, 1, 0], "float32"))
    got = keras.ops.convert_to_numpy(dec(h))
    lam = np.array([0.25, 0.25, 0.25, 1.0, 0.25, 1.0])
    np.testing.assert_allclose(got, (1 - lam) * phi + lam * psi, rtol=1e-5, atol=1e-5)
    # training: lambda is random per row, always a convex combination
    t1 = keras.ops.convert_to_numpy(dec(h, training=True))
    lam_rows = (t1 - phi)[:, 0] / (psi - phi)[:, 0]
    assert np.all((lam_rows >= -1e-4) & (lam_rows <= 1 + 1e-4))
    np.testing.assert_allclose(t1, phi + lam_rows[:, None] * (psi - phi), rtol=1e-4, atol=1e-4)


def test_cold_start_items_scored_from_features():
    """Items of three feature groups; sequences stay within a group. Items 10-12
    (one per group) never occur in training. After training, a history from group
    g must rank the cold item of group g above the other cold items, and cold
    items must not all share one score."""
    rng = np.random.default_rng(0)
    num_items = 13  # 1..12
    group = np.arange(num_items) % 3
    cold = np.array([10, 11, 12])
    warm_by_group = {g: [i for i in range(1, 10) if group[i] == g] for g in range(3)}
    seqs = [rng.choice(warm_by_group[g], size=8).tolist() for g in rng.integers(0, 3, size=120)]
    train = SequenceSet.from_lists(seqs)
    feats = np.zeros((num_items, 3), np.float32)
    feats[1:, :] = np.eye(3, dtype=np.float32)[group[1:]]
    ds = SequenceDataset(train, empty_sequence_set(), train, Vocabulary([str(i) for i in range(1, num_items)]),
                         item_features={"group": feats})
    keras.utils.set_random_seed(0)
    model = registry.build("hrnn_meta", ds, **{**TINY, "hidden": 16, "embedding_dim": 16, "lanes": 8, "chunk": 12})
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(ds, epochs=15, verbose=0)
    assert np.asarray(model.decoder.seen)[cold].tolist() == [0, 0, 0]
    hits = 0
    for g in range(3):
        hist = np.array([warm_by_group[g][:3]], np.int32)
        s = model.score_prefix_batch({"items": hist})[0]
        assert np.ptp(s[cold]) > 1e-3
        hits += int(cold[np.argmax(s[cold])] == cold[group[cold] == g][0])
    assert hits == 3


# --------------------------------------------------------------------------- whole model
def test_hrnn_meta_fits_scores_first_items_and_round_trips(tmp_path):
    ds = toy_dataset()
    model = registry.build("hrnn_meta", ds, rating_weight=1.0, **TINY)
    assert set(model.input_features) == {"items", "next_deltas", "deltas", "values", "user"}
    model.compile(optimizer="adam")
    model.fit(dataclasses.replace(ds, valid=empty_sequence_set()), epochs=1, verbose=0)
    r = stream_evaluate(model, ds.test, first_targets=True, ratings=True)
    assert (r["pos"] == 0).sum() == len(ds.test)
    assert np.all(np.isfinite(r["logp"])) and np.all(r["rank"] >= 1)
    assert np.all(np.isfinite(r["rating"]))
    # ranking among a candidate subset: the target always counts, ranks can only improve
    cand = np.zeros(ds.num_items, bool)
    cand[::2] = True
    rc = stream_evaluate(model, ds.test, first_targets=True, candidate_mask=cand)
    assert np.all(rc["rank"] <= r["rank"]) and np.all(rc["rank"] <= cand[1:].sum() + 1)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    back = keras.saving.load_model(path)
    x, _ = Batcher(ds.test, model.input_features).sequence_batch(np.array([0, 1]))
    np.testing.assert_allclose(back.score_sequence_batch(x), model.score_sequence_batch(x), rtol=1e-5, atol=1e-5)


def test_tbptt_carry_is_lane_state_outside_the_weights():
    ds = toy_dataset()
    model = registry.build("hrnn_meta", ds, cell="lstm", **TINY)
    assert [c.name for c in model.carry] == ["tbptt_carry_0", "tbptt_carry_1"]
    assert model.carry[0].numpy().shape == (TINY["lanes"], TINY["hidden"])
    assert not any("carry" in w.path for w in model.weights)
    assert registry.build("hrnn", ds, training_layout="padded", **TINY).carry == []
    # .keras files written while the carry was a weight hold it as trailing entries
    own = {str(i): v.numpy() for i, v in enumerate(model._trainable_variables + model._non_trainable_variables)}
    old = dict(own, **{str(len(own) + i): np.ones((2, 8), np.float32) for i in range(2)})
    model.load_own_variables(old)
    with pytest.raises(ValueError):
        model.load_own_variables(dict(old, extra=np.ones(1)))


def test_tbptt_training_under_mixed_precision_keeps_scores_float32():
    from tfrec.training.runs import train

    ds = toy_dataset()
    model, res = train("hrnn_meta", ds, verbose=0, evaluate_test=False,
                       model_config=dict(TINY, rating_weight=1.0, feature_inputs=True),
                       fit_config={"epochs": 1, "mixed_precision": "mixed_bfloat16"})
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert model.cell.compute_dtype == "bfloat16" and model.carry[0].numpy().dtype == np.float32
    assert np.isfinite(res["history"][0]["loss"]) and np.abs(model.carry[0].numpy()).max() > 0
    x, _ = Batcher(ds.test, model.input_features).sequence_batch(np.array([0, 1]))
    scores = model.score_sequence_batch(x)
    assert scores.dtype == np.float32 and np.all(np.isfinite(scores[:, :, 1:]))


def _two_replica_child():
    """Run as ``python tests/test_hrnn_meta.py``: 1-device vs 2-replica TBPTT
    training on 2 logical CPU devices; prints one JSON line."""
    import json
    import shutil
    import tempfile

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfrec.training.distributed import get_strategy

    tmp = tempfile.mkdtemp()
    ds = toy_dataset(n_seq=60)
    cfg = dict(TINY, lanes=4)
    strategies = {"single": get_strategy("default"), "mirrored": get_strategy("mirrored", devices=2)}
    out = {}
    # 1) forward state only (learning rate 0): the carry of every lane after each
    # of the first steps, read globally (replica 0's lanes first)
    steps = 4
    for key, strategy in strategies.items():
        keras.utils.set_random_seed(0)
        with strategy.scope():
            m = registry.build("hrnn_meta", ds, cell="lstm", **cfg)
            m.compile(optimizer=keras.optimizers.SGD(0.0))
        train = m.make_dataset(ds.train, shuffle=False)
        seen = []
        cb = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: seen.append([c.numpy().tolist() for c in m.carry]))
        m.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[cb], shuffle=False)
        out[f"carries_{key}"] = seen
        out[f"replicas_{key}"] = m.distribute_strategy.num_replicas_in_sync
        out[f"per_replica_rows_{key}"] = [int(v.shape[0]) for v in
                                          strategy.experimental_local_results(m.carry[0].variable)]
        # reference: each lane's first ``steps`` chunks in one unchunked pass from zeros
        batches = list(tbptt_batches(build_stream(ds.train, m.bos), cfg["lanes"], cfg["chunk"]))[:steps]
        x = {k: np.concatenate([b[0][k] for b in batches], 1) for k in batches[0][0] if k != "reset"}
        _, final = m.encode_stream({k: keras.ops.convert_to_tensor(v) for k, v in x.items()})
        out[f"reference_{key}"] = [keras.ops.convert_to_numpy(f).tolist() for f in final]
    # 2) real training (Adam), the same batches in the same order on both sides
    # (unshuffled: under a strategy Keras' symbolic build draws one extra pass from
    # the generator, which would shift the per-epoch shuffles)
    for key, strategy in strategies.items():
        keras.utils.set_random_seed(0)
        with strategy.scope():
            m = registry.build("hrnn", ds, **cfg)
            m.compile(optimizer=keras.optimizers.Adam(3e-3))
        batch_losses = []
        cbs = [keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batch_losses.append(logs["loss"]))]
        if key == "mirrored":
            cbs += [keras.callbacks.BackupAndRestore(os.path.join(tmp, "backup"), delete_checkpoint=False),
                    keras.callbacks.ModelCheckpoint(os.path.join(tmp, "w.weights.h5"), save_weights_only=True)]
        hist = m.fit(m.make_dataset(ds.train, shuffle=False), epochs=3, verbose=0, callbacks=cbs, shuffle=False)
        out[f"loss_{key}"] = [float(v) for v in hist.history["loss"]]
        out[f"batch_loss_{key}"] = [float(v) for v in batch_losses]
        out[f"trained_carry_{key}"] = m.carry[0].numpy().tolist()
    # 2b) the model's own fit (shuffled per epoch, RankingValidation on ``valid``)
    for key, strategy in strategies.items():
        keras.utils.set_random_seed(0)
        with strategy.scope():
            f = registry.build("hrnn", ds, **cfg)
            f.compile(optimizer=keras.optimizers.Adam(3e-3))
        hist = f.fit(dataclasses.replace(ds, valid=ds.valid.subset(np.arange(10))), epochs=2, verbose=0)
        out[f"fit_loss_{key}"] = [float(v) for v in hist.history["loss"]]
        out[f"fit_mrr_{key}"] = [float(v) for v in hist.history["val_mrr@20"]]
    # 3) saving a model trained on 2 replicas: .keras file, weights checkpoint and
    # backup all load on one device (the carry is not saved)
    xs, _ = Batcher(ds.test, m.input_features).sequence_batch(np.arange(4))
    want = m.score_sequence_batch(xs)
    m.save(os.path.join(tmp, "m.keras"))
    back = keras.saving.load_model(os.path.join(tmp, "m.keras"))
    fresh = registry.build("hrnn", ds, **cfg)
    fresh(next(iter(fresh.make_dataset(ds.train)))[0])  # build before loading weights
    fresh.load_weights(os.path.join(tmp, "w.weights.h5"))
    out["reload_diff"] = [float(np.abs(k.score_sequence_batch(xs) - want).max()) for k in (back, fresh)]
    out["reload_lanes"] = [back.carry[0].per_replica_batch_size, fresh.carry[0].per_replica_batch_size]
    with strategies["mirrored"].scope():  # a rerun resumes from the backup: nothing left to train
        again = registry.build("hrnn", ds, **cfg)
        again.compile(optimizer=keras.optimizers.Adam(3e-3))
    hist = again.fit(again.make_dataset(ds.train, shuffle=False), epochs=3, verbose=0, shuffle=False,
                     callbacks=[keras.callbacks.BackupAndRestore(os.path.join(tmp, "backup"))])
    out["resumed_epochs"] = len(hist.history.get("loss", []))
    out["resumed_diff"] = float(np.abs(again.score_sequence_batch(xs) - want).max())
    # 4) lanes that cannot be split evenly over the replicas
    with strategies["mirrored"].scope():
        try:
            registry.build("hrnn", ds, **dict(cfg, lanes=3))
        except ValueError as e:
            out["odd_lanes_error"] = str(e)
    shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + json.dumps(out), flush=True)


@pytest.fixture(scope="module")
def two_replicas():
    import json
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True, text=True, env=env,
                       timeout=600)
    rows = [line[7:] for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert rows, p.stderr[-3000:]
    return json.loads(rows[0])


def test_two_replicas_keep_each_lane_carry_across_chunks(two_replicas):
    r = two_replicas
    assert r["replicas_single"] == 1 and r["replicas_mirrored"] == 2
    assert r["per_replica_rows_single"] == [4] and r["per_replica_rows_mirrored"] == [2, 2]
    single, mirrored = np.array(r["carries_single"]), np.array(r["carries_mirrored"])
    assert single.shape == mirrored.shape == (4, 2, 4, 8)  # steps, (h, c), lanes, hidden
    assert np.abs(mirrored[-1]).max() > 0.05  # a real state, not zeros
    # after every step each lane's carry on its replica equals the one-device carry
    np.testing.assert_allclose(mirrored, single, atol=1e-5)
    # and equals one unchunked pass over the lane's first 4 chunks: the carry was
    # handed from chunk to chunk on the replica that owns the lane
    np.testing.assert_allclose(mirrored[-1], np.array(r["reference_mirrored"]), atol=1e-5)
    np.testing.assert_allclose(single[-1], np.array(r["reference_single"]), atol=1e-5)
    assert not np.allclose(mirrored[-1], mirrored[-2], atol=1e-3)  # the state moves on


def test_two_replica_tbptt_training_follows_one_device_losses(two_replicas):
    r = two_replicas
    assert len(r["loss_mirrored"]) == 3 and r["loss_mirrored"][-1] < r["loss_mirrored"][0]
    assert len(r["batch_loss_mirrored"]) == len(r["batch_loss_single"]) > 3 * 10
    # the loss is a mean over the global batch's targets (replica counts all-reduced),
    # so every step's (running mean) loss and the epoch losses equal the one-device run
    np.testing.assert_allclose(r["batch_loss_mirrored"], r["batch_loss_single"], rtol=1e-5)
    np.testing.assert_allclose(r["loss_mirrored"], r["loss_single"], rtol=1e-5)
    # and after training the lanes hold the one-device carries
    single, mirrored = np.array(r["trained_carry_single"]), np.array(r["trained_carry_mirrored"])
    assert np.abs(single).max() > 0.05
    np.testing.assert_allclose(mirrored, single, atol=1e-5)


def test_two_replica_fit_with_per_epoch_shuffles_equals_one_device(two_replicas):
    r = two_replicas
    np.testing.assert_allclose(r["fit_loss_mirrored"], r["fit_loss_single"], rtol=1e-5)
    assert 0 < r["fit_mrr_single"][-1] < 1  # validation ran on the trained weights
    np.testing.assert_allclose(r["fit_mrr_mirrored"], r["fit_mrr_single"], atol=1e-6)


def test_model_trained_on_two_replicas_saves_and_resumes(two_replicas):
    r = two_replicas
    assert r["reload_lanes"] == [4, 4]  # one device: every lane on the one replica
    assert max(r["reload_diff"]) < 1e-5  # .keras file and weights checkpoint
    assert r["resumed_epochs"] == 0 and r["resumed_diff"] < 1e-5  # BackupAndRestore


def test_lanes_must_split_evenly_over_replicas(two_replicas):
    assert "global batch of 3 lanes is not divisible by the 2 replicas" in two_replicas["odd_lanes_error"]


def test_temporal_conv_variants_are_causal():
    ds = toy_dataset()
    for mode in ("before", "instead"):
        model = registry.build("hrnn", ds, temporal_conv=mode, training_layout="padded", **TINY)
        b = Batcher(ds.test, model.input_features)
        x, _ = b.sequence_batch(np.array([0]))
        full = model.score_sequence_batch(x)
        x2 = {k: v.copy() for k, v in x.items()}
        x2["items"][0, -1] = (x2["items"][0, -1] % (ds.num_items - 1)) + 1  # change the last input only
        changed = model.score_sequence_batch(x2)
        np.testing.assert_allclose(full[:, :-1], changed[:, :-1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        registry.build("hrnn", ds, temporal_conv="before", **TINY)  # TBPTT + conv is refused
    assert TemporalConvStack(4, num_layers=3, kernel_size=2).receptive_field == 8


def test_rolling_average_rating():
    train = SequenceSet.from_lists([[1, 2], [1, 2]], values=[[4, 2], [2, 2]], users=[1, 2])
    test = SequenceSet.from_lists([[1, 2, 1]], values=[[5, 3, 1]], users=[1], target_start=1)
    m = RollingAverageRating().fit(train, num_items=3)
    # targets: item 2 after [5] -> (2 + 5)/2; item 1 after [5, 3] -> (3 + 4)/2
    np.testing.assert_allclose(m.predict(test), [3.5, 3.5])


def test_from_dataset_without_times_disables_levels():
    ds = toy_dataset()
    ds.train.times = None
    m = HRNNMeta.from_dataset(ds, **TINY)
    assert not m.use_levels and "next_deltas" not in m.input_features


def test_previous_event_deltas_with_query_gap_equal_next_deltas():
    """Exporters that only have timestamps (``deltas``) plus the query time give the
    same scores as ``next_deltas``."""
    ds = toy_dataset()
    model = registry.build("hrnn", ds, **TINY)
    b = Batcher(ds.test, ("items", "deltas", "next_deltas"))
    s_idx, pos = ds.test.target_index()
    x, _ = b.prefix_batch(s_idx[:6], pos[:6])
    lengths = (x["items"] != 0).sum(1)
    query = x["next_deltas"][np.arange(6), lengths - 1]
    want = model.score_prefix_batch({"items": x["items"], "next_deltas": x["next_deltas"]})
    got = model.score_prefix_batch({"items": x["items"], "deltas": x["deltas"], "query_deltas": query})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("name", ["hrnn", "hgru", "rnn", "hrnn_meta", "rnn_meta"])
def test_step_equals_prefix_logits_after_every_event(name):
    """The O(1) serving step (pending event committed under the gap to the next one)
    gives, after every event, the scores of ``prefix_logits`` over the whole history
    with a query gap of 0; sessions of a batch advance independently."""
    ds = toy_dataset()
    keras.utils.set_random_seed(0)
    model = registry.build(name, ds, **registry.get(name).test_config)
    feats = tuple(model.input_features)
    seqs = ds.test
    rows = [0, 1, 2]
    L = int(min(seqs.lengths[r] for r in rows))
    items = np.stack([seqs.sequence(r)[:L] for r in rows]).astype(np.int32)
    times = np.stack([seqs.column("times", r)[:L] for r in rows])
    values = np.stack([seqs.column("values", r)[:L] for r in rows]).astype(np.float32)
    users = np.asarray(seqs.users[rows], np.int32)
    state = model.initial_state(len(rows))
    for t in range(L):
        ev = {"items": items[:, t],
              "deltas": (np.full(len(rows), np.inf) if t == 0 else times[:, t] - times[:, t - 1]).astype(np.float32)}
        if "values" in feats:
            ev["values"] = values[:, t]
        if "user" in feats:
            ev["user"] = users
        logits, state = model.step(state, ev)
        x = {"items": items[:, : t + 1]}
        d = np.zeros((len(rows), t + 1), np.float32)
        d[:, 0] = np.inf
        d[:, 1:] = np.diff(times[:, : t + 1], axis=1)
        x["deltas"] = d
        if "values" in feats:
            x["values"] = values[:, : t + 1]
        if "user" in feats:
            x["user"] = users
        want = model.score_prefix_batch(x)
        np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-4, atol=1e-4, err_msg=f"{name} event {t}")
    assert np.asarray(state["pending_item"]).tolist() == items[:, -1].tolist()


def test_models_without_an_o1_step_have_none():
    ds = toy_dataset()
    assert registry.build("item_fm", ds, **registry.get("item_fm").test_config).step is None
    conv = HRNNMeta.from_dataset(ds, temporal_conv="before", training_layout="padded", **TINY)
    assert conv.step is None and conv.initial_state is None

if __name__ == "__main__":
    _two_replica_child()
