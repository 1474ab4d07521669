"""Data layer: vocabularies, sessionizing, hierarchy levels, splits, augmentation,
batches and loaders on the real files."""

import os

import numpy as np
import pytest

from tfrec.data import (
    Batcher, DataFormatError, SequenceSet, Vocabulary, hierarchy_levels, leave_last_out,
    load_csv, load_hcrnn, load_spec, movielens_dataset, num_levels, parse_spec, prefix_batches,
    sequence_batches, session_parallel_batches, sessionize, simulate_gambler, simulate_sessions,
    split_by_time, split_by_user, stable_order, time_deltas,
)


# ------------------------------------------------------------------ vocab
def test_vocabulary_padding_and_oov_policies(tmp_path):
    v = Vocabulary(["x", "y"])
    assert len(v) == 3 and v.lookup(["y"]).tolist() == [2]
    with pytest.raises(KeyError, match="'z' is not in the vocabulary"):
        v.lookup(["z"])
    assert Vocabulary(["x"], oov="pad").lookup(["z", "x"]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="duplicate token"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="oov must be one of"):
        Vocabulary(["a"], oov="bucket")
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == v
    assert v.ids([0, 2]) == ["<pad>", "y"]


# -------------------------------------------------------------- sessions
def test_stable_order_keeps_file_order_for_equal_times():
    users = np.array(["b", "a", "a", "a"])
    times = np.array([5.0, 3.0, 1.0, 3.0])
    assert stable_order(users, times).tolist() == [2, 1, 3, 0]


def test_sessionize_by_gap():
    users = np.array([1, 1, 1, 1, 2, 2])
    times = np.array([0, 100, 2000, 2100, 0, 1801.0])
    assert sessionize(users, times, gap=1800).tolist() == [0, 0, 1, 1, 2, 3]
    with pytest.raises(ValueError, match="not sorted by time"):
        time_deltas(np.array([1, 1]), np.array([5.0, 1.0]))


def test_hierarchy_levels_thresholds():
    d = np.array([np.inf, 0, 59.9, 60, 3599, 3600, 86399, 86400, 1e9])
    assert hierarchy_levels(d).tolist() == [4, 0, 0, 1, 1, 2, 2, 3, 3]
    assert num_levels() == 5
    assert hierarchy_levels(np.array([5.0, 50.0, np.inf]), thresholds=[10]).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="increasing"):
        hierarchy_levels(d, thresholds=[10, 5])


# ---------------------------------------------------------------- splits
def _timed_set():
    # user 0: t = 1..6, user 1: t = 4..9
    return SequenceSet.from_lists(
        [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]],
        times=[[1, 2, 3, 4, 5, 6], [4, 5, 6, 7, 8, 9]], users=[1, 2])


def test_split_by_time_is_leak_free():
    tr, va, te = split_by_time(_timed_set(), valid_cut=5, test_cut=7)
    assert tr.times.max() < 5
    assert [tr.sequence(i).tolist() for i in range(len(tr))] == [[1, 2, 3, 4]]  # user 1 has one event < 5
    # validation targets lie in [5, 7), with full earlier history as input
    for s, p in zip(*va.target_index()):
        assert 5 <= va.column("times", s)[p] < 7
    assert va.num_targets == 4  # u0: t5,t6; u1: t5,t6
    for s, p in zip(*te.target_index()):
        assert te.column("times", s)[p] >= 7
    assert te.num_targets == 3 and te.lengths.tolist() == [6]


def test_split_by_user_and_leave_last_out():
    s = SequenceSet.from_lists([[i, i + 1, i + 2] for i in range(1, 21)])
    tr, va, te = split_by_user(s, 0.1, 0.2, seed=3)
    assert (len(tr), len(va), len(te)) == (14, 2, 4)
    ids = lambda x: {tuple(x.sequence(i)) for i in range(len(x))}  # noqa: E731
    assert not ids(tr) & ids(te) and not ids(va) & ids(te)
    tr, va, te = leave_last_out(SequenceSet.from_lists([[1, 2, 3, 4], [5, 6, 7]]))
    assert [list(p) for p in [(h.tolist(), t) for h, t in te.prefixes()]] == [[[1, 2, 3], 4], [[5, 6], 7]]
    assert [t for _, t in va.prefixes()] == [3, 6]
    assert tr.lengths.tolist() == [2]  # [5] alone has no target


# --------------------------------------------------------- augmentation
def test_prefix_augmentation_counts_on_citeulike(citeulike):
    # NARM/HCRNN: a sequence [i1..iL] yields L-1 samples
    assert (citeulike.train.num_targets, citeulike.valid.num_targets, citeulike.test.num_targets) == (34810, 3914, 9140)
    assert citeulike.num_items == 1981


