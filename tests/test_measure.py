"""Measurement definitions on cases whose answer is known by hand."""
from __future__ import annotations

import torch
from torch import nn

from harness.measure import SavedTensorBytes, count_flops, percentile, step_stats
from methods.base import tensor_bytes, warmup_cosine


def test_activation_bytes_of_a_linear_layer_is_its_input():
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with SavedTensorBytes(layer) as saved:
        layer(x).sum().backward()
    assert saved.bytes == 4 * 16 * 4  # x saved for the weight gradient; the weight is excluded


def test_activation_bytes_dedup_by_storage_and_frozen_weight():
    layer = nn.Linear(16, 8).requires_grad_(False)
    x = torch.randn(4, 16, requires_grad=True)
    with SavedTensorBytes(layer) as saved:
        (layer(x) + layer(x)).sum().backward()
    assert saved.bytes == 0  # only the weight is needed for grad_input, and it is a parameter
    y = torch.randn(3, 5, requires_grad=True)
    with SavedTensorBytes() as saved:
        (y * y).sum().backward()  # y saved twice, one storage
    assert saved.bytes == 3 * 5 * 4


def test_flop_count_of_a_matmul():
    layer = nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32)
    with count_flops() as f:
        layer(x)
    assert f["flops"] == 2 * 8 * 32 * 16


def test_step_stats_excludes_warmup_and_profiled_steps():
    times = [9.0, 9.0, 1.0, 2.0, 100.0, 3.0, 4.0]
    s = step_stats(times, warmup=2, excluded={4})
    assert s["step_time_s"] == 2.5 and s["step_time_steps"] == 4
    assert s["step_time_p10_s"] == percentile([1, 2, 3, 4], 10) == 1.3


def test_tensor_bytes_counts_views_once():
    t = torch.zeros(10, 10)
    assert tensor_bytes([t, t[2:], t.view(100)]) == 400


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20, 0.1) == 0.25
    assert warmup_cosine(3, 4, 20, 0.1) == 1.0
    assert warmup_cosine(4, 4, 20, 0.1) == 1.0
    assert abs(warmup_cosine(20, 4, 20, 0.1) - 0.1) < 1e-9
