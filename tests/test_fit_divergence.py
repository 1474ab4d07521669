"""A run that diverges (NaN loss) stops at once and keeps its best finite epoch."""

import numpy as np
import pytest

import keras

from tfrec.data import SequenceDataset, SequenceSet, Vocabulary
from tfrec.evaluation import evaluate
from tfrec.models import registry


class PoisonAtEpoch(keras.callbacks.Callback):
    """Sets every trainable weight to NaN at the start of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            for w in self.model.trainable_weights:
                w.assign(np.full(w.shape, np.nan, "float32"))


def test_nan_loss_stops_training_and_restores_best_finite_epoch():
    seqs = SequenceSet.from_lists([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7]])
    data = SequenceDataset(train=seqs, valid=seqs, test=seqs, item_vocab=Vocabulary([str(i) for i in range(1, 8)]))
    keras.utils.set_random_seed(0)
    model = registry.get("gru4rec_ce").cls(num_items=data.num_items, embedding_dim=8, units=8, batch_size=4)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    with pytest.warns(RuntimeWarning, match="12 of 12 targets have NaN scores"):
        hist = model.fit(data, epochs=6, validation_protocol="hcrnn", callbacks=[PoisonAtEpoch(2)], verbose=0)
    losses = hist.history["loss"]
    assert len(losses) == 3 and np.isnan(losses[-1])  # epoch 3 hit a NaN loss and ended training
    assert hist.history["val_recall@20"][-1] == 0.0  # NaN scores are misses, not perfect hits
    assert model.best_epoch in (1, 2)
    scores = model.score_prefix_batch({"items": np.array([[1, 2, 3]])})
    assert np.isfinite(scores).all()  # the best finite epoch's weights are back
    assert evaluate(model, data.test, protocol="hcrnn")["recall@20"] == 100.0  # 8 classes: all within 20
