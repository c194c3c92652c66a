"""LM loss on held-out text: the optional, task-free forgetting probe (``--retention-text``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.sources import DataError


def text_windows(tokenizer: Any, path: Path, window: int, max_windows: int) -> list[list[int]]:
    """Consecutive, non-overlapping token windows of the file (the last partial one dropped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"--retention-text {path}: cannot read it ({err.strerror})") from None
    ids = tokenizer(text)["input_ids"] if not hasattr(tokenizer, "encode") else tokenizer.encode(text)
    windows = [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)][:max_windows]
    if not windows:
        raise DataError(f"--retention-text {path}: shorter than one window of {window} tokens")
    return windows


@torch.inference_mode()
def mean_token_loss(model: nn.Module, windows: list[list[int]], device: torch.device, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy over every predicted position of every window.

    Targets are the inputs shifted by one (position t predicts token t+1): the model's own loss
    does that shift when given ``labels=input_ids``; we recompute it explicitly to weight every
    token equally across batches.
    """
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        ids = torch.tensor(windows[i:i + batch_size], device=device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        total += float(loss)
        count += targets.numel()
    return total / count
