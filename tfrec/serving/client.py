"""``Client``: a thin helper over the official TF Serving gRPC stubs."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


class Client:
    """Talks to any TF Serving gRPC endpoint (``tfrec serve`` or ``tensorflow_model_server``).

    Args:
        target: ``host:port`` of the gRPC endpoint.
        model_name: the served model's name.
        timeout: seconds per call.
        max_message_bytes: gRPC message size limit of the channel.

    Example:

    >>> with Client("127.0.0.1:8500", "recommender") as c:          # doctest: +SKIP
    ...     c.recommend([["12", "7", "31"]], k=5)
    [[('40', 3.2), ...]]
    """

    def __init__(self, target: str, model_name: str, timeout: float = 10.0,
                 max_message_bytes: int = 64 * 1024 * 1024):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

        from tfrec.serving.tensors import to_ndarray, to_proto

        # bound once: a request then runs no import statements
        self._request_type, self._to_proto, self._to_ndarray = predict_pb2.PredictRequest, to_proto, to_ndarray
        opts = [("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes)]
        self.channel = grpc.insecure_channel(target, options=opts)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.model_name = model_name
        self.timeout = timeout

    def _spec(self, spec, signature: str = "", version: Optional[int] = None):
        spec.name = self.model_name
        if signature:
            spec.signature_name = signature
        if version is not None:
            spec.version.value = int(version)

    def predict(self, inputs: Dict[str, np.ndarray], signature: str = "serving_default",
                version: Optional[int] = None, output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """A raw Predict call: numpy inputs -> numpy outputs.

        numpy arrays are encoded with :func:`tfrec.serving.tensors.to_proto` (numbers as
        ``tensor_content``, strings as ``string_val``, written straight into the request);
        anything else (lists, scalars) goes through ``tf.make_tensor_proto`` as before, so
        a Python ``[5]`` is still an int32 tensor. Outputs are decoded with
        :func:`~tfrec.serving.tensors.to_ndarray` (equal to ``tf.make_ndarray``)."""
        to_proto, to_ndarray = self._to_proto, self._to_ndarray
        req = self._request_type()
        self._spec(req.model_spec, signature, version)
        for k, v in inputs.items():
            if isinstance(v, np.ndarray):
                to_proto(v, req.inputs[k])
            else:
                import tensorflow as tf

                req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        if output_filter:
            req.output_filter.extend(output_filter)
        resp = self.prediction.Predict(req, timeout=self.timeout)
        return {k: to_ndarray(v) for k, v in resp.outputs.items()}

    @staticmethod
    def history_inputs(histories: List[Sequence[str]]) -> Dict[str, np.ndarray]:
        """Pads raw-id histories into the ``items`` / ``lengths`` inputs."""
        lengths = np.array([len(h) for h in histories], np.int32)
        T = max(int(lengths.max()) if len(lengths) else 0, 1)
        items = np.full((len(histories), T), b"", dtype=object)
        for i, h in enumerate(histories):
            for j, x in enumerate(h):
                items[i, j] = str(x).encode("utf-8")
        return {"items": items, "lengths": lengths}

    def recommend(self, histories: List[Sequence[str]], k: int = 10, exclude_seen: bool = False,
                  timestamps: Optional[List[Sequence[float]]] = None, user_ids: Optional[Sequence[str]] = None,
                  version: Optional[int] = None,
                  query_times: Optional[Sequence[float]] = None) -> List[List[tuple]]:
        """Top-``k`` ``(item_id, score)`` per history through ``serving_default``.

        ``timestamps``, ``user_ids`` and ``query_times`` are sent when given; the
        model's signature says which it needs (``query_times``, the time of each
        request in the seconds of ``timestamps``, NaN when unknown, is read by
        models whose scores depend on the gap to the request: HRNN-meta, HNVM)."""
        x = self.history_inputs(histories)
        B, T = x["items"].shape
        x["k"] = np.full(B, k, np.int32)
        x["exclude_seen"] = np.full(B, bool(exclude_seen))
        if timestamps is not None:
            ts = np.zeros((B, T), np.float64)
            for i, t in enumerate(timestamps):
                ts[i, : len(t)] = t
            x["timestamps"] = ts
        if user_ids is not None:
            x["user_id"] = np.array([str(u).encode() for u in user_ids], dtype=object)
        if query_times is not None:
            q = np.asarray(query_times, np.float64)
            if q.shape != (B,):
                raise ValueError(f"query_times needs one time per history: shape ({B},), got {q.shape}")
            x["query_timestamp"] = q
        out = self.predict(x, version=version)
        return [[(i.decode("utf-8"), float(s)) for i, s in zip(ids, sc) if i]
                for ids, sc in zip(out["item_ids"], out["scores"])]

    def metadata(self, version: Optional[int] = None):
        """``GetModelMetadata``: ``{signature name: SignatureDef}``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        req = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(req.model_spec, version=version)
        req.metadata_field.append("signature_def")
        resp = self.prediction.GetModelMetadata(req, timeout=self.timeout)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        return dict(sdm.signature_def)

    def status(self, version: Optional[int] = None) -> List[dict]:
        """``GetModelStatus``: one dict per version (version, state, error)."""
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec, version=version)
        resp = self.models.GetModelStatus(req, timeout=self.timeout)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": states.Name(s.state), "error_code": s.status.error_code,
                 "error_message": s.status.error_message} for s in resp.model_version_status]

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
