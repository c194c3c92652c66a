"""Batched multiple-choice log-likelihood scoring: the evaluation hot path.

Each choice is a (context, continuation) request tokenized exactly like lm-evaluation-harness's
HFLM (``tasks.formatting.encode_pair``; same left truncation), so per-item choices agree with
lm-eval. It is faster than scoring every request on its own because:

* requests with the same context share one row: the context, then the inputs of all its
  continuations; a 4D attention mask lets each continuation see the context and its own tokens
  only, with positions restarting after the context. A continuation's first token is predicted
  from the last context position, so single-token choices (BoolQ's " no"/" yes") cost one
  context pass in total. On ARC this feeds ~3x fewer tokens than one row per request;
* rows are sorted by length, and short rows are packed into the room padding would take
  (several rows per sequence, kept apart by the same mask);
* only the hidden states at scored positions go through the output head (a pre-hook gathers
  them), so full-vocabulary logits (49,152 wide on SmolLM2) exist for those positions only.

Models whose attention cannot take a custom 4D mask (flash kernels, prompt-learning adapters)
get plain right-padded rows, one per request, as lm-eval builds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from tasks.base import Example, Task
from tasks.formatting import encode_pair
from tasks.progress import bar as progress_bar
from tasks.sharing import Sharing, in_batch_order

DEFAULT_BATCH_SIZE = 64  # sequences (a context with all its choices) per forward pass
LOGITS_BUDGET = 1 << 27  # fp32 logits per forward (512 MiB); caps scored tokens per batch
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer give one


@dataclass
class Row:
    """One sequence of a batch: a context, then the inputs of one or more continuations."""

    context: list[int]
    conts: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, token ids)

    def __len__(self) -> int:
        return len(self.context) + sum(len(c) - 1 for _, c in self.conts)


def resolve_max_length(model: nn.Module, tokenizer: Any) -> int:
    """Longest input, found where lm-eval looks: model config, then tokenizer, then 2048."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if value := getattr(config, attr, None):
            return int(value)
    value = getattr(tokenizer, "model_max_length", None)
    return int(value) if value and value < 10**9 else DEFAULT_MAX_LENGTH


