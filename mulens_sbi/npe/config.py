"""Frozen dataclass configurations for the neural posterior estimator (generic, domain-free).

Every config is hashable (it is a field of a flax module), round-trips through plain JSON
(``to_dict`` / ``from_dict``) and validates itself on construction, raising ``ValueError`` that
names the offending field and its allowed range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FlowConfig",
    "EmbeddingConfig",
    "NPEConfig",
    "TrainConfig",
]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v = v.to_dict()  # type: ignore[union-attr]
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - set(names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            sub = _NESTED.get((cls.__name__, k))
            if sub is not None and isinstance(v, dict):
                v = sub.from_dict(v)
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)


@dataclass(frozen=True)
class FlowConfig(_DictMixin):
    """Conditional rational-quadratic neural spline flow (coupling layers).

    Attributes:
        n_layers: number of spline coupling layers (each preceded by a fixed permutation).
        hidden: widths of the conditioner MLP's hidden layers.
        n_bins: number of spline bins K per dimension.
        bound: the spline acts on [-bound, bound]; outside it each layer is the identity (linear
            tails), so the flow is a bijection of all of R^D.
        affine_first: a context-conditioned elementwise affine map (shift, log-scale) applied first
            in the data -> noise direction; makes narrow posteriors easy to reach.
        permutation_seed: seed of the fixed random permutations (part of the architecture).
        min_bin_width, min_bin_height, min_derivative: numerical floors of the spline.
        activation: "gelu", "silu", "relu" or "tanh".
    """

    n_layers: int = 6
    hidden: tuple[int, ...] = (128, 128)
    n_bins: int = 8
    bound: float = 5.0
    affine_first: bool = True
    permutation_seed: int = 0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3
    activation: str = "gelu"

    def __post_init__(self) -> None:
        _require(self.n_layers >= 1, f"FlowConfig.n_layers must be >= 1, got {self.n_layers}")
        _require(len(self.hidden) >= 1 and all(int(h) >= 1 for h in self.hidden),
                 f"FlowConfig.hidden must be a non-empty tuple of positive ints, got {self.hidden}")
        _require(self.n_bins >= 2, f"FlowConfig.n_bins must be >= 2, got {self.n_bins}")
        _require(self.bound > 0, f"FlowConfig.bound must be > 0, got {self.bound}")
        _require(0 < self.min_bin_width * self.n_bins < 1,
                 f"FlowConfig.min_bin_width*n_bins must be in (0, 1), got {self.min_bin_width * self.n_bins}")
        _require(0 < self.min_bin_height * self.n_bins < 1,
                 f"FlowConfig.min_bin_height*n_bins must be in (0, 1), got {self.min_bin_height*self.n_bins}")
        _require(0 < self.min_derivative < 1, f"FlowConfig.min_derivative must be in (0, 1), got "
                 f"{self.min_derivative}")
        _require(self.activation in _ACTIVATIONS,
                 f"FlowConfig.activation must be one of {_ACTIVATIONS}, got {self.activation!r}")


_ACTIVATIONS = ("gelu", "silu", "relu", "tanh")
_EMBEDDINGS = ("identity", "mlp", "binned_conv")


@dataclass(frozen=True)
class EmbeddingConfig(_DictMixin):
    """Embedding network that turns an observation into the flow's context vector.

    kinds:
      - ``"identity"``: the observation is already a flat vector (..., n_features).
      - ``"mlp"``: an MLP on a flat vector (..., n_features).
      - ``"binned_conv"``: a light curve of fixed padded length N as an array (..., N, 4) with
        channels (t_norm, flux_norm, sigma_norm, mask); points are binned onto ``n_bins`` cells of
        [0, 1] in t_norm (inverse-variance weighted), then a 1-D residual CNN and global pooling.
        Masked points (mask == 0) carry zero weight and cannot affect the output.

    Attributes:
        out_dim: size of the context vector (ignored for "identity").
        hidden: MLP widths ("mlp") or the head MLP after pooling ("binned_conv").
        n_bins: time bins of the binned CNN.
        channels: conv channels per stage ("binned_conv"); each stage halves the length.
        blocks_per_stage: residual blocks per stage.
        kernel_size: conv kernel width.
        activation: as in FlowConfig.
    """

    kind: str = "mlp"
    out_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    n_bins: int = 512
    channels: tuple[int, ...] = (32, 64, 64, 128)
    blocks_per_stage: int = 1
    kernel_size: int = 5
    activation: str = "gelu"

    def __post_init__(self) -> None:
        _require(self.kind in _EMBEDDINGS, f"EmbeddingConfig.kind must be one of {_EMBEDDINGS}, "
                 f"got {self.kind!r}")
        _require(self.out_dim >= 1, f"EmbeddingConfig.out_dim must be >= 1, got {self.out_dim}")
        _require(all(int(h) >= 1 for h in self.hidden), f"EmbeddingConfig.hidden must be positive ints, "
                 f"got {self.hidden}")
        _require(self.n_bins >= 2, f"EmbeddingConfig.n_bins must be >= 2, got {self.n_bins}")
        _require(len(self.channels) >= 1 and all(int(c) >= 1 for c in self.channels),
                 f"EmbeddingConfig.channels must be a non-empty tuple of positive ints, got {self.channels}")
        _require(self.n_bins % (2 ** (len(self.channels) - 1)) == 0,
                 f"EmbeddingConfig.n_bins ({self.n_bins}) must be divisible by 2**(len(channels)-1) = "
                 f"{2 ** (len(self.channels) - 1)}")
        _require(self.blocks_per_stage >= 0, "EmbeddingConfig.blocks_per_stage must be >= 0")
        _require(self.kernel_size >= 1 and self.kernel_size % 2 == 1,
                 f"EmbeddingConfig.kernel_size must be a positive odd int, got {self.kernel_size}")
        _require(self.activation in _ACTIVATIONS,
                 f"EmbeddingConfig.activation must be one of {_ACTIVATIONS}, got {self.activation!r}")


@dataclass(frozen=True)
class NPEConfig(_DictMixin):
    """Whole network: embedding + conditional flow, and the float type it computes in.

    ``dtype`` is "float32" (default: fast, GPU friendly) or "float64" (used by the exact-identity
    tests). Inputs are cast to it on entry.
    """

    flow: FlowConfig = field(default_factory=FlowConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _require(self.dtype in ("float32", "float64"),
                 f"NPEConfig.dtype must be 'float32' or 'float64', got {self.dtype!r}")


@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """Training loop settings (optax AdamW, warm-up + cosine schedule, global-norm clipping).

    Attributes:
        max_steps: optimizer steps at most.
        batch_size: simulations per step.
        learning_rate: peak learning rate; warmup_steps linear warm-up from 0, then cosine decay to
            ``learning_rate * final_lr_fraction`` at ``max_steps``.
        weight_decay: AdamW decoupled weight decay.
        clip_norm: global gradient-norm clip.
        val_size: validation simulations (drawn once, from a key derived from ``seed``; or held
            out of the arrays).
        eval_every: steps between validation evaluations.
        patience: early stopping after this many evaluations without improvement by ``min_delta``
            (0 disables early stopping).
        checkpoint_every: steps between training-state checkpoints (when a directory is given).
        seed: root seed: initialization, validation set, per-step simulation keys and shuffles.
    """

    max_steps: int = 1000
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    final_lr_fraction: float = 0.01
    weight_decay: float = 1e-5
    clip_norm: float = 5.0
    val_size: int = 1024
    eval_every: int = 50
    patience: int = 10
    min_delta: float = 0.0
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "val_size", "eval_every", "checkpoint_every"):
            _require(int(getattr(self, name)) >= 1, f"TrainConfig.{name} must be >= 1, got "
                     f"{getattr(self, name)}")
        _require(self.learning_rate > 0, f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        _require(0 <= self.warmup_steps < self.max_steps,
                 f"TrainConfig.warmup_steps must be in [0, max_steps), got {self.warmup_steps}")
        _require(0 < self.final_lr_fraction <= 1, "TrainConfig.final_lr_fraction must be in (0, 1]")
        _require(self.weight_decay >= 0, "TrainConfig.weight_decay must be >= 0")
        _require(self.clip_norm > 0, "TrainConfig.clip_norm must be > 0")
        _require(self.patience >= 0, "TrainConfig.patience must be >= 0")


_NESTED: dict[tuple[str, str], type] = {
    ("NPEConfig", "flow"): FlowConfig,
    ("NPEConfig", "embedding"): EmbeddingConfig,
}
