"""Input checks shared by every layer: each raises a ``ValueError`` that names the problem.

dictopt never silently repairs input: NaN/inf, wrong shapes, λ ≤ 0 and empty data are errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class DictoptInputError(ValueError):
    """Bad input to a dictopt function: the message says what and where."""


def to_tensor(
    x: Any, name: str, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Convert a numpy array, torch tensor or nested sequence to a floating torch tensor.

    Integer and boolean input become ``float64`` unless ``dtype`` is given; floating tensors keep
    their precision unless ``dtype`` is given.
    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
            if not arr.flags.writeable:  # torch cannot wrap read-only memory (e.g. np.load mmap)
                arr = arr.copy()
            t = torch.as_tensor(arr)
        except (TypeError, ValueError) as err:
            raise DictoptInputError(f"{name}: cannot be read as a numeric array ({err})") from err
    if t.is_complex():
        raise DictoptInputError(f"{name}: complex values are not supported (got {t.dtype})")
    if dtype is None and not t.is_floating_point():
        dtype = torch.float64
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


def check_matrix(
    x: torch.Tensor, name: str, *, width: int | None = None, width_name: str = "d"
) -> torch.Tensor:
    """Require a non-empty 2-D tensor (rows are points/atoms) of the given width."""
    if x.ndim != 2:
        raise DictoptInputError(
            f"{name}: expected a 2-D array [rows, {width_name}], got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DictoptInputError(f"{name}: is empty (0 rows)")
    if width is not None and x.shape[1] != width:
        hint = " (is it transposed?)" if x.shape[0] == width else ""
        raise DictoptInputError(
            f"{name}: has width {x.shape[1]} but {width_name} = {width}{hint}; "
            f"shape is {tuple(x.shape)}"
        )
    return x


def check_width(d_data: int, d_dictionary: int, n_rows: int | None = None) -> None:
    """Raise when the activations' width differs from the dictionary's ``d``.

    The message asks whether the data is transposed (activations are ``[N, d]``, one point per
    row), and says so outright when the row count equals ``d``.
    """
    if d_data == d_dictionary:
        return
    hint = ("is it transposed? it has d rows" if n_rows == d_dictionary else
            "is it transposed? activations are [N, d], one point per row")
    raise DictoptInputError(
        f"activations: width {d_data} but the dictionary has d = {d_dictionary} ({hint})"
    )


def check_finite(x: torch.Tensor, name: str, *, row_offset: int = 0, where: str = "") -> None:
    """Raise naming the first row (counted from ``row_offset``) that holds NaN or inf."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()
        first = int(rows[0]) if x.ndim > 0 and rows.numel() else 0
        value = x.reshape(x.shape[0], -1)[first][bad.reshape(bad.shape[0], -1)[first]][0].item()
        loc = f" {where}" if where else ""
        raise DictoptInputError(
            f"{name}{loc}: row {row_offset + first} contains a non-finite value ({value}); "
            "NaN/inf are not allowed"
        )


def check_lambda(lam: Any, name: str = "lam") -> float:
    """λ must be a finite positive number."""
    try:
        value = float(lam)
    except (TypeError, ValueError) as err:
        raise DictoptInputError(f"{name}: must be a positive number, got {lam!r}") from err
    if not np.isfinite(value) or value <= 0:
        raise DictoptInputError(f"{name}: must be a finite number > 0, got {value}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """A count such as K or a batch size: an integer ≥ 1."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise DictoptInputError(f"{name}: must be an integer ≥ 1, got {value!r}")
    return int(value)
