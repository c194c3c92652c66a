"""``python -m harness.agreement``: our commonsense tasks against lm-eval's own task definitions.

    python -m harness.agreement --tasks commonsense --eval-limit 100               # requests only
    python -m harness.agreement --tasks arc_c,hellaswag --eval-limit 100 --model smollm2-135m

Prints, per task, how many items' (context, continuation) requests equal those lm-eval's own
task YAML builds over the same local items, and with ``--model`` how many items lm-eval (its
task, its HFLM) picks the same answer on as our native scorer (``tasks.agreement``). Exit 1 on
any disagreement. Lives in the harness because it loads models; tasks/ never imports harness/.
"""
from __future__ import annotations

import argparse

from tasks import agreement, registry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="commonsense")
    p.add_argument("--eval-limit", type=int, default=100, help="first N test items of each task (0 = all)")
    p.add_argument("--model", default=None, help="also compare chosen answers on this model (HF tokenizer needed)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-fewshot", type=int, default=0, help="compare few-shot requests (train-split examples)")
    args = p.parse_args(argv)
    names = agreement.task_names(args.tasks)
    ok = True
    print(f"{'task':<12} {'lm-eval task':<14} {'same requests':>14}")
    for name in names:
        same, n, diffs = agreement.request_agreement(name, registry.load(name).test[:args.eval_limit or None],
                                                     args.num_fewshot)
        ok &= same == n
        print(f"{name:<12} {agreement.LM_EVAL_TASKS[name][0]:<14} {f'{same}/{n}':>14}", *diffs, sep="\n  " if diffs else "")
    if args.model:
        from harness.models import load_model

        model, tok = load_model(args.model)
        model.eval()
        print(f"\n{'task':<12} {'same choice':>12}  ({args.model}: lm-eval's own task via HFLM vs our native scorer)")
        for name, (same, n) in agreement.choice_agreement(model, tok, names, args.eval_limit or None,
                                                          args.batch_size).items():
            ok &= same == n
            print(f"{name:<12} {f'{same}/{n}':>12}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
