"""The decoder-block linears of Llama-style models: the default adapter targets of every method.

One list, in the block's order (attention, then MLP), so every method adapts the same matrices
by default and reports list them in the same order. ``lm_head`` is never a default target.
"""
from __future__ import annotations

DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