def test_prefixes_equal_the_authors_narm_files(citeulike, citeulike_dir):
    """Our prefix augmentation reproduces NARM_valid.txt exactly (inputs and targets)."""
    rows = np.loadtxt(os.path.join(citeulike_dir, "NARM_valid.txt"), skiprows=1, dtype=np.int64)
    keys, starts = np.unique(rows[:, 1], return_index=True)
    ends = np.append(starts[1:], len(rows))
    narm = [rows[a:b, 0] for a, b in zip(starts, ends)]
    ours = list(citeulike.valid.prefixes())
    assert len(ours) == len(narm) == 3914
    for (hist, tgt), seq in zip(ours, narm):
        assert hist.tolist() == seq[:-1].tolist() and tgt == seq[-1]


# ---------------------------------------------------------------- batches
def test_prefix_and_sequence_batches_cover_the_same_targets():
    s = SequenceSet.from_lists([[1, 2, 3, 4], [5, 6], [7, 8, 9]], target_start=[1, 1, 2])
    pref = sorted(tuple(y) for _, y in [(None, tuple(b[1].tolist())) for b in prefix_batches(s, 2, bucket=False)])
    flat_prefix = sorted(t for _, ys in [(None, b[1].tolist()) for b in prefix_batches(s, 2)] for t in ys)
    flat_seq = sorted(int(t) for _, y in sequence_batches(s, 2) for t in y.ravel() if t)
    assert flat_prefix == flat_seq == [2, 3, 4, 6, 9]
    assert pref  # batches exist
    x, y = Batcher(s).sequence_batch(np.array([0, 2]))
    assert x["items"].tolist() == [[1, 2, 3], [7, 8, 0]]
    assert y.tolist() == [[2, 3, 4], [0, 9, 0]]  # seq 2 starts targets at position 2


def test_bucketing_pads_less_and_is_deterministic():
    rng = np.random.default_rng(0)
    s = SequenceSet.from_lists([list(range(1, rng.integers(2, 60))) for _ in range(200)])
    pad = lambda bucket: sum(x["items"].size for x, _ in prefix_batches(s, 64, True, 1, bucket))  # noqa: E731
    assert pad(True) < 0.7 * pad(False)
    a = [y.tolist() for _, y in prefix_batches(s, 64, True, seed=1, epoch=2)]
    b = [y.tolist() for _, y in prefix_batches(s, 64, True, seed=1, epoch=2)]
    c = [y.tolist() for _, y in prefix_batches(s, 64, True, seed=1, epoch=3)]
    assert a == b and a != c


def test_batcher_features_and_errors():
    s = SequenceSet.from_lists([[1, 2, 3]], times=[[0, 10, 100]], values=[[5, 4, 3]], users=[7])
    x, y = Batcher(s, ("deltas", "values", "user")).prefix_batch(np.array([0]), np.array([2]))
    assert x["deltas"].tolist() == [[np.inf, 10.0]] and x["values"].tolist() == [[5.0, 4.0]]
    assert x["user"].tolist() == [7] and y.tolist() == [3]
    with pytest.raises(ValueError, match="no timestamps"):
        Batcher(SequenceSet.from_lists([[1, 2]]), ("deltas",))
    with pytest.raises(ValueError, match="unknown feature"):
        Batcher(s, ("colour",))


def test_session_parallel_reset_flags_at_the_right_step():
    s = SequenceSet.from_lists([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]])
    steps = list(session_parallel_batches(s, 2))
    inputs = [i.tolist() for i, _, _, _ in steps]
    targets = [t.tolist() for _, t, _, _ in steps]
    resets = [r.tolist() for _, _, r, _ in steps]
    valid = [v.tolist() for _, _, _, v in steps]
    assert inputs == [[1, 4], [2, 6], [10, 7], [0, 8]]
    assert targets == [[2, 5], [3, 7], [11, 8], [0, 9]]
    # a reset is raised exactly at the step whose input is a new sequence's first event
    assert resets == [[True, True], [False, True], [True, False], [False, False]]
    assert valid == [[True, True], [True, True], [True, True], [False, True]]
    # every (input, target) transition of the data appears exactly once
    pairs = sorted((a, b) for i, t, _, v in steps for a, b, ok in zip(i, t, v) if ok)
    assert pairs == sorted([(1, 2), (2, 3), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11)])


# ---------------------------------------------------------------- loaders
def test_load_hcrnn_real_files(citeulike):
    tr = citeulike.train
    assert (len(tr), tr.num_events) == (1294, 36104)
    assert (len(citeulike.valid), len(citeulike.test)) == (144, 360)
    assert tr.lengths.min() == 10 and tr.lengths.max() == 100
    assert citeulike.item_vocab.lookup([citeulike.item_vocab.tokens[41]]).tolist() == [42]


