"""The neural baselines (GRU4Rec both forms, LSTM4Rec, NARM, STAMP, Caser, NCF):
they overfit a tiny dataset, padding never changes a prediction, and the CLI
trains a run directory that ``tfrec evaluate`` reads back."""

import json
import os

import numpy as np
import pytest

import keras

from tfrec.data import SequenceDataset, SequenceSet, Vocabulary
from tfrec.evaluation import evaluate
from tfrec.models import registry
from tfrec.training.runs import make_optimizer

MODELS = ["gru4rec", "gru4rec_ce", "lstm4rec", "narm", "stamp", "caser", "ncf"]

#: settings that let each model memorise the tiny data quickly (no dropout, larger steps).
OVERFIT = {
    "gru4rec": ({"units": 16, "n_sample": 8, "batch_size": 3, "dropout_embed": 0.0, "dropout_hidden": 0.0},
                {"optimizer": "adagradm", "learning_rate": 0.1, "momentum": 0.4}),
    "gru4rec_ce": ({"embedding_dim": 16, "units": 16, "input_dropout": 0.0, "decoder_dropout": 0.0,
                    "batch_size": 8}, {"learning_rate": 0.03}),
    "lstm4rec": ({"embedding_dim": 16, "units": 16, "input_dropout": 0.0, "decoder_dropout": 0.0,
                  "batch_size": 8}, {"learning_rate": 0.03}),
    "narm": ({"embedding_dim": 16, "units": 16, "input_dropout": 0.0, "decoder_dropout": 0.0,
              "batch_size": 8}, {"learning_rate": 0.03}),
    "stamp": ({"embedding_dim": 16, "batch_size": 8, "score_activation": "linear"}, {"learning_rate": 0.03}),
    "caser": ({"embedding_dim": 16, "window": 3, "horizontal_filters": 4, "vertical_filters": 2,
               "dropout": 0.0, "batch_size": 8}, {"learning_rate": 0.03}),
    "ncf": ({"factors": 16, "mlp_layers": [32, 16], "batch_size": 8}, {"learning_rate": 0.03}),
}


def _tiny():
    # the next item is always last + 1: a deterministic rule every model can memorise
    seqs = SequenceSet.from_lists([[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7], [7, 8, 9, 10, 11],
                                   [3, 4, 5, 6, 7, 8], [8, 9, 10, 11]])
    vocab = Vocabulary([str(i) for i in range(1, 12)])
    return SequenceDataset(seqs, seqs, seqs, vocab, name="tiny")


@pytest.mark.parametrize("name", MODELS)
def test_model_overfits_tiny_dataset(name):
    data = _tiny()
    keras.utils.set_random_seed(0)
    mcfg, fcfg = OVERFIT[name]
    model = registry.build(name, data, **mcfg)
    model.compile(optimizer=make_optimizer({**registry.get(name).fit_config, **fcfg}))
    before = evaluate(model, data.train, ks=(1,))["recall@1"]
    model.fit(data, epochs=60, verbose=0, patience=20)
    after = evaluate(model, data.train, ks=(1,))["recall@1"]
    assert after >= 0.9, (name, before, after)
    assert before < 0.5


