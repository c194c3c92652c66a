"""One target matrix's subnet, and LoSiA-Pro's linear layer that only computes its block gradient.

Plain LoSiA keeps the model's nn.Linear untouched (the weight requires grad, autograd computes
the full gradient) and reads the block out of ``weight.grad``. LoSiA-Pro swaps in
``SubnetLinear``: the weight does *not* require grad, and a custom backward saves only the
input columns C and writes grad_out[..., R]^T @ x[..., C] into a block-shaped buffer, except
while its layer is profiled, when it saves the full input and produces the full gradient that
the importance estimate needs. Sibling linears that read one input (q, k, v; gate, up) gather
their columns of it in one pass (``SharedGather``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Subnet:
    """The trainable block W[R, C] of one target weight and its gradient buffers.

    ``block_grad()`` is what the optimizer and the clipping read, whichever variant filled it.
    """

    def __init__(self, name: str, slot: int, layer: int | str, weight: nn.Parameter,
                 rows: torch.Tensor, cols: torch.Tensor, efficient: bool) -> None:
        self.name, self.slot, self.layer = name, slot, layer
        self.matrix = name.rsplit(".", 1)[-1]
        self.weight = weight
        self.efficient = efficient
        self.profiling = False
        self._block: torch.Tensor | None = None  # |R| x |C| gradient
        self._full: torch.Tensor | None = None  # LoSiA-Pro only, inside a profiling window
        # a leaf requiring grad keeps the custom backward in the graph even when neither the
        # input nor the (frozen) weight requires grad, e.g. layer 0 with frozen embeddings
        self.anchor = torch.empty(0, device=weight.device, requires_grad=True) if efficient else None
        self.shared: SharedGather | None = None
        self.set_index(rows, cols)

    def set_index(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        self.rows = rows.to(self.weight.device)
        self.cols = cols.to(self.weight.device)
        self.all_cols = cols.numel() == self.weight.shape[1]
        # flat offsets of W[R, C] in row-major order: 1-D index_select / index_copy_ on them
        # are 2-5x faster on CPU than 2-D advanced indexing with broadcast index tensors
        self.flat_index = (self.rows.unsqueeze(1) * self.weight.shape[1] + self.cols.unsqueeze(0)).reshape(-1)
        if self.shared is not None:
            self.shared.index = None

    def input_columns(self, x: torch.Tensor) -> torch.Tensor:
        """x[..., C] flattened to 2-D, from the siblings' shared gather when there is one."""
        x_2d = x.reshape(-1, x.shape[-1])
        return _columns(x_2d, self.cols) if self.shared is None else self.shared.columns(self, x, x_2d)

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """A copy of full[R, C] for any tensor shaped like the weight."""
        return full.reshape(-1).index_select(0, self.flat_index).view(self.shape)

    @torch.no_grad()
    def write_block(self, block: torch.Tensor) -> None:
        """W[R, C] = block, in place."""
        self.weight.view(-1).index_copy_(0, self.flat_index, block.reshape(-1))

    @torch.no_grad()
    def add_to_block(self, update: torch.Tensor) -> None:
        """W[R, C] += update, in place (no gather of the block needed)."""
        self.weight.view(-1).index_add_(0, self.flat_index, update.reshape(-1))

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.numel(), self.cols.numel()

    def full_grad(self) -> torch.Tensor | None:
        """The full weight gradient if this variant holds one at the moment (importance needs it)."""
        return self._full if self.efficient else self.weight.grad

    def block_grad(self) -> torch.Tensor | None:
        """The gradient of W[R, C]; sliced once per step from the full gradient when there is one."""
        if self._block is None:
            full = self.full_grad()
            if full is not None:
                self._block = self.take(full)
        return self._block

    def sync_tensors(self) -> list[torch.Tensor]:
        """What a data-parallel run averages: the full gradient while profiled (the block is then
        sliced again from the averaged one), else the block."""
        if self.profiling:
            self._block = None
            full = self.full_grad()
            return [] if full is None else [full]
        block = self.block_grad()
        return [] if block is None else [block]

    def grad_tensors(self) -> list[torch.Tensor]:
        """Gradient buffers this subnet holds right now (for the memory breakdown)."""
        return [t for t in (self._block, self.full_grad()) if t is not None]

    def add_block(self, grad_rows_t: torch.Tensor, x_cols: torch.Tensor) -> None:
        if self._block is None:
            self._block = grad_rows_t.mm(x_cols).to(self.weight.dtype)
        elif grad_rows_t.dtype == self._block.dtype:  # gradient accumulation over micro-batches
            self._block.addmm_(grad_rows_t, x_cols)
        else:
            self._block.add_(grad_rows_t.mm(x_cols))

    def add_full(self, grad: torch.Tensor) -> None:
        if self._full is None:
            self._full = grad.to(self.weight.dtype)
        else:
            self._full.add_(grad)

    def clear_grads(self) -> None:
        self._block = None
        self._full = None


