"""Metrics and the evaluator on hand-computed cases, both tie modes, exclusions."""

import numpy as np
import pytest

from tfrec.data import SequenceSet
from tfrec.evaluation import PROTOCOLS, Protocol, evaluate
from tfrec.metrics import UNRANKED, RankingMetric, metrics_from_ranks, perplexity, ranks_from_scores, rmse


def test_ranks_conservative_and_optimistic():
    s = np.array([[0.0, 0.3, 0.3, 0.3, 0.1],
                  [0.0, 0.9, 0.1, 0.2, 0.2]])
    t = np.array([2, 3])
    assert ranks_from_scores(s, t, "conservative").tolist() == [3, 3]
    assert ranks_from_scores(s, t, "optimistic").tolist() == [1, 2]
    with pytest.raises(ValueError, match="ties must be one of"):
        ranks_from_scores(s, t, "random")
    with pytest.raises(ValueError, match="target index out of range"):
        ranks_from_scores(s, np.array([5, 0]))


def test_candidate_mask_excludes_but_keeps_target():
    s = np.array([[5.0, 4.0, 3.0, 2.0]])
    m = np.array([[False, False, True, True]])
    assert ranks_from_scores(s, np.array([3]), candidate_mask=m).tolist() == [2]
    assert ranks_from_scores(s, np.array([1]), candidate_mask=m).tolist() == [1]  # target stays


def test_metric_values_by_hand():
    r = np.array([1, 2, 4, 25])
    m = metrics_from_ranks(r, ks=[3, 20], metrics=["recall", "mrr", "precision", "ndcg", "hitrate"])
    assert m["recall@3"] == pytest.approx(2 / 4)
    assert m["recall@20"] == pytest.approx(3 / 4)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 2) / 4)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 4)  # truncated: rank 25 gives 0
    assert m["precision@20"] == pytest.approx(3 / 4 / 20)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / np.log2(3)) / 4)
    assert m["hitrate@20"] == m["recall@20"]
    assert metrics_from_ranks(r, [3], ["recall"], scale=100)["recall@3"] == pytest.approx(50.0)
    assert perplexity(np.log([0.5, 0.5])) == pytest.approx(2.0)
    assert rmse([1, 2], [1, 4]) == pytest.approx(np.sqrt(2))


def test_keras_ranking_metric_matches_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 5, 30)).astype("float32")
    scores[0, 0, :] = 1.0  # a fully tied row
    y = rng.integers(1, 30, size=(2, 5))
    y[1, 4] = 0  # ignored
    for ties in ("conservative", "optimistic"):
        r = ranks_from_scores(scores, y, ties)[y != 0]
        for kind in ("recall", "mrr", "ndcg"):
            m = RankingMetric(kind, 10, ties=ties)
            m.update_state(y, scores)
            expect = metrics_from_ranks(r, [10], [kind])[f"{kind}@10"]
            assert float(m.result()) == pytest.approx(expect, rel=1e-5)
    cfg = RankingMetric("mrr", 5).get_config()
    assert RankingMetric.from_config(cfg).k == 5


class _Const:
    """A model that scores every item the same."""

    num_items = 50

    def score_prefix_batch(self, x):
        return np.zeros((len(x["items"]), self.num_items), np.float32)


class _Oracle:
    """A model that knows the next item of every prefix: scores item (last + 1)."""

    num_items = 50

    def score_prefix_batch(self, x):
        items = x["items"]
        last = items[np.arange(len(items)), (items != 0).sum(1) - 1]
        s = np.zeros((len(items), self.num_items), np.float32)
        s[np.arange(len(items)), last + 1] = 1.0
        return s


def test_constant_model_scores_zero_under_conservative_ties():
    seqs = SequenceSet.from_lists([list(range(1, 40)), list(range(5, 20))])
    m = evaluate(_Const(), seqs, ks=[20])
    assert m["recall@20"] == 0.0 and m["mrr@20"] == 0.0
    opt = evaluate(_Const(), seqs, Protocol(ks=(20,), ties="optimistic"))
    assert opt["recall@20"] == 1.0  # why optimistic ties flatter a degenerate model
    assert evaluate(_Oracle(), seqs, ks=[1])["recall@1"] == 1.0