@pytest.mark.parametrize("name", MODELS)
def test_padding_never_changes_a_prediction(name):
    spec = registry.get(name)
    data = _tiny()
    keras.utils.set_random_seed(1)
    model = registry.build(name, data, **spec.test_config)
    short = np.array([[3, 4, 5, 0], [1, 2, 3, 4]], "int32")
    longer = np.concatenate([short, np.zeros((2, 5), "int32")], axis=1)
    a = model.score_prefix_batch({"items": short})
    b = model.score_prefix_batch({"items": longer})
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    alone = model.score_prefix_batch({"items": short[:1, :3]})
    np.testing.assert_allclose(alone[0], a[0], rtol=1e-5, atol=1e-5)
    if model.causal:
        s1 = model.score_sequence_batch({"items": short})
        s2 = model.score_sequence_batch({"items": longer})
        np.testing.assert_allclose(s1[0, :3], s2[0, :3], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s1[1], s2[1, :4], rtol=1e-5, atol=1e-5)
        # the whole-sequence pass agrees with the prefix scores at the last real step
        np.testing.assert_allclose(s1[0, 2], a[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_cli_train_then_evaluate_run(name, tmp_path, capsys):
    from tfrec.cli import main

    spec = registry.get(name)
    run = str(tmp_path / "run")
    opts = []
    for k, v in spec.test_config.items():
        opts += ["--model-opt", f"{k}={json.dumps(v)}"]
    assert main(["train", name, "--data", "sim:sessions", "--out", run, "--epochs", "1", "--json"] + opts) == 0
    capsys.readouterr()
    assert os.path.isfile(os.path.join(run, "model.keras"))
    assert main(["evaluate", run, "--data", "sim:sessions", "--protocol", "hcrnn", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["source"] == "run"
    for k in ("recall@3", "recall@20", "mrr@3", "mrr@20"):
        assert 0.0 <= out["metrics"][k] <= 100.0
    assert out["metrics"]["recall@20"] > 0.0


def _layout_losses(model, seqs):
    from tfrec.data.pipelines import Batcher
    from tfrec.models.base import masked_sparse_ce

    b = Batcher(seqs)
    xs, ys = b.sequence_batch(np.arange(len(seqs)))
    s_idx, pos = seqs.target_index()
    xp, yp = b.prefix_batch(s_idx, pos)
    return (float(masked_sparse_ce(ys, model.sequence_logits(xs))),
            float(masked_sparse_ce(yp, model.prefix_logits(xp))), model.sequence_logits(xs), xs)


@pytest.mark.parametrize("activation", ["sigmoid", "linear"])
def test_stamp_prefix_parallel_equals_prefix_augmented(activation):
    seqs = SequenceSet.from_lists([[1, 2, 3, 4, 5, 6], [2, 7, 4], [7, 8, 9, 10, 11], [3, 4]])
    model = registry.get("stamp").cls(num_items=12, embedding_dim=6, layout="sequence",
                                      score_activation=activation, seed=4)
    seq_loss, prefix_loss, logits, xs = _layout_losses(model, seqs)
    assert seq_loss == pytest.approx(prefix_loss, rel=1e-5)
    # position t of the sequence pass scores exactly the prefix items[:t + 1]
    items = np.asarray(xs["items"])
    one = model.prefix_logits({"items": items[:1, :3]})
    np.testing.assert_allclose(np.asarray(logits)[0, 2], np.asarray(one)[0], rtol=1e-5, atol=1e-6)


def test_target_normalizer_is_a_base_option_for_every_sequence_model():
    from tfrec.models.base import masked_sparse_ce

    seqs = SequenceSet.from_lists([[1, 2, 3, 4, 5, 6], [2, 7, 4], [7, 8, 9, 10, 11]])
    from tfrec.data.pipelines import Batcher

    xs, ys = Batcher(seqs).sequence_batch(np.arange(len(seqs)))
    n = int((ys != 0).sum())
    for name, kw in [("stamp", {"embedding_dim": 6}),
                     ("hcrnn", {"embedding_dim": 6, "hidden": 6, "num_contexts": 3, "inference_units": 4,
                                "kl_weight": 0.0})]:
        cls = registry.get(name).cls
        plain = cls(num_items=12, layout="sequence", seed=1, **kw)
        fixed = cls(num_items=12, layout="sequence", seed=1, target_normalizer=4 * n, **kw)
        logits = plain.sequence_logits(xs)
        assert float(plain.compute_loss(y=ys, y_pred=logits)) == pytest.approx(
            float(masked_sparse_ce(ys, logits)), rel=1e-6)
        assert float(fixed.compute_loss(y=ys, y_pred=logits)) == pytest.approx(
            float(masked_sparse_ce(ys, logits)) / 4, rel=1e-5)
        assert fixed.get_config()["target_normalizer"] == 4 * n
        assert cls.from_config(fixed.get_config()).target_normalizer == 4 * n
    with pytest.raises(ValueError, match="target_normalizer must be > 0 or None, got 0"):
        registry.get("stamp").cls(num_items=12, target_normalizer=0)


def test_stamp_dropout_options_train_only_and_round_trip():
    items = np.array([[1, 2, 3, 4, 0], [5, 6, 0, 0, 0]])
    cls = registry.get("stamp").cls
    plain = cls(num_items=12, embedding_dim=8, seed=3)
    dropped = cls(num_items=12, embedding_dim=8, seed=3, input_dropout=0.25, decoder_dropout=0.5)
    x = {"items": items}
    plain.prefix_logits(x), dropped.prefix_logits(x)  # build both
    assert len(dropped.weights) == len(plain.weights)  # the dropouts add no weights (old files load)
    dropped.set_weights(plain.get_weights())
    # inference ignores the dropouts
    np.testing.assert_allclose(np.asarray(dropped.prefix_logits(x)), np.asarray(plain.prefix_logits(x)),
                               rtol=1e-6, atol=1e-7)
    # training mode drops: the scores differ from inference (and for the sequence pass too)
    train = np.asarray(dropped.prefix_logits(x, training=True))
    assert not np.allclose(train, np.asarray(dropped.prefix_logits(x)))
    seq_model = cls(num_items=12, embedding_dim=8, seed=3, layout="sequence", decoder_dropout=0.5)
    h = seq_model.encode_sequence(x)
    assert not np.allclose(np.asarray(seq_model.decode(h, training=True)), np.asarray(seq_model.decode(h)))
    cfg = dropped.get_config()
    assert (cfg["input_dropout"], cfg["decoder_dropout"]) == (0.25, 0.5)
    assert cls.from_config(cfg).decoder_dropout == 0.5
    with pytest.raises(ValueError, match=r"decoder_dropout must be in \[0, 1\), got 1.0"):
        cls(num_items=12, decoder_dropout=1.0)
