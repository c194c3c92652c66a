"""Sensitivity-LoRA's hyperparameters: LoRA's fields plus the calibration and allocation knobs."""
from __future__ import annotations

from dataclasses import dataclass, field

from methods.sensitivity_lora.sensitivity import ESTIMATORS, LOCAL_METRICS
from methods.targets import DECODER_LINEARS


@dataclass
class SensitivityLoraConfig:
    """LoRA fields keep our LoRA defaults (peft names); the rest steer calibration and allocation.

    ``beta`` = 1 scores by global sensitivity only, 0 by local only (presets ``global-only`` /
    ``local-only``). ``r_min`` = 0 lets a matrix drop out of adaptation; ``r_max`` caps a rank
    (ranks are always capped at full rank min(out, in)).
    """

    r: int = 32
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DECODER_LINEARS))
    calibration_batches: int = 8
    estimator: str = "fisher"
    local_metric: str = "effective_rank"
    topk_fraction: float = 0.01
    beta: float = 0.5
    r_min: int = 0
    r_max: int | None = None

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.local_metric not in LOCAL_METRICS:
            raise ValueError(f"local_metric must be one of {LOCAL_METRICS}, got {self.local_metric!r}")
        if self.calibration_batches < 1 or self.r < 1:
            raise ValueError("calibration_batches and r must be >= 1")