def can_share_prefix(model: nn.Module) -> bool:
    """Custom 4D masks work with sdpa/eager attention, not flash kernels or prompt-learning adapters."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    peft_cfg = getattr(model, "active_peft_config", None)
    return impl in {"sdpa", "eager"} and not getattr(peft_cfg, "is_prompt_learning", False)


def build_rows(
    tokenizer: Any, requests: Sequence[tuple[str, str]], max_length: int, share: bool
) -> list[Row]:
    """Tokenize requests and group those with identical (truncated) context tokens."""
    rows: dict[Any, Row] = {}
    cache: dict[str, list[int]] = {}
    for i, (context, continuation) in enumerate(requests):
        ctx, cont = encode_pair(tokenizer, context, continuation, cache)
        if not cont or len(cont) > max_length:
            raise ValueError(f"request {i}: continuation has {len(cont)} tokens (needs 1..{max_length}): {continuation!r}")
        ctx = (ctx + cont)[-(max_length + 1):][: -len(cont)]  # lm-eval's left truncation
        key = tuple(ctx) if share else i
        rows.setdefault(key, Row(ctx)).conts.append((i, cont))
    return list(rows.values())


def pack_lines(rows: list[Row], packed: bool) -> list[list[Row]]:
    """Group a batch's rows into sequences ("lines").

    Packed: first-fit decreasing into lines no longer than the batch's longest row, so short
    rows fill the room that padding would take, at no extra attention width. Unpacked: one row
    per line (plain right-padded batch).
    """
    if not packed:
        return [[row] for row in rows]
    width = max(len(r) for r in rows)
    lines: list[list[Row]] = []
    room: list[int] = []
    for row in sorted(rows, key=len, reverse=True):
        k = next((k for k, free in enumerate(room) if free >= len(row)), None)
        if k is None:
            lines.append([row])
            room.append(width - len(row))
        else:
            lines[k].append(row)
            room[k] -= len(row)
    return lines


def batches(rows: list[Row], batch_size: int, max_scored: int) -> list[list[Row]]:
    """Consecutive rows, at most ``batch_size`` per batch and ``max_scored`` scored tokens
    (each scored token costs a full-vocabulary logits row)."""
    out: list[list[Row]] = []
    scored = 0
    for row in rows:
        n = sum(len(c) for _, c in row.conts)
        if not out or len(out[-1]) == batch_size or scored + n > max_scored:
            out.append([])
            scored = 0
        out[-1].append(row)
        scored += n
    return out


def _batch_tensors(lines: list[list[Row]], pad_id: int) -> dict[str, Any]:
    """Input ids, per-position (row, segment, position) ids, and every scored token's
    (line, position, target, request)."""
    width = max(sum(len(r) for r in line) for line in lines)
    shape = (len(lines), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    doc = torch.full(shape, -1, dtype=torch.long)  # row within the line; -1 padding
    seg = torch.full(shape, -1, dtype=torch.long)  # 0 context, s > 0 continuation s
    pos = torch.zeros(shape, dtype=torch.long)
    where: list[tuple[int, int, int, int]] = []
    for b, line in enumerate(lines):
        at = 0
        for d, row in enumerate(line):
            n_ctx, start = len(row.context), at
            ids[b, at:at + n_ctx] = torch.tensor(row.context)
            seg[b, at:at + n_ctx] = 0
            pos[b, at:at + n_ctx] = torch.arange(n_ctx)
            at += n_ctx
            for s, (req, cont) in enumerate(row.conts, start=1):
                n_in = len(cont) - 1  # the last token is only predicted, never fed
                if n_in:
                    ids[b, at:at + n_in] = torch.tensor(cont[:-1])
                    seg[b, at:at + n_in] = s
                    pos[b, at:at + n_in] = torch.arange(n_ctx, n_ctx + n_in)
                predictors = [start + n_ctx - 1] + list(range(at, at + n_in))
                where += [(b, p, t, req) for p, t in zip(predictors, cont)]
                at += n_in
            doc[b, start:at] = d
    b_idx, p_idx, tgt, owner = (torch.tensor(col) for col in zip(*where))
    return dict(ids=ids, doc=doc, seg=seg, pos=pos, b_idx=b_idx, p_idx=p_idx, tgt=tgt, owner=owner, width=width)


def _attention_inputs(t: dict[str, Any], packed: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """2D padding mask, or (packed) a 4D additive mask: same row, causal, context or own segment."""
    if not packed:
        return {"attention_mask": (t["doc"] >= 0).long()}
    doc, seg, width = t["doc"], t["seg"], t["width"]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_row = doc[:, None, :] == doc[:, :, None]
    visible = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    allowed = causal & same_row & visible
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"attention_mask": mask[:, None], "position_ids": t["pos"]}


def _token_logprobs(model: nn.Module, t: dict[str, Any], packed: bool, device: torch.device) -> torch.Tensor:
    """Log-prob of every scored token, computing the output head at scored positions only."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    b_idx, p_idx = t["b_idx"].to(device), t["p_idx"].to(device)
    width = t["width"]

    def gather(_: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        offset = hidden.shape[1] - width  # virtual tokens some adapters prepend
        return (hidden[b_idx, p_idx + offset].unsqueeze(0), *args[1:])

    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device) for k, v in _attention_inputs(t, packed, dtype).items()}
    handle = head.register_forward_pre_hook(gather) if head is not None else None
    try:
        logits = model(input_ids=t["ids"].to(device), use_cache=False, **inputs).logits
    finally:
        if handle is not None:
            handle.remove()
    if handle is not None:
        logits = logits[0]
    else:
        logits = logits[b_idx, p_idx + logits.shape[1] - width]
    logits = logits.float()
    return logits.gather(1, t["tgt"].to(device)[:, None]).squeeze(1) - logits.logsumexp(dim=-1)


