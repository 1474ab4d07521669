"""One worker of the multi-worker test (run as a subprocess with TF_CONFIG set).

Trains a small dropout-free GRU model on simulated sessions with
``fit_distributed`` and writes its losses and final weights to OUT (npz).
With TF_CONFIG unset it runs single-worker with the same global batch.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from tfrec.data import prefix_batches, simulate_sessions  # noqa: E402
from tfrec.models.base import SequentialRecommender  # noqa: E402
from tfrec.training.distributed import fit_distributed, get_strategy  # noqa: E402


class SmallGRU(SequentialRecommender):
    causal = True

    def __init__(self, num_items, hidden=16, **kw):
        super().__init__(num_items, **kw)
        self.emb = layers.Embedding(num_items, hidden, mask_zero=True)
        self.gru = layers.GRU(hidden, return_sequences=True)
        self.out = layers.Dense(num_items)

    def encode_sequence(self, x, training=False):
        return self.gru(self.emb(x["items"]), training=training)

    def decode(self, h, training=False):
        return self.out(h)


def main(out, epochs):
    strategy = get_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "default")
    data = simulate_sessions(num_users=200, seed=0)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = SmallGRU(data.num_items)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    fit_error = ""
    if os.environ.get("TF_CONFIG"):  # Keras fit must refuse several workers before touching anything
        try:
            model.fit(data, epochs=1, verbose=0)
            fit_error = "fit ran"
        except ValueError as e:
            fit_error = str(e)
    hist = fit_distributed(model, lambda e: prefix_batches(data.train, 64, shuffle=True, seed=0, epoch=e),
                           epochs=epochs, strategy=strategy, verbose=0)
    np.savez(out, loss=np.array(hist["loss"]), fit_error=np.array(fit_error), *[w for w in model.get_weights()])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
