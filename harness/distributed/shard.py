"""``--shard``: the adapted model under FSDP2 (``torch.distributed.fsdp.fully_shard``), for models
that do not fit one device.

The harness, not the method, shards: every decoder layer (the model's ``_no_split_modules``, the
blocks transformers never splits across devices) and then the root are wrapped with
``fully_shard`` on one mesh of all ranks, after every rank took rank 0's weights. Only methods
whose spec says ``shardable`` (their trainable tensors are parameters and the default AdamW
trains them) are accepted (``launch.check_shard``). The method's parameters are replaced by FSDP's
sharded ones, so ``Adapted.params``, the optimizer and the schedule are rebuilt over them
(``Adapted.start_stage``: the same optimizer and schedule, built afresh before the first step).

Training: each rank computes its share of every micro-batch as in any data-parallel run
(``Team.share``); FSDP's reduce-scatter averages the gradients over the ranks (what the team's
all-reduce does otherwise), and both its all-gathers and its reduce-scatters are counted in
``comm_bytes`` (``CountedAllGather``, ``CountedReduceScatter``; harness/MEASUREMENT.md).

After training every rank gathers the full weights (``unshard_for_eval``) and keeps them, so that
the sharded evaluation (``tasks.sharing``: ranks score different numbers of batches) issues no
collective and rank 0 saves plain tensors.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter

from methods.base import Adapted

Count = Callable[[int], None]  # adds bytes passed to a collective to the step's comm_bytes (Team.count)


class CountedAllGather(DefaultAllGather):
    """FSDP's all-gather, counting the bytes it assembles (the unsharded parameters)."""

    def __init__(self, count: Count) -> None:
        self.count = count

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: Any,
                 async_op: bool = False) -> Any:
        self.count(output_tensor.numel() * output_tensor.element_size())
        return super().__call__(output_tensor, input_tensor, group, async_op)


class CountedReduceScatter(DefaultReduceScatter):
    """FSDP's reduce-scatter, counting the bytes it reduces (the unsharded gradients)."""

    def __init__(self, count: Count) -> None:
        self.count = count

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: Any, op: Any,
                 async_op: bool = False) -> Any:
        self.count(input_tensor.numel() * input_tensor.element_size())
        return super().__call__(output_tensor, input_tensor, group, op, async_op)


def layer_classes(model: nn.Module) -> set[str]:
    """The class names of the model's decoder layers: every ``_no_split_modules`` any of its
    (transformers) modules declares, also under a peft wrapper."""
    return {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}


def shard(adapted: Adapted, device: torch.device, world_size: int, count: Count) -> int:
    """Wrap ``adapted.model``'s decoder layers and root with ``fully_shard`` over the ``world_size``
    ranks and rebuild the optimizer over the sharded parameters; FSDP's collectives report their
    bytes to ``count``. Returns how many layers were wrapped."""
    model = adapted.model
    names = {id(p): n for n, p in model.named_parameters()}
    trained = [names[id(p)] for p in adapted.params]
    mesh = init_device_mesh(device.type, (world_size,))
    classes = layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    if not layers:
        raise ValueError(f"--shard: {type(model).__name__} declares no decoder layers (_no_split_modules)")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in [*layers, model]:
        assert isinstance(module, FSDPModule)
        module.set_custom_all_gather(CountedAllGather(count))
        module.set_custom_reduce_scatter(CountedReduceScatter(count))
    by_name = dict(model.named_parameters())
    adapted.params = [by_name[n] for n in trained]
    adapted.start_stage(adapted.ctx)  # the optimizer and schedule over the sharded parameters
    return len(layers)


def unshard_for_eval(model: nn.Module) -> None:
    """Every rank gathers the full weights of every sharded module and keeps them, so that from now
    on forwards and ``state_dict`` issue no collective: no reshard after a forward, and FSDP's
    state-dict hook that reshards (its handles are private to FSDP2; torch 2.13) removed, so that
    rank 0 alone saves the full weights."""
    for module in [m for m in model.modules() if isinstance(m, FSDPModule)]:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
        for group in module._get_fsdp_state()._fsdp_param_groups:
            for handle in group._module_to_pre_save_state_dict_hook_handle.values():
                handle.remove()  # the entries stay: FSDP does not register the hook again
