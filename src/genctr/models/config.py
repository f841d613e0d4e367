"""Model configuration: backbones, the GenCTR decoder and its pretraining, and transfer.

Vocabulary sizes are *table sizes* (largest index + 1, so they count the padding row 0 and
the out-of-vocabulary row 1). They are unknown when a YAML config is written: leave them 0
and fill them from the feature build's ``stats.json`` with :meth:`ModelConfig.with_vocab`;
model constructors call :meth:`ModelConfig.require_vocab`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from genctr.config import check_range, coerce_fields
from genctr.errors import ConfigError, describe
from genctr.features.layout import FIRST_ID

BACKBONES = ("dnn", "dcnv2", "dcnv2_ta")
NEGATIVES = ("cs", "rs")  # category-conditioned (paper) | random (ablation)
SIMILARITIES = ("dot", "cosine")
TRANSFERS = ("none", "share", "integrate")
POOLINGS = ("sum", "mean")  # target-attention pooling (see TargetAttention)
INITS = ("xavier", "torch")  # Linear-layer init of the backbones (see ModelConfig.init)
INTEGRATION_SCALES = ("match", "none")  # the integration feature's scale (see ModelConfig.integration_scale)
DECODER_ATTENTIONS = ("full", "window")  # the decoder's causal attention (see DecoderConfig.attention)
DECODER_CONTEXTS = ("causal", "bidirectional")  # what pretraining lets a position see (DecoderConfig.context)
TARGET_ATTENTIONS = ("full", "sim")  # dcnv2_ta's target attention (see ModelConfig.attention)


def _positive_dims(name: str, dims: tuple[int, ...]) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (already type-checked by ``coerce_fields``)."""
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"model.{name} must be a non-empty list of positive integers, got {describe(dims)}")
    return dims


