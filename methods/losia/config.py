"""LoSiA's hyperparameters (shared by ``losia`` and ``losia-pro``; see shared/specs/losia.md).

The learning rate, warm-up length, weight decay, Adam betas/eps and gradient clipping are the
trainer's (``trainer.lr``, ``trainer.warmup_ratio``, ...): they reach ``adapt`` via
``TrainContext`` so that every method is driven by the same trainer knobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# decoder-block linears of Llama-style models
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IMPORTANCE_KINDS = ("param_mix", "param_first", "param_second")


@dataclass
class LosiaConfig:
    """Knobs of LoSiA; defaults are the paper's / release's unless said otherwise.

    rank_factor: p; a target W (d_out x d_in) trains the block W[R, C] with |R| = floor(p*d_out),
        |C| = floor(p*d_in), i.e. about p^2 of its weights.
    period: T, the length in optimizer steps of one layer's profiling window (the release's
        commonsense scripts use 50).
    importance: per-element sensitivity from s = theta*g: ``param_mix`` |s - s^2/2|,
        ``param_first`` |s|, ``param_second`` |s*s|.
    importance_beta1 / importance_beta2: EMA factors of the importance and of its uncertainty.
    output_dim_factor: f > 0 makes lm_head a subnet target with floor(f*vocab) rows and all
        columns (needs an lm_head not tied to the input embedding); 0 leaves it out.
    dense_rest: train every non-target parameter (embeddings, norms, lm_head when not a target)
        densely with plain AdamW, as the release does. Counted in trainable params either way.
    sync: all layers profile during the first T steps of every L*T-step cycle and re-select
        together at its end, instead of one layer per T-step slot (asynchronous, the default).
    rewarm: after a re-selection, the re-selected layer's LR restarts from 0 and rises linearly
        over T steps back to the cosine envelope.
    min_lr_ratio: the cosine decay's floor as a fraction of the peak LR (the release's 0.1);
        applies to subnet and dense parameters and overrides the trainer's floor.
    grad_scale: factor on the subnet gradients before the Adam update (after clipping).
    target_modules: name suffixes of the decoder linears to train as subnets.
    """

    rank_factor: float = 0.125
    period: int = 100
    importance: str = "param_mix"
    importance_beta1: float = 0.85
    importance_beta2: float = 0.85
    output_dim_factor: float = 0.0
    dense_rest: bool = True
    sync: bool = False
    rewarm: bool = True
    min_lr_ratio: float = 0.1
    grad_scale: float = 1.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))

    def __post_init__(self) -> None:
        if not 0.0 < self.rank_factor <= 1.0:
            raise ValueError(f"rank_factor must be in (0, 1], got {self.rank_factor}")
        if not 0.0 <= self.output_dim_factor <= 1.0:
            raise ValueError(f"output_dim_factor must be in [0, 1], got {self.output_dim_factor}")
        if self.period < 1:
            raise ValueError(f"period must be >= 1, got {self.period}")
        if self.importance not in IMPORTANCE_KINDS:
            raise ValueError(f"importance must be one of {IMPORTANCE_KINDS}, got {self.importance!r}")
