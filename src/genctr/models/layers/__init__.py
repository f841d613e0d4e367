"""Model building blocks, grouped by role."""
from genctr.models.layers.attention import DecoderBlock, MultiHeadAttention
from genctr.models.layers.cross import CrossLayer, CrossNet
from genctr.models.layers.embedding import FeatureEmbedding, make_embedding
from genctr.models.layers.lookup import gather_dot, lookup
from genctr.models.layers.masking import masked_mean, sequence_mask, used_width
from genctr.models.layers.mlp import MLP
from genctr.models.layers.retrieval import category_top_k
from genctr.models.layers.target_attention import TargetAttention
from genctr.models.layers.windowed_attention import attention_cells, windowed_causal_attention

__all__ = [
    "CrossLayer",
    "CrossNet",
    "DecoderBlock",
    "FeatureEmbedding",
    "MLP",
    "MultiHeadAttention",
    "TargetAttention",
    "attention_cells",
    "category_top_k",
    "gather_dot",
    "lookup",
    "make_embedding",
    "masked_mean",
    "sequence_mask",
    "used_width",
    "windowed_causal_attention",
]