@dataclass
class DecoderConfig:
    """The GenCTR conditional self-attention decoder."""

    d_model: int = 64  # width of the attention stream (item/category tables stay embed_dim wide)
    n_layers: int = 1  # 1 = the paper's single conditional layer; more add causal self-attn blocks
    n_heads: int = 2  # must divide d_model
    ffn_mult: int = 4  # feed-forward hidden width = ffn_mult * d_model
    dropout: float = 0.1  # on embeddings, attention weights and residual branches
    # attention-weight dropout if set (None = ``dropout``); 0 lets CPU training use the fused
    # attention kernel (several times faster at L = 200: PyTorch has no fused CPU kernel with dropout)
    attn_dropout: float | None = None
    # causal attention: "full" = position t attends BOS and every item before it (T^2 score cells a
    # sequence of T, O(L^2)); "window" = BOS and only the `window` most recent items before t, computed
    # in chunks of T (2 window + 1) cells, O(L window): layers/windowed_attention.py. "full" is what every
    # artifact written before this option holds; with window >= L the two are the same function
    attention: str = "full"
    # "window" only: items each query attends besides BOS; 64 = a third of the paper's L = 200, and at
    # L = 2000 the chunks hold 258k score cells per head and sequence instead of 4M
    window: int = 64
    # what a pretraining position is predicted from: "causal" = the behaviours before it (next-item
    # prediction, the paper's objective); "bidirectional" = every other behaviour of the window, before
    # and after it (a cloze objective in the spirit of BERT4Rec: each position is one masked item,
    # predicted from the rest). Fine-tuning and serving always read the history before the target, so
    # only pretraining changes; the held-out next-item diagnostics stay causal. Bidirectional needs the
    # one-layer decoder with full attention (a second layer would pass item t back to query t)
    context: str = "causal"

    def __post_init__(self) -> None:
        coerce_fields(self, "model.decoder")
        if self.attention not in DECODER_ATTENTIONS:
            raise ConfigError(f"model.decoder.attention must be one of {DECODER_ATTENTIONS}, "
                              f"got {describe(self.attention)}")
        if self.context not in DECODER_CONTEXTS:
            raise ConfigError(f"model.decoder.context must be one of {DECODER_CONTEXTS}, got {describe(self.context)}")
        if self.context == "bidirectional" and (self.n_layers != 1 or self.attention != "full"):
            raise ConfigError("model.decoder.context = 'bidirectional' needs n_layers = 1 and attention = 'full' "
                              f"(got n_layers = {self.n_layers}, attention = {self.attention!r}): a later "
                              "self-attention layer would show query t its own item through another position")
        for name in ("d_model", "n_layers", "n_heads", "ffn_mult", "window"):
            check_range(f"model.decoder.{name}", getattr(self, name), lo=1)
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.decoder.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        check_range("model.decoder.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        if self.attn_dropout is not None:
            check_range("model.decoder.attn_dropout", self.attn_dropout, lo=0.0, hi=1.0, hi_open=True)


@dataclass
class ModelConfig:
    """Architecture of a CTR backbone, the GenCTR decoder and how the two are combined."""

    backbone: str = "dnn"  # dnn | dcnv2 | dcnv2_ta
    embed_dim: int = 16  # width of every feature embedding (shared with the decoder's tables)
    mlp_dims: tuple[int, ...] = (256, 128)  # deep tower hidden widths
    cross_layers: int = 3  # DCN-V2 cross layers
    attention_dims: tuple[int, ...] = (64, 32)  # DIN target-attention MLP hidden widths
    # target-attention pooling: "sum" (DIN's weighted sum) | "mean" (the same weights averaged
    # over the valid positions; better on MovieLens, worse on the synthetic world: RESULTS.md)
    attention_pooling: str = "sum"
    # target attention over the history (dcnv2_ta only): "full" = DIN over all L behaviours, an MLP on
    # every (candidate, behaviour) cell, O(L) per candidate; "sim" = SIM-style two stages: a hard search
    # keeps the `sim_top_k` behaviours of the target's category (most recent first; the rest of the K
    # slots go to the most recent other behaviours), then DIN over those K: O(L) integer compares +
    # O(K) MLP cells (layers/retrieval.py). "full" is what artifacts written before this option hold;
    # with sim_top_k >= L the two are the same function
    attention: str = "full"
    sim_top_k: int = 64  # "sim" only: behaviours kept per candidate (at L = 2000, 31x fewer MLP cells)
    dropout: float = 0.1  # deep tower dropout
    # Linear weights of the backbone (tower, cross, attention MLP, head): "xavier" = Xavier-normal,
    # zero bias; "torch" = PyTorch's default Kaiming-uniform(a=sqrt(5)), std 1/sqrt(3 fan_in),
    # half Xavier's in a tower's narrowing layers, which left short training visibly behind
    # on the synthetic world (benchmarks/RESULTS.md, "Model quality against FuxiCTR")
    init: str = "xavier"
    n_users: int = 0  # table sizes (index 0 = pad, 1 = OOV); 0 = not set yet, see with_vocab
    n_items: int = 0
    n_cates: int = 0
    max_seq_len: int = 200  # L: history length the batches carry
    # GenCTR pretraining
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    negatives: str = "cs"  # cs: same category as the positive | rs: uniform over real items
    n_negatives: int = 20  # K sampled negatives per position
    temperature: float = 0.1  # logits = similarity / temperature (for dot as well as cosine)
    similarity: str = "cosine"  # cosine | dot between the decoder output and item embeddings
    # log-Q correction of the sampled softmax: each negative's logit minus log(K q(negative)), so the
    # loss estimates the softmax over the sampler's whole support (for rs: every item) instead of
    # one over K + 1 candidates. None = on for rs, off for cs (whose support is one category)
    logq_correction: bool | None = None
    # share of a pretraining window that the next window (one `stride` = L (1 - overlap) further back)
    # also covers, in [0, 1): with 0.5 every behaviour past a user's first L/2 is predicted at least
    # once with >= L/2 behaviours of context; 0 = the non-overlapping windows, whose first position
    # is predicted from nothing
    window_overlap: float = 0.5
    # fine-tuning
    transfer: str = "none"  # none | share (embedding init) | integrate (share + decoder feature)
    # integrate: "match" = the decoder feature is RMS-normalised per row and multiplied by a learned
    # scalar initialised to the per-dim RMS of the backbone's embedding tables, so it enters x0 at the
    # scale of the inputs beside it (the LayerNorm output is ~1 per dim, the embeddings ~0.02-0.1);
    # "none" = the raw LayerNorm output (what artifacts written before this option hold). The default
    # stays "none" until the MovieLens ablation settles it: on the synthetic world (1 seed) "match"
    # scored below the raw feature (dnn AUC 0.566 vs 0.797), whose gain there shows even with an
    # untrained decoder, i.e. it acts as an extra history encoder rather than as transfer.
    integration_scale: str = "none"

    def __post_init__(self) -> None:
        coerce_fields(self, "model")  # types first (a decoder mapping becomes a DecoderConfig)
        self._check_choice("backbone", BACKBONES)
        self._check_choice("negatives", NEGATIVES)
        self._check_choice("similarity", SIMILARITIES)
        self._check_choice("transfer", TRANSFERS)
        self._check_choice("init", INITS)
        self._check_choice("attention_pooling", POOLINGS)
        self._check_choice("integration_scale", INTEGRATION_SCALES)
        self._check_choice("attention", TARGET_ATTENTIONS)
        if self.attention == "sim" and self.backbone != "dcnv2_ta":
            raise ConfigError(f"model.attention = 'sim' selects the behaviours of dcnv2_ta's target attention, but "
                              f"model.backbone is {self.backbone!r}, which has none: use backbone dcnv2_ta or "
                              "attention 'full' (the decoder's own option is model.decoder.attention)")
        self.mlp_dims = _positive_dims("mlp_dims", self.mlp_dims)
        self.attention_dims = _positive_dims("attention_dims", self.attention_dims)
        for name in ("embed_dim", "cross_layers", "max_seq_len", "n_negatives", "sim_top_k"):
            check_range(f"model.{name}", getattr(self, name), lo=1)
        for name in ("n_users", "n_items", "n_cates"):
            n = getattr(self, name)
            if n != 0 and n <= FIRST_ID:
                raise ConfigError(
                    f"model.{name} is a table size (largest index + 1) and must be > {FIRST_ID} "
                    f"(rows 0 and 1 are padding and OOV), or 0 for 'not set yet'; got {n}"
                )
        check_range("model.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        check_range("model.temperature", self.temperature, lo=0.0, lo_open=True)
        check_range("model.window_overlap", self.window_overlap, lo=0.0, hi=1.0, hi_open=True)

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"model.{name} must be one of {choices}, got {describe(getattr(self, name))}")

    @property
    def uses_logq(self) -> bool:
        """Whether pretraining applies the log-Q correction (``logq_correction``, None = on for rs)."""
        return self.negatives == "rs" if self.logq_correction is None else self.logq_correction

    def window_stride(self, max_seq_len: int | None = None) -> int:
        """Behaviours between the ends of consecutive pretraining windows: L (1 - overlap), >= 1."""
        L = self.max_seq_len if max_seq_len is None else max_seq_len
        return max(1, round(L * (1.0 - self.window_overlap)))

    def with_vocab(self, n_users: int, n_items: int, n_cates: int) -> ModelConfig:
        """A copy with the vocabulary table sizes set (validated again)."""
        return dataclasses.replace(self, n_users=n_users, n_items=n_items, n_cates=n_cates)

    def require_vocab(self, *names: str) -> None:
        """Raise ConfigError unless the named table sizes (default: all three) are set."""
        for name in names or ("n_users", "n_items", "n_cates"):
            if int(getattr(self, name)) == 0:
                raise ConfigError(
                    f"model.{name} is not set: fill the vocabulary sizes from the feature build's "
                    "stats.json (ModelConfig.with_vocab) before building a model"
                )


__all__ = ["BACKBONES", "DECODER_ATTENTIONS", "DECODER_CONTEXTS", "INITS", "INTEGRATION_SCALES", "NEGATIVES",
           "POOLINGS", "SIMILARITIES", "TARGET_ATTENTIONS", "TRANSFERS", "DecoderConfig", "ModelConfig"]
