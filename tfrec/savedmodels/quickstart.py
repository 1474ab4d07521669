"""The last part of ``tfrec quickstart``: export, serve on loopback, query over gRPC."""

from __future__ import annotations

import os
import time


def quickstart_export_and_serve(model, data, out_dir: str, serve: bool = True, k: int = 5) -> dict:
    """Exports ``model`` to ``out_dir/savedmodels/<name>/<version>``, starts the tfrec
    server on a free loopback port, sends one gRPC Predict with the official
    stub (through :class:`tfrec.serving.Client`), prints the top items and stops.

    Returns:
        dict with ``export_dir``, and when served ``grpc_port``, ``history``,
        ``recommendations`` (``[(item_id, score)]``) and ``predict_ms``.
    """
    from tfrec.savedmodels.export import export

    name = getattr(model, "registry_name", "") or "model"
    base = os.path.join(out_dir, "savedmodels", name)
    path = export(model, base, data=data, model_name=name)
    print(f"\nexported SavedModel: {path}")
    result = {"export_dir": path}
    if not serve:
        return result
    from tfrec.serving import Client, ModelServer

    seqs = data.test if len(data.test) else data.train
    hist_idx = seqs.sequence(0)[:-1] if len(seqs) else []
    history = data.item_vocab.ids(hist_idx) if len(hist_idx) else []
    from tfrec.savedmodels.export import export_features

    feats = export_features(model)
    timestamps = query_times = None
    if "deltas" in feats and seqs.times is not None:
        a = int(seqs.offsets[0])
        timestamps = [seqs.times[a : a + len(history)].tolist()]
        if "query_deltas" in feats:  # asked at the time of the held-out next event
            query_times = [float(seqs.times[a + len(history)])]
    user_ids = None
    if "user" in feats and seqs.users is not None and data.user_vocab is not None:
        u = int(seqs.users[0])
        user_ids = [data.user_vocab.ids([u])[0] if u else ""]
    server = ModelServer.from_base_path(name, base, file_system_poll_wait_seconds=0)
    server.start(port=0, rest_api_port=None)
    try:
        with Client(f"127.0.0.1:{server.port}", name) as client:
            t0 = time.perf_counter()
            recs = client.recommend([history], k=min(k, model.num_items - 1), timestamps=timestamps,
                                    user_ids=user_ids, query_times=query_times)[0]
            ms = (time.perf_counter() - t0) * 1e3
    finally:
        server.stop()
    print(f"served over gRPC (tensorflow.serving.PredictionService/Predict) on 127.0.0.1:{server.port}")
    print(f"history {history[-10:]} -> top {len(recs)}: " + ", ".join(f"{i} ({s:.3f})" for i, s in recs))
    result.update(grpc_port=server.port, history=history, recommendations=recs, predict_ms=ms)
    return result
