"""Flax networks made pure once: ``init(key, example_x) -> params``, ``apply(params, x)``."""

from jaxmeta.nets.base import Network, from_linen
from jaxmeta.nets.conv import Conv4, conv4
from jaxmeta.nets.embedding import EmbeddingMLP, decision_layers, embedding_mlp
from jaxmeta.nets.layers import PatchConv, TaskBatchNorm, conv3x3, conv_norm_relu_pool, im2col_3x3, max_pool_2x2
from jaxmeta.nets.mlp import MLP, mlp
from jaxmeta.nets.multimodal import MultimodalEncoder, StrokeEncoder, multimodal_encoder, stroke_encoder

__all__ = ["Network", "from_linen", "mlp", "MLP", "conv4", "Conv4", "TaskBatchNorm", "max_pool_2x2", "PatchConv", "im2col_3x3", "conv3x3",
           "conv_norm_relu_pool", "embedding_mlp", "EmbeddingMLP", "decision_layers", "stroke_encoder", "StrokeEncoder", "multimodal_encoder",
           "MultimodalEncoder"]
