"""chunk_codes checks a chunk's codes with one pass over them (its minimum and maximum): NaN,
±inf and negative codes are refused, rounding dust below zero is clamped, valid codes pass
unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from dictopt.coders import chunk_codes
from dictopt.validation import DictoptInputError


def _given(a: torch.Tensor):
    return lambda x, start: a[start : start + x.shape[0]]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.5])
def test_bad_codes_are_refused(bad):
    a = torch.rand(6, 4, dtype=torch.float64)
    a[3, 2] = bad
    with pytest.raises(DictoptInputError):
        chunk_codes(_given(a), torch.zeros(6, 3), 0, 4, torch.float64)


def test_dust_is_clamped_and_valid_codes_pass_unchanged():
    a = torch.rand(6, 4, dtype=torch.float64)
    assert chunk_codes(_given(a), torch.zeros(6, 3), 0, 4, torch.float64) is not None
    assert torch.equal(chunk_codes(_given(a), torch.zeros(6, 3), 0, 4, torch.float64), a)
    b = a.clone()
    b[1, 1] = -1e-12
    out = chunk_codes(_given(b), torch.zeros(6, 3), 0, 4, torch.float64)
    assert float(out.min()) == 0.0 and torch.equal(out[b > 0], b[b > 0])


def test_an_empty_chunk_passes():
    a = torch.zeros(0, 4)
    assert chunk_codes(_given(a), torch.zeros(0, 3), 0, 4, torch.float32).shape == (0, 4)