def _columns(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[:, index] for a 2-D tensor, as a new contiguous tensor.

    These gathers (x[:, C] in forward, grad_out[:, R] in backward) are most of LoSiA-Pro's cost
    over the frozen floor. ``gather`` with a broadcast (stride-0) index walks the output row by
    row on all threads; ``index_select(1, ...)`` copies one strided column at a time and takes
    about twice as long on CPU (30 vs 66 us for 1024 x 576 -> 72 columns).
    """
    return torch.gather(t, 1, index.expand(t.shape[0], -1))


class SharedGather:
    """One gather of x[:, C_1 | C_2 | ...] for sibling subnets that read the same input x.

    The first sibling called with a new x gathers every sibling's columns at once and keeps the
    result until each sibling has taken its slice (a view: the backward's mm reads it strided,
    without a copy); a sibling called with another x (never in a Llama layer) gathers afresh.
    """

    def __init__(self, members: list[Subnet]) -> None:
        self.members = members
        self.index: torch.Tensor | None = None  # rebuilt after any member's set_index
        self._x: torch.Tensor | None = None
        self._gathered: torch.Tensor | None = None
        self._waiting: set[int] = set()
        for s in members:
            s.shared = self

    def columns(self, subnet: Subnet, x: torch.Tensor, x_2d: torch.Tensor) -> torch.Tensor:
        if self._x is not x or id(subnet) not in self._waiting:
            if self.index is None:
                self.index = torch.cat([s.cols for s in self.members])
            self._x, self._gathered = x, _columns(x_2d, self.index)
            self._waiting = {id(s) for s in self.members}
        start = 0
        for s in self.members:
            if s is subnet:
                break
            start += s.cols.numel()
        out = self._gathered[:, start:start + subnet.cols.numel()]
        self._waiting.discard(id(subnet))
        if not self._waiting:  # every sibling has its slice: hold neither x nor the gather
            self._x = self._gathered = None
        return out


class _SubnetLinearFn(torch.autograd.Function):
    """y = x W^T whose backward gives grad_x in full but only the block of grad_W."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, anchor: torch.Tensor, subnet: Subnet) -> torch.Tensor:
        ctx.subnet = subnet
        ctx.profiling = subnet.profiling
        ctx.rows = subnet.rows
        saved = x if subnet.profiling or subnet.all_cols else subnet.input_columns(x)
        ctx.save_for_backward(saved, weight)
        return F.linear(x, weight)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        saved, weight = ctx.saved_tensors
        # under autocast grad_out comes in the autocast dtype (bf16): compute in it, as autograd
        # would for an autocast linear, and keep the weight's own dtype for its gradient
        dtype = grad_out.dtype
        grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
        x_2d = saved.reshape(-1, saved.shape[-1]).to(dtype)
        if ctx.profiling:
            ctx.subnet.add_full(grad_2d.t().mm(x_2d))
        else:
            ctx.subnet.add_block(_columns(grad_2d, ctx.rows).t(), x_2d)
        grad_x = grad_out.matmul(weight.to(dtype)) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class SubnetLinear(nn.Linear):
    """Drop-in replacement of an nn.Linear for LoSiA-Pro; shares the original parameters.

    Parameter names are unchanged (``...q_proj.weight``), so state dicts and evaluation see a
    plain linear layer; without autograd it is exactly ``F.linear``.
    """

    def __init__(self, base: nn.Linear, subnet: Subnet) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        self.subnet = subnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        out = _SubnetLinearFn.apply(x, self.weight, self.subnet.anchor, self.subnet)
        return out if self.bias is None else out + self.bias