def test_exclude_history_changes_ranks():
    seqs = SequenceSet.from_lists([[3, 2, 1]])

    class Hist:
        num_items = 5

        def score_prefix_batch(self, x):  # likes items in the history most
            s = np.zeros((len(x["items"]), 5), np.float32)
            for b, row in enumerate(x["items"]):
                s[b, row[row > 0]] = 2.0
            s[:, 1] = 1.0
            return s

    base = Protocol(ks=(1,), metrics=("recall",))
    assert evaluate(Hist(), seqs, base)["recall@1"] == 0.0
    excl = Protocol(ks=(1,), metrics=("recall",), exclude_history=True)
    assert evaluate(Hist(), seqs, excl)["recall@1"] == 0.5  # target 1 wins once history is excluded


def test_hcrnn_protocol_definition():
    p = PROTOCOLS["hcrnn"]
    assert (p.ties, p.exclude_padding, p.scale, p.ks) == ("optimistic", False, 100.0, (3, 20))
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(_Const(), SequenceSet.from_lists([[1, 2]]), "sampled")


@pytest.mark.parametrize("ties", ["conservative", "optimistic"])
def test_nan_target_score_is_a_miss_not_a_hit(ties):
    # a diverged model (all NaN) must score 0, never 100 (NaN comparisons are false)
    scores = np.array([[np.nan, np.nan, np.nan, np.nan], [0.1, np.nan, 0.3, 0.2]])
    r = ranks_from_scores(scores, np.array([2, 2]), ties)
    assert r.tolist() == [UNRANKED, 1]  # NaN target: unranked; NaN other item: never above the target
    masked = ranks_from_scores(scores, np.array([2, 2]), ties, candidate_mask=np.array([False, True, True, True]))
    assert masked.tolist() == [UNRANKED, 1]
    m = metrics_from_ranks(r, ks=(3, 20), metrics=("recall", "mrr", "ndcg"))
    assert m == {"recall@3": 0.5, "recall@20": 0.5, "mrr@3": 0.5, "mrr@20": 0.5, "ndcg@3": 0.5, "ndcg@20": 0.5}


def test_streaming_metric_counts_nan_target_as_miss():
    m = RankingMetric("recall", k=3, ties="optimistic")
    m.update_state(np.array([1, 1]), np.array([[np.nan, np.nan, np.nan, np.nan], [0.9, 0.1, 0.0, 0.0]], "float32"))
    assert float(m.result()) == pytest.approx(0.5)


def test_evaluate_warns_when_scores_are_nan():
    from tfrec.data import SequenceSet
    from tfrec.evaluation import evaluate

    class Diverged:
        num_items = 4

        def score_prefix_batch(self, x):
            return np.full((len(x["items"]), 4), np.nan, "float32")

    with pytest.warns(RuntimeWarning, match="3 of 3 targets have NaN scores"):
        out = evaluate(Diverged(), SequenceSet.from_lists([[1, 2, 3, 1]]), protocol="hcrnn")
    assert out["recall@20"] == 0.0


def test_long_sequences_are_scored_prefix_by_prefix_beyond_the_models_limit():
    """A causal model with ``sequence_scoring_max_length`` below the split's longest
    sequence is evaluated prefix by prefix (STAMP's one-pass scoring is quadratic in
    the length): the same ranks, and no one-pass call."""
    from tfrec.models.stamp import STAMP

    seqs = SequenceSet.from_lists([[1, 2, 3, 4, 5, 6], [2, 3, 1], [4, 4, 2, 5]])
    model = STAMP(num_items=7, embedding_dim=4, seed=3)
    one_pass = evaluate(model, seqs, ks=[1, 3])
    calls = []
    original = model.score_sequence_batch
    model.score_sequence_batch = lambda x: calls.append(x) or original(x)
    model.sequence_scoring_max_length = 5
    by_prefix = evaluate(model, seqs, ks=[1, 3])
    assert calls == []
    assert by_prefix == pytest.approx(one_pass)
    model.sequence_scoring_max_length = 6
    evaluate(model, seqs, ks=[1, 3])
    assert len(calls) >= 1