def loglikelihoods(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    max_length: int | None = None,
    share_prefix: bool = True,
    progress: bool = True,
    desc: str = "loglikelihood",
    share: Sharing | None = None,
) -> list[float]:
    """Summed log-likelihood of each continuation given its context, in request order. With
    ``share`` (several processes) each computes some of the batches (``tasks.sharing``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    max_length = max_length or resolve_max_length(model, tokenizer)
    packed = share_prefix and can_share_prefix(model)
    rows = build_rows(tokenizer, requests, max_length, packed)
    rows.sort(key=len, reverse=True)  # longest first: padding stays small and OOM shows at once
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 65536
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums = torch.zeros(len(requests), dtype=torch.float64)
    was_training = model.training
    model.eval()  # adapter dropout must not make scores random
    try:
        with torch.inference_mode(), progress_bar(total=len(rows), desc=desc, unit="seq", disable=not progress) as bar:
            planned = batches(rows, batch_size, max(1, LOGITS_BUDGET // vocab))

            def compute(i: int) -> tuple[torch.Tensor, torch.Tensor]:
                t = _batch_tensors(pack_lines(planned[i], packed), pad_id)
                logp = _token_logprobs(model, t, packed, device)
                bar.update(len(planned[i]))
                return t["owner"], logp.double().cpu()

            for _, (owner, logp) in in_batch_order(compute, len(planned), share):
                sums.index_add_(0, owner, logp)
    finally:
        model.train(was_training)
    return sums.tolist()


def as_text(requests: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """(prompt, choices) as text for a sample record: ``prompt + choices[k]`` is exactly the text
    scored for choice k; the prompt is the context all choices share, or where the contexts
    differ (WinoGrande's partial scoring) the longest start they share."""
    texts = [ctx + cont for ctx, cont in requests]
    if len({ctx for ctx, _ in requests}) == 1:
        prompt = requests[0][0]
    else:
        shortest = min(len(ctx) for ctx, _ in requests)
        prompt = texts[0][:next((i for i in range(shortest) if len({t[i] for t in texts}) > 1), shortest)]
    return prompt, [t[len(prompt):] for t in texts]


def choice_length(continuation: str) -> int:
    """Characters of the choice, without the one-space delimiter before it (lm-eval's ``len(choice)``)."""
    return len(continuation) - continuation.startswith(" ")


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # first maximum, like numpy


def score(
    model: nn.Module,
    tokenizer: Any,
    task: Task,
    examples: Sequence[Example],
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = True,
    max_length: int | None = None,
    share_prefix: bool = True,
    requests: Sequence[list[tuple[str, str]]] | None = None,
    share: Sharing | None = None,
) -> list[dict[str, Any]]:
    """Per-example multiple-choice records: acc from summed log-likelihood, and acc_norm (per
    character) only for a task that publishes it (``task.metrics``): a sample carries what the
    task reports, nothing that would always equal ``pred``. ``requests``: each example's requests
    when they are not ``task.requests`` (few-shot, chat template: ``tasks.prompting``). A record
    carries the prompt and choices as text (``as_text``)."""
    per_example = list(requests) if requests is not None else [task.requests(ex) for ex in examples]
    flat = [req for reqs in per_example for req in reqs]
    lls = loglikelihoods(model, tokenizer, flat, batch_size, device, max_length, share_prefix, progress, task.name,
                         share)
    normed = "acc_norm" in task.metrics
    records, at = [], 0
    for ex, reqs in zip(examples, per_example):
        ll = lls[at:at + len(reqs)]
        at += len(reqs)
        lengths = [choice_length(cont) for _, cont in reqs]
        pred = _argmax(ll)
        prompt, choices = as_text(reqs)
        record = {"id": ex.id, "gold": ex.gold, "pred": pred, "correct": pred == ex.gold, "logliks": ll,
                  "lengths": lengths, "prompt": prompt, "choices": choices}
        if normed:
            pred_norm = _argmax([v / max(n, 1) for v, n in zip(ll, lengths)])
            record.update(pred_norm=pred_norm, correct_norm=pred_norm == ex.gold)
        records.append(record)
    return records


def accuracy(records: Sequence[dict[str, Any]], key: str = "correct") -> tuple[float, float, int]:
    """(accuracy, standard error sqrt(p(1-p)/(n-1)), n); NaN where undefined."""
    n = len(records)
    if n == 0:
        return math.nan, math.nan, 0
    p = sum(bool(r[key]) for r in records) / n
    return p, math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else math.nan, n
