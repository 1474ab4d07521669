"""gRPC servicers on the official ``tensorflow_serving.apis`` service definitions."""

from __future__ import annotations

import logging

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2, get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,
    predict_pb2, prediction_service_pb2_grpc,
)

from tfrec.serving.server import STATES, ServingError
from tfrec.serving.tensors import to_ndarray, to_proto

log = logging.getLogger("tfrec.serving")


def _abort(context, err: ServingError):
    context.abort(getattr(grpc.StatusCode, err.code, grpc.StatusCode.UNKNOWN), err.message)


def _spec_version(spec):
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
    return version, label


class PredictionServiceServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(self, server):
        self.server = server

    def Predict(self, request, context):
        # Hot path: runs on the gRPC worker thread that received the request, with no
        # further thread hop when batching is off (the signature runs right here).
        try:
            spec = request.model_spec
            version, label = _spec_version(spec)
            try:
                inputs = {k: to_ndarray(v) for k, v in request.inputs.items()}
            except Exception as e:  # noqa: BLE001
                raise ServingError("INVALID_ARGUMENT", f"cannot decode input tensors: {e}")
            sig = spec.signature_name or "serving_default"
            sv, out = self.server.predict(spec.name, inputs, sig, version, label)
            if request.output_filter:
                filt = list(request.output_filter)
                unknown = [k for k in filt if k not in out]
                if unknown:
                    raise ServingError("INVALID_ARGUMENT", f"output tensor alias not found in signature: "
                                                           f"{unknown[0]}")
                out = {k: out[k] for k in filt}
            resp = predict_pb2.PredictResponse()
            resp.model_spec.name = sv.name
            resp.model_spec.version.value = sv.version
            resp.model_spec.signature_name = sig
            outputs = resp.outputs
            for k, v in out.items():
                to_proto(v, outputs[k])  # filled in place, no intermediate message
            return resp
        except ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001 - never crash on a request
            log.exception("Predict failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise ServingError("INVALID_ARGUMENT",
                                   "Metadata field(s) must be exactly ['signature_def'], got " + str(fields))
            version, label = _spec_version(request.model_spec)
            sv = self.server.model(request.model_spec.name).resolve(version, label)
            sdm = get_model_metadata_pb2.SignatureDefMap()
            for k, sd in sv.signature_defs.items():
                sdm.signature_def[k].CopyFrom(sd)
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            resp.model_spec.name = sv.name
            resp.model_spec.version.value = sv.version
            resp.metadata["signature_def"].Pack(sdm)
            return resp
        except ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001
            log.exception("GetModelMetadata failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "tfrec serve implements Predict and GetModelMetadata; use Predict")

    Classify = _unimplemented
    Regress = _unimplemented
    MultiInference = _unimplemented


class ModelServiceServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus, HandleReloadConfigRequest."""

    def __init__(self, server):
        self.server = server

    def GetModelStatus(self, request, context):
        try:
            version, _ = _spec_version(request.model_spec)
            st = self.server.status(request.model_spec.name, version)
            resp = get_model_status_pb2.GetModelStatusResponse()
            for v in sorted(st):
                s = st[v]
                mv = resp.model_version_status.add()
                mv.version = v
                mv.state = get_model_status_pb2.ModelVersionStatus.State.Value(s["state"])
                mv.status.error_code = getattr(grpc.StatusCode, s["error_code"]).value[0]
                mv.status.error_message = s["error_message"]
            return resp
        except ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001
            log.exception("GetModelStatus failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    def HandleReloadConfigRequest(self, request, context):
        from tfrec.serving.server import ModelConfig

        resp = model_management_pb2.ReloadConfigResponse()
        try:
            which = request.config.WhichOneof("config")
            if which != "model_config_list":
                raise ServingError("INVALID_ARGUMENT", "only model_config_list configs are supported")
            cfgs = [ModelConfig.from_proto(c) for c in request.config.model_config_list.config]
            self.server.apply_configs(cfgs)
            resp.status.error_code = 0
        except ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001
            resp.status.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            resp.status.error_message = f"{type(e).__name__}: {e}"
        return resp


assert set(STATES) >= {"AVAILABLE", "END"}
