"""LoSiA's hyperparameters (shared by ``losia`` and ``losia-pro``; see methods/losia/SPEC.md).

The learning rate, warm-up length, weight decay, Adam betas/eps and gradient clipping are the
trainer's (``trainer.lr``, ``trainer.warmup_ratio``, ...): they reach ``adapt`` via
``TrainContext`` so that every method is driven by the same trainer knobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from methods.base import MethodConfigError
from methods.losia.subnets import read_init_file

# decoder-block linears of Llama-style models
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# linears of one decoder layer that read the same input tensor (LoSiA-Pro gathers it once)
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
IMPORTANCE_KINDS = ("param_mix", "param_first", "param_second")
COMPATS = ("spec", "release")
SCHEDULES = ("spec", "cosine", "cosine_restarts")


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
    compat: ``spec`` (default) trains by our spec's rule; ``release`` reproduces the authors'
        release (KlozeWang/LoSiA) exactly: block Adam with eps 1e-6 on the uncorrected sqrt(v)
        and weight decay after the update, the dense rest with torch Adam (coupled L2 decay),
        moments zeroed but the step count kept at a re-selection, and no gradient clipping
        (the release's clip call runs after its per-parameter hooks stepped and cleared the
        gradients). SPEC.md lists every difference.
    schedule: the subnets' LR rule; None takes the compat's (``spec`` / ``cosine_restarts``).
        ``spec``: warm-up (s+1)/W and cosine envelope; a re-selected layer restarts from 0 and
        rises over T steps to the envelope at the current step. ``cosine_restarts`` (the
        release's scripts): warm-up s/W, cosine envelope, after a re-selection at step r the
        layer ramps from 0 over T steps to a target frozen at r (the envelope at r + W).
        ``cosine`` (the default of the release's attach function): each layer runs its own
        cosine cycle of L*T steps (warm-up over T) that restarts at each of its re-selections,
        lr factor 1e-7 on the first two steps of a restarted cycle; no run-wide envelope.
    rewarm: re-selections restart the re-selected layer's LR as the schedule says; off, they
        leave it alone.
    min_lr_ratio: the cosine decay's floor as a fraction of the peak LR (the release's 0.1);
        applies to subnet and dense parameters and overrides the trainer's floor.
    grad_scale: factor on the subnet gradients before the Adam update (after clipping).
    target_modules: name suffixes of the decoder linears to train as subnets.
    init_subnets: path of a JSON file ``{weight name: [rows, cols]}`` (``state_dict`` names, e.g.
        ``model.layers.0.self_attn.q_proj.weight``) naming every target's initial subnet,
        instead of the seeded random one; checked against the model before training.
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
    compat: str = "spec"
    schedule: str | None = None
    init_subnets: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.rank_factor <= 1.0:
            raise MethodConfigError(f"rank_factor must be in (0, 1], got {self.rank_factor}")
        if not 0.0 <= self.output_dim_factor <= 1.0:
            raise MethodConfigError(f"output_dim_factor must be in [0, 1], got {self.output_dim_factor}")
        if self.period < 1:
            raise MethodConfigError(f"period must be >= 1, got {self.period}")
        if self.importance not in IMPORTANCE_KINDS:
            raise MethodConfigError(f"importance must be one of {IMPORTANCE_KINDS}, got {self.importance!r}")
        if self.compat not in COMPATS:
            raise MethodConfigError(f"compat must be one of {COMPATS}, got {self.compat!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise MethodConfigError(f"schedule must be one of {SCHEDULES} (or none: the compat's), "
                                    f"got {self.schedule!r}")
        if self.init_subnets:  # absolute, so a worker process finds it; malformed files fail here
            self.init_subnets = str(Path(self.init_subnets).resolve())
            read_init_file(self.init_subnets)

    @property
    def release(self) -> bool:
        return self.compat == "release"

    @property
    def resolved_schedule(self) -> str:
        if self.schedule is not None:
            return self.schedule
        return "cosine_restarts" if self.release else "spec"
