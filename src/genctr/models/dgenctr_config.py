"""DGenCTR configuration and the fixed set of field tokens a sample is made of.

A sample is the unordered set of these fields (canonical order only names them; the
denoiser is a set function, so the order tokens are stacked in does not matter):

    user    user vocabulary index
    item    target item index
    cate    target item's category index
    price   price bucket (see ``price_boundaries``)
    seq     the behaviour sequence, one token: target attention pooled over the history
    label   the click, vocabulary {0, 1}
"""
from __future__ import annotations

from dataclasses import dataclass

from genctr.config import check_range, coerce_fields
from genctr.errors import ConfigError, describe

FIELDS: tuple[str, ...] = ("user", "item", "cate", "price", "seq", "label")
FIELD_INDEX: dict[str, int] = {name: k for k, name in enumerate(FIELDS)}
LABEL = FIELD_INDEX["label"]
SEQ = FIELD_INDEX["seq"]
N_FIELDS = len(FIELDS)

SCHEDULES = ("linear", "cosine")
LOSS_WEIGHTINGS = ("mdlm", "inverse", "none")
TRANSFER_MODES = ("full", "embedding_only", "scorer_only", "encoder")
TRANSFER_GROUPS = ("tables", "all")
PRETRAIN_SAMPLES = ("impressions", "behaviours", "both")

# Price vocabulary: 0 = padding (unused), 1 = unknown (price <= 0 or not finite, e.g.
# MovieLens, which has no price), 2 + b = bucket b of torch.bucketize(price, boundaries),
# b in 0..len(boundaries). Roughly log-spaced, so it suits prices from cents to thousands.
DEFAULT_PRICE_BOUNDARIES: tuple[float, ...] = (
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
)


@dataclass
class DGenCTRConfig:
    """Hyper-parameters of DGenCTR (pretraining and fine-tuning share one network).

    Vocabulary sizes are not here: they come from the feature build and are given to
    ``DGenCTR(cfg, n_users=..., n_items=..., n_cates=...)``.
    """

    embed_dim: int = 64  # d: every embedding, token and head output
    n_layers: int = 2  # transformer encoder layers of the denoiser
    n_heads: int = 4  # attention heads; must divide embed_dim
    ffn_mult: int = 4  # encoder feed-forward width = ffn_mult * embed_dim
    head_hidden: int = 128  # hidden width of each scoring head G_k (a 2-layer MLP)
    dropout: float = 0.1  # encoder dropout
    timesteps: int = 100  # T: diffusion steps; t is drawn uniformly from 1..T
    schedule: str = "linear"  # mask ratio λ(t): linear t/T | cosine 1 - cos(π t / 2T)
    temperature: float = 0.1  # τ of the cosine sampled softmax (and of the CTR logit)
    loss_weighting: str = "mdlm"  # mdlm: T(λ(t)-λ(t-1))/λ(t) (= 1/λ(t) when linear) | inverse: 1/λ(t) | none
    # what fine-tuning copies from pretraining: full | embedding_only | scorer_only | encoder (every tensor but
    # the label's own: its value table and the scoring heads start fresh, a new label head on the pretrained
    # network)
    transfer: str = "full"
    # what train.transfer_lr_mult and train.transfer_freeze_steps act on in fine-tuning: "tables" = the copied
    # embedding tables; "all" = every copied tensor (with transfer_lr_mult 0, a frozen pretrained network
    # under whatever was not copied, e.g. the fresh label head of transfer=encoder)
    transfer_group: str = "tables"
    label_in_pretraining: bool = True  # False: the label token is always masked in pretraining, never a target
    diffusion: bool = True  # False: one fixed mask ratio for every sample (and a single timestep, t = 1)
    fixed_mask_ratio: float = 0.5  # the ratio when diffusion=False (0.5 = the linear schedule's mean)
    feature_specific_heads: bool = True  # False: one scoring head shared by every field
    price_boundaries: tuple[float, ...] = DEFAULT_PRICE_BOUNDARIES  # price bucket edges, increasing
    # fields whose vocabulary (table rows) is at most this are scored against every value of their
    # table (a full softmax), larger ones against the values in the batch. In-batch candidates of a
    # small field are mostly copies of a few values: the label's would be one true logit against ~B/2
    # copies of the opposite label (a loss of ~log B at init, not log 2). >= 2, so the label always is
    full_softmax_vocab: int = 64
    # what pretraining denoises: "impressions" = every training impression (labels of the labelled share
    # only); "behaviours" = the labelled impressions plus every training-period behaviour as a sample
    # without a label (the corpus GenCTR's next-item pretraining reads, here at the sample level);
    # "both" = every training impression plus the behaviours
    pretrain_samples: str = "impressions"
    # factor on the label field's cross-entropy in the pretraining loss (1 = a field like the others).
    # Labels are known on a share f of the samples only, and the label is one of six targets, so under
    # scarce labels the shared network hears little of it; 1 / f gives it a labelled field's weight
    label_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        coerce_fields(self, "dgenctr")  # types first: bools are not ints, floats are finite
        for name in ("embed_dim", "n_layers", "n_heads", "ffn_mult", "head_hidden", "timesteps"):
            check_range(f"dgenctr.{name}", getattr(self, name), lo=1)
        check_range("dgenctr.full_softmax_vocab", self.full_softmax_vocab, lo=2)
        if self.embed_dim % self.n_heads:
            raise ConfigError(
                f"dgenctr.embed_dim ({self.embed_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        check_range("dgenctr.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        check_range("dgenctr.temperature", self.temperature, lo=0.0, lo_open=True)
        check_range("dgenctr.label_loss_weight", self.label_loss_weight, lo=0.0, lo_open=True)
        check_range("dgenctr.fixed_mask_ratio", self.fixed_mask_ratio, lo=0.0, hi=1.0, lo_open=True)
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("loss_weighting", LOSS_WEIGHTINGS)
        self._check_choice("transfer", TRANSFER_MODES)
        self._check_choice("transfer_group", TRANSFER_GROUPS)
        self._check_choice("pretrain_samples", PRETRAIN_SAMPLES)
        self._check_boundaries()

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"dgenctr.{name} must be one of {choices}, got {describe(getattr(self, name))}")

    def _check_boundaries(self) -> None:
        bounds = self.price_boundaries  # a tuple of finite floats (coerce_fields)
        if not bounds or not all(b > 0 for b in bounds):
            raise ConfigError("dgenctr.price_boundaries must be a non-empty list of positive numbers, "
                              f"got {describe(bounds)}")
        if any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
            raise ConfigError(f"dgenctr.price_boundaries must be strictly increasing, got {describe(bounds)}")

    @property
    def n_price(self) -> int:
        """Size of the price vocabulary: padding, unknown and len(boundaries) + 1 buckets."""
        return len(self.price_boundaries) + 3


__all__ = [
    "DGenCTRConfig",
    "FIELDS",
    "FIELD_INDEX",
    "LABEL",
    "SEQ",
    "N_FIELDS",
    "SCHEDULES",
    "LOSS_WEIGHTINGS",
    "TRANSFER_MODES",
    "TRANSFER_GROUPS",
    "PRETRAIN_SAMPLES",
    "DEFAULT_PRICE_BOUNDARIES",
]
