"""STAMP diagnostic: does the HCRNN authors' rank computation change our STAMP's numbers?

The authors' code ranks a target by its float32 softmax *probability* with optimistic
ties (``../shared/notes/hcrnn_reference_protocol.md``); tfrec's ``hcrnn`` protocol ranks
the model's scores. For STAMP, whose scores are sigmoid outputs fed to a softmax, the two
could differ if many sigmoid outputs saturated at exactly 1.0 in float32 (or became equal
after the softmax's rounding): the target would then tie with them and the optimistic rule
would rank it first. This script trains STAMP with the Table 3 settings and, every
``--every`` epochs, evaluates the validation split both ways and counts saturated outputs.

Usage::

    python benchmarks/stamp_tie_probe.py --epochs 40 --every 5 --seed 10

Writes ``benchmarks/results/stamp_tie_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import command, machine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def probe(model, split) -> dict:
    """hcrnn-protocol metrics from the scores, from float32 softmax probabilities
    (optimistic and conservative ties), and the mean number of saturated outputs."""
    import tensorflow as tf

    from tfrec.data.pipelines import prefix_batches
    from tfrec.metrics import metrics_from_ranks, ranks_from_scores

    ranks = {"scores_optimistic": [], "probabilities_optimistic": [], "probabilities_conservative": []}
    saturated = []
    for x, y in prefix_batches(split, 512, bucket=True):
        s = np.asarray(model.score_prefix_batch(x), np.float32)
        p = tf.nn.softmax(tf.constant(s), axis=-1).numpy()
        y = np.asarray(y)
        ranks["scores_optimistic"].append(ranks_from_scores(s, y, "optimistic"))
        ranks["probabilities_optimistic"].append(ranks_from_scores(p, y, "optimistic"))
        ranks["probabilities_conservative"].append(ranks_from_scores(p, y, "conservative"))
        saturated.append((s == 1.0).sum(-1))
    out = {k: metrics_from_ranks(np.concatenate(v), (3, 20), ("recall", "mrr"), 100.0) for k, v in ranks.items()}
    out["saturated_outputs_per_row"] = float(np.concatenate(saturated).mean())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--data", default="hcrnn:hcrnn_citeulike")
    args = ap.parse_args(argv)
    import keras

    from tfrec.data import load_spec
    from tfrec.models.stamp import STAMP

    data = load_spec(args.data)
    keras.utils.set_random_seed(args.seed)
    model = STAMP(num_items=data.num_items, embedding_dim=100, batch_size=19, layout="sequence",
                  target_normalizer=512, seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8))
    rows = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % args.every == 0 or epoch == 0:
                rows.append({"epoch": epoch + 1, "loss": float(logs["loss"]), **probe(self.model, data.valid)})
                print(json.dumps(rows[-1]), flush=True)

    import dataclasses

    # the probe evaluates the validation split itself; fit trains without selection
    train_only = dataclasses.replace(data, valid=data.valid.subset(np.arange(0)))
    model.fit(train_only, epochs=args.epochs, callbacks=[Probe()], verbose=0)
    same = all(abs(r["scores_optimistic"][k] - r["probabilities_optimistic"][k]) < 1e-9
               for r in rows for k in r["scores_optimistic"])
    out = {"command": command(), "machine": machine(), "seed": args.seed, "epochs": args.epochs,
           "rows": rows, "scores_and_probability_ranking_identical": same,
           "max_saturated_outputs_per_row": max(r["saturated_outputs_per_row"] for r in rows)}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "stamp_tie_probe.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k: out[k] for k in ("scores_and_probability_ranking_identical",
                                          "max_saturated_outputs_per_row")}))


if __name__ == "__main__":
    main()
