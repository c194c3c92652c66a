"""One-off check: our likelihood scorer against lm-evaluation-harness, item by item and in speed.

    python -m tasks.agreement --model smollm2-135m --tasks commonsense --eval-limit 100 --repeats 3

Scores the same items, prompts and in-memory model with both backends, in one process, passes
interleaved (the order alternates every repeat, so a noisy shared machine hurts both alike),
and prints per task how many items each backend's ``acc`` (and ``acc_norm``) choice agrees on,
then items/s of each pass and the native / lm-eval ratio. Timing covers a whole evaluation as a
user runs it: tokenisation and batching included, and for lm-eval its export and set-up too
(all tasks go through one ``simple_evaluate`` call, so that set-up is paid once per pass).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from tasks import lm_eval_bridge, protocols, registry


def _native(model: Any, tok: Any, jobs: list, batch: int) -> list[protocols.Evaluation]:
    settings = protocols.EvalSettings(batch_size=batch, progress=False)
    return [protocols.evaluate("native", "likelihood", model, tok, task, items, settings) for task, items in jobs]


def _lm_eval(model: Any, tok: Any, jobs: list, batch: int, workdir: Any) -> list[protocols.Evaluation]:
    settings = protocols.EvalSettings(batch_size=batch, progress=False, workdir=workdir)
    return lm_eval_bridge.evaluate_many("likelihood", model, tok, jobs, settings)


def agreement(ours: protocols.Evaluation, theirs: protocols.Evaluation) -> dict[str, tuple[int, int]]:
    """metric -> (items where both backends chose the same answer, items compared)."""
    out = {"acc": (sum(a["pred"] == b["pred"] for a, b in zip(ours.samples, theirs.samples)), len(ours.samples))}
    pairs = [(a, b) for a, b in zip(ours.samples, theirs.samples) if "pred_norm" in b]
    if pairs:
        out["acc_norm"] = (sum(a["pred_norm"] == b["pred_norm"] for a, b in pairs), len(pairs))
    return out


def main(argv: list[str] | None = None) -> int:
    from harness.models import cache_dir, load_model

    p = argparse.ArgumentParser(prog="python -m tasks.agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="commonsense")
    p.add_argument("--eval-limit", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--native-batch", type=int, default=32, help="our default eval_batch_size")
    p.add_argument("--lm-eval-batch", type=int, default=16, help="HFLM batch size (the reference figure used 16)")
    args = p.parse_args(argv)
    model, tok = load_model(args.model)
    model.eval()
    jobs = [(registry.get(n), registry.load(n).test[:args.eval_limit or None]) for n in registry.expand(args.tasks)]
    n_items = sum(len(items) for _, items in jobs)
    n_requests = sum(len(t.requests(ex)) for t, items in jobs for ex in items)
    print(f"{args.model}: {len(jobs)} tasks, {n_items} items, {n_requests} choices; torch threads "
          f"{torch.get_num_threads()}; native batch {args.native_batch}, lm-eval batch {args.lm_eval_batch}")
    rates: dict[str, list[float]] = {"native": [], "lm-eval": []}
    results: dict[str, list[protocols.Evaluation]] = {}
    for r in range(args.repeats):
        order = ["native", "lm-eval"] if r % 2 == 0 else ["lm-eval", "native"]
        for backend in order:
            t0 = time.perf_counter()
            results[backend] = (_native(model, tok, jobs, args.native_batch) if backend == "native" else
                                _lm_eval(model, tok, jobs, args.lm_eval_batch, cache_dir()))
            seconds = time.perf_counter() - t0
            rates[backend].append(n_items / seconds)
            print(f"repeat {r + 1} {backend:<8} {seconds:7.1f} s  {n_items / seconds:6.2f} items/s", flush=True)
    print(f"\n{'task':<12} {'acc agree':>10} {'acc_norm agree':>15} {'acc native/lm-eval':>20}")
    total: dict[str, list[int]] = {"acc": [0, 0], "acc_norm": [0, 0]}
    for (task, _), ours, theirs in zip(jobs, results["native"], results["lm-eval"]):
        agree = agreement(ours, theirs)
        for metric, (same, n) in agree.items():
            total[metric][0] += same
            total[metric][1] += n
        norm = "{}/{}".format(*agree["acc_norm"]) if "acc_norm" in agree else "- (lm-eval: acc only)"
        accs = f"{ours.metrics[0]['value']:.3f}/{theirs.metrics[0]['value']:.3f}"
        print(f"{task.name:<12} {'{}/{}'.format(*agree['acc']):>10} {norm:>15} {accs:>20}")
    print(f"{'all':<12} {'{}/{}'.format(*total['acc']):>10} {'{}/{}'.format(*total['acc_norm']):>15}")
    ratios = [a / b for a, b in zip(rates["native"], rates["lm-eval"])]
    print(f"\nitems/s native {statistics.median(rates['native']):.2f} (runs {', '.join(f'{x:.2f}' for x in rates['native'])}), "
          f"lm-eval {statistics.median(rates['lm-eval']):.2f} (runs {', '.join(f'{x:.2f}' for x in rates['lm-eval'])}); "
          f"native/lm-eval per repeat {', '.join(f'{x:.2f}' for x in ratios)}, median {statistics.median(ratios):.2f}")
    return 0 if total["acc"][0] == total["acc"][1] else 1


if __name__ == "__main__":
    raise SystemExit(main())
