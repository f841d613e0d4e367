"""PyTorch models: CTR backbones, the GenCTR decoder and transfer between them.

Models return logits; losses live in the training step (``genctr.models.losses`` holds the
pure loss functions it calls).
"""
from genctr.models.backbones import DNN, DCNv2, DCNv2TA, build_backbone
from genctr.models.config import DecoderConfig, ModelConfig
from genctr.models.genctr import GenCTR
from genctr.models.losses import sampled_softmax_loss
from genctr.models.sampling import NegativeSampler
from genctr.models.transfer import CTRModel, build_ctr_model, share_embeddings

__all__ = [
    "CTRModel",
    "DCNv2",
    "DCNv2TA",
    "DNN",
    "DecoderConfig",
    "GenCTR",
    "ModelConfig",
    "NegativeSampler",
    "build_backbone",
    "build_ctr_model",
    "sampled_softmax_loss",
    "share_embeddings",
]
