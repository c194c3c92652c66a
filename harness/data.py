"""Training batches: tokenised once, shuffled per epoch with the run's seed, padded per batch."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from tasks.formatting import encode_train


class TrainBatches:
    """Yields, for every optimizer step, a list of micro-batches (dicts for ``model(**batch)``).

    Epochs are consecutive seeded permutations of all training examples (of every training
    task), so the order depends only on the seed; padding is to the longest example of each
    micro-batch, and ``tokens`` counts non-padding tokens.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        tokenizer: Any,
        max_length: int,
        batch_size: int,
        micro_batch_size: int,
        seed: int,
        train_on_inputs: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if not pairs:
            raise ValueError("no training examples")
        self.encoded = [encode_train(tokenizer, p, t, max_length, train_on_inputs) for p, t in pairs]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batch_size, self.micro = batch_size, micro_batch_size
        self.seed, self.device = seed, device

    def __len__(self) -> int:
        return len(self.encoded)

    def _order(self) -> Iterator[int]:
        epoch = 0
        while True:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            yield from torch.randperm(len(self.encoded), generator=gen).tolist()
            epoch += 1

    def collate(self, items: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(ids)] = 1
        to = lambda t: t.to(self.device, non_blocking=True)  # noqa: E731
        return {"input_ids": to(input_ids), "attention_mask": to(mask), "labels": to(labels)}

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        order = self._order()
        while True:
            step = [self.encoded[next(order)] for _ in range(self.batch_size)]
            yield [self.collate(step[i : i + self.micro]) for i in range(0, self.batch_size, self.micro)]
