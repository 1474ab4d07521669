"""Reusable layers: recurrent cells, attention readouts, decoders, latent layers."""

from tfrec.layers.attention import NARMAttention, masked_softmax
from tfrec.layers.decoders import BilinearDecoder
from tfrec.layers.hcrnn import BiChannelAttention, GlobalContextInference, HCRNNCell, MinValue
from tfrec.layers.hrnn_meta import FeatureMixDecoder, HGRUCell, HierarchyLevel, HRNNMetaCell, TemporalConvStack
from tfrec.layers.hnvm import GaussianLatent, HNVMDecoderCell, diag_normal
from tfrec.layers.pnn import FieldEmbedding, InnerProduct, PNNEncoder
from tfrec.layers.state import LaneState, lane_state, lane_states, reset_lane_states
