"""Sensitivity-LoRA's hyperparameters: LoRA's fields plus the calibration and allocation knobs."""
from __future__ import annotations

from dataclasses import dataclass, field

from methods.base import MethodConfigError
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
        """Refuse a value the run could not use, in one line (MethodConfigError), before it starts."""
        if self.estimator not in ESTIMATORS:
            raise MethodConfigError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if self.local_metric not in LOCAL_METRICS:
            raise MethodConfigError(f"local_metric must be one of {', '.join(LOCAL_METRICS)}, "
                                    f"got {self.local_metric!r}")
        if self.calibration_batches < 1 or self.r < 1:
            raise MethodConfigError(f"calibration_batches and r must be >= 1, got calibration_batches="
                                    f"{self.calibration_batches}, r={self.r}")
        if not 0 <= self.beta <= 1:
            raise MethodConfigError(f"beta must be in [0, 1], got {self.beta}")
        if not 0 < self.topk_fraction <= 1:
            raise MethodConfigError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}")
        if self.r_min < 0 or (self.r_max is not None and self.r_max < max(1, self.r_min)):
            raise MethodConfigError(f"need 0 <= r_min <= r_max and r_max >= 1, got r_min={self.r_min}, "
                                    f"r_max={self.r_max}")
