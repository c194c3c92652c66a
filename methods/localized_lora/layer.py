"""Block-structured low-rank adapters for one ``nn.Linear`` (Localized LoRA; SPEC.md, "Forward").

W0 (m x n) is cut into a K x K grid of (m/K) x (n/K) blocks. Two structures share this layer:

* ``grid`` (fully localized): every block (i, j) gets dW_ij = B_ij A_ij of rank r_b;
* ``diagonal``: only the K diagonal blocks get an adapter, of rank r_b each.

The forward never loops over blocks: one einsum projects every input chunk with its stacked A's,
a second contracts each output block's (input block, rank) axes with its B's. That is exactly
the FLOPs of the equivalent LoRA and maps onto two batched matmuls.
"""
from __future__ import annotations

import math

import torch
from torch import nn

STRUCTURES = ("grid", "diagonal")


class LocalizedLinear(nn.Module):
    """``base(x) + s * dW x`` with dW block-structured; the base layer stays frozen.

    Parameters (names say which block index comes first):

    * grid: ``lora_A[i, j]`` is A_ij (r_b x n/K), ``lora_B[i, j]`` is B_ij (m/K x r_b);
    * diagonal: ``lora_A[k]`` is A_kk, ``lora_B[k]`` is B_kk.
    """

    def __init__(self, base: nn.Linear, structure: str, num_blocks: int, block_rank: int,
                 scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        m, n, k = base.out_features, base.in_features, num_blocks
        if k < 1 or m % k or n % k:
            raise ValueError(f"num_blocks K={k} must divide both out_features={m} and in_features={n}")
        if block_rank < 1:
            raise ValueError(f"block rank must be >= 1, got {block_rank}")
        self.base_layer = base
        self.structure, self.num_blocks, self.block_rank, self.scaling = structure, k, block_rank, scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        grid = (k, k) if structure == "grid" else (k,)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(*grid, block_rank, n // k, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(*grid, m // k, block_rank, device=w.device, dtype=w.dtype))
        # LoRA's kaiming_uniform_(a=sqrt(5)) bound 1/sqrt(fan_in), with each block's own fan-in n/K
        # (kaiming_uniform_ on the stacked tensor would read the wrong fan-in); peft's GraLoRA does the same.
        bound = 1.0 / math.sqrt(n // k)
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """dW x (unscaled) for x of shape (..., n), via two batched einsums."""
        k = self.num_blocks
        chunks = self.dropout(x).to(self.lora_A.dtype).reshape(-1, k, x.shape[-1] // k)  # (t, j, c)
        if self.structure == "grid":
            h = torch.einsum("tjc,ijrc->tijr", chunks, self.lora_A)  # every A_ij applied to chunk j
            out = torch.einsum("tijr,ijor->tio", h, self.lora_B)  # output block i sums over j and rank
        else:
            h = torch.einsum("tkc,krc->tkr", chunks, self.lora_A)
            out = torch.einsum("tkr,kor->tko", h, self.lora_B)
        return out.reshape(*x.shape[:-1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        return result + (self.scaling * self.adapter_output(x)).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """s * dW as an (m x n) matrix, assembled block by block."""
        blocks = self.lora_B @ self.lora_A  # (..., m/K, n/K) per adapted block
        if self.structure == "grid":
            dw = blocks.permute(0, 2, 1, 3).reshape(self.base_layer.out_features, self.base_layer.in_features)
        else:
            dw = torch.block_diag(*blocks.unbind(0))
        return self.scaling * dw

    @torch.no_grad()
    def merge(self) -> None:
        """Fold s * dW into the base weight (the forward then costs W0 x only)."""
        if not self.merged:
            self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"structure={self.structure}, K={self.num_blocks}, block_rank={self.block_rank}, scaling={self.scaling:g}"