def test_load_movielens_100k(ml100k_dir):
    ds = movielens_dataset(ml100k_dir, split="time")
    total = sum(s.num_events for s in ds.splits().values())
    assert ds.num_items == 1683 and ds.num_users == 944
    assert ds.train.num_events == 79998 and total > 100000  # valid/test repeat earlier history
    assert set(ds.user_features) == {"gender", "age", "occupation", "zip"}
    assert ds.item_features["genres"].shape == (1683, 19)
    assert ds.item_features["genres"][0].sum() == 0  # padding row
    # leak-free: every training event precedes every test target
    s, p = ds.test.target_index()
    assert ds.train.times.max() < min(ds.test.column("times", a)[b] for a, b in zip(s, p))


def test_malformed_files_name_file_and_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user_id,item_id,timestamp\nu,a,1\nu,b,notatime\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:3: column 'timestamp' should be a number"):
        load_csv(str(p))
    p.write_text("user_id,item_id,timestamp\nu,a\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:2: expected 3 fields, got 2"):
        load_csv(str(p))
    with pytest.raises(DataFormatError, match="missing column 'user'"):
        load_csv(str(p), user_col="user")
    with pytest.raises(FileNotFoundError, match="data file not found"):
        load_csv(str(tmp_path / "none.csv"))
    d = tmp_path / "hc"
    d.mkdir()
    (d / "item2idx.txt").write_text("100\t1\n200\tx\n")
    with pytest.raises(DataFormatError, match=r"item2idx.txt:2"):
        load_hcrnn(str(d))


def test_csv_spec_end_to_end(tmp_path):
    p = tmp_path / "log.tsv"
    rows = ["uid\titem\tts"] + [f"u{u}\ti{(u + k) % 7}\t{k * 100}" for u in range(20) for k in range(6)]
    p.write_text("\n".join(rows) + "\n")
    ds = load_spec(f"csv:{p}?user_col=uid&item_col=item&time_col=ts&split=user")
    assert ds.num_items == 8 and len(ds.train) + len(ds.valid) + len(ds.test) == 20
    assert parse_spec("sim:gambler?seed=2") == ("sim", "gambler", {"seed": "2"})
    with pytest.raises(ValueError, match="unknown data kind"):
        load_spec("parquet:x")
    with pytest.raises(ValueError, match="unknown options"):
        load_spec("sim:sessions?colour=red")


# ------------------------------------------------------------- simulators
def test_session_simulator_structure():
    ds = simulate_sessions(num_users=200, seed=4)
    again = simulate_sessions(num_users=200, seed=4)
    assert np.array_equal(ds.train.items, again.train.items)  # deterministic
    for s in range(len(ds.train)):
        items = ds.train.sequence(s)
        steps = np.diff(items)
        assert set(steps.tolist()) <= {0, 1}  # same item within a session, +1 between
        gaps = np.diff(ds.train.column("times", s))
        assert np.array_equal(steps == 1, gaps > 86400)  # a long gap iff a new session


def test_gambler_simulator_rules():
    ds = simulate_gambler(num_sequences=300, seed=1)
    first = ds.user_features["first_item"]
    for s in range(len(ds.train)):
        items, vals = ds.train.sequence(s), ds.train.column("values", s)
        assert first[ds.train.users[s]] == items[0]
        assert np.array_equal(np.diff(items), vals[:-1])  # the outcome decides the next bet
    assert ds.item_features["parity"][1:].sum(1).tolist() == [1.0] * 101
    assert ds.summary()["train"]["length_max"] <= 20


def test_training_pipelines_do_not_autotune():
    """tf.data autotuning stays off in every generator pipeline: with it on, destroying
    an epoch's iterator blocked on the autotune thread (idle stalls of tens of seconds
    per epoch in TF 2.21)."""
    from tfrec.data.pipelines import generator_options, to_tf_dataset
    from tfrec.models.gru4rec import GRU4RecCE, session_step_dataset

    assert generator_options().autotune.enabled is False
    s = SequenceSet.from_lists([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    datasets = {
        "to_tf_dataset": to_tf_dataset(lambda e: prefix_batches(s, 2), next(prefix_batches(s, 2))),
        "sequence layout": GRU4RecCE(num_items=10, embedding_dim=4, units=4, layout="sequence",
                                     batch_size=2).make_dataset(s),
        "prefix layout": GRU4RecCE(num_items=10, embedding_dim=4, units=4, batch_size=2).make_dataset(s),
        "session-parallel": session_step_dataset(s, 2),
    }
    for name, ds in datasets.items():
        assert ds.options().autotune.enabled is False, name
        assert sum(1 for _ in ds) > 0, name
