"""Plain arrays: scikit-learn estimators (``components_``) and ``.npz`` files.

scikit-learn's ``DictionaryLearning`` / ``MiniBatchDictionaryLearning`` minimise
``½ ‖X − U V‖²_F + α ‖U‖_{1,1}`` with ``‖V_k‖ ≤ 1`` and no intercept: summed over samples,
which is ``N ×`` THEORY §1's mean objective with ``λ = α`` (``transform_alpha`` when set, the
α its ``transform`` uses) and ``has_bias = False``. Atoms are the rows of ``components_``
(sklearn's fixed convention). Codes are the optimal nonnegative lasso codes (no encoder);
with ``positive_code=False`` sklearn's own codes are signed and dictopt's are not, which the
meta records.

``.npz`` keys: the atoms under ``atoms``, ``W_dec``, ``components_`` or ``dictionary``;
optional ``bias`` / ``b_dec`` ``[d]``, ``lam`` (scalar), ``d_in`` (scalar). The layout is atoms
as rows ``[K, d]``; it is verified against ``d_in`` or the bias length when present, and a
matrix whose orientation cannot be verified either way (square, or no size given and it is
not under the sklearn name ``components_``/dictopt's ``atoms``/SAELens' ``W_dec``) is an error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

ATOM_KEYS = ("atoms", "W_dec", "components_", "dictionary")
#: Names whose layout is fixed by their library (rows are atoms).
ROW_KEYS = ("atoms", "W_dec", "components_")
BIAS_KEYS = ("bias", "b_dec")
L1_ESTIMATORS = {"DictionaryLearning", "MiniBatchDictionaryLearning", "SparseCoder"}


def from_sklearn(estimator: Any, *, lam: float | None = None) -> Dictionary:
    """A fitted scikit-learn estimator with ``components_`` (or ``SparseCoder.dictionary``).

    ``λ = transform_alpha`` (else ``alpha``) for the dictionary-learning estimators; other
    estimators (PCA, NMF, ...) have no λ in THEORY's convention and get ``None`` unless given.

    Parameters
    ----------
    estimator:
        A fitted estimator.
    lam:
        λ (overrides the estimator's).

    Returns
    -------
    Dictionary
        Canonical; no encoder (optimal codes).
    """
    name = type(estimator).__name__
    comp = getattr(estimator, "components_", None)
    if comp is None:
        comp = getattr(estimator, "dictionary", None)
    if comp is None:
        raise DictoptInputError(
            f"{name}: has no components_ (is it fitted?) nor a dictionary attribute"
        )
    W = torch.as_tensor(np.asarray(comp, dtype=np.float64))
    factor = None
    if lam is None and name in L1_ESTIMATORS:
        alpha = getattr(estimator, "transform_alpha", None)
        if alpha is None:
            alpha = getattr(estimator, "alpha", None)
        if alpha is not None and float(alpha) > 0:
            lam, factor = float(alpha), 1.0
    norms = W.norm(dim=1)
    meta = {
        "library": "scikit-learn",
        "estimator": name,
        "architecture": "lasso",
        "conventions": {
            "orientation": "components_ [n_components, n_features] (rows are atoms)",
            "objective": "sum over samples of 1/2||x - u V||^2 + alpha ||u||_1 (N x the mean)",
            "positive_code": getattr(estimator, "positive_code", None),
            "max_atom_norm_deviation": float((norms - 1).abs().max()),
        },
        "lam_conversion": "lam = alpha (transform_alpha if set): sklearn sums over samples, "
        "THEORY §1 averages; both halve the squared error" if factor else
        "no L1 dictionary-learning objective recorded: lam is None",
        "lam_factor": factor,
    }
    if getattr(estimator, "positive_code", True) is False:
        meta["note"] = ("sklearn's codes were signed (positive_code=False); dictopt uses "
                        "nonnegative lasso codes for these atoms")
    return Dictionary.from_decoder(W, None, lam=lam, has_bias=False, meta=meta)


#: zlib cannot expand data by more than about 1032:1; a member declaring more bytes than this
#: many times its stored size is corrupt or hostile, and is refused before any allocation.
MAX_DEFLATE_RATIO = 1100


def _read_member(f: Any, key: str, path: Path) -> np.ndarray:
    """``f[key]`` after checking its header: numeric dtype, and a declared size its stored
    bytes can actually hold (so a forged shape cannot make numpy allocate gigabytes)."""
    name = f"{key}.npy"
    info = f.zip.getinfo(name if name in f.zip.namelist() else key)
    with f.zip.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject:
        raise DictoptInputError(
            f"{path}: {key!r} holds Python objects (pickled data), which dictopt never loads; "
            "store numeric arrays"
        )
    if dtype.kind not in "biuf":
        raise DictoptInputError(
            f"{path}: {key!r} has dtype {dtype}; expected real numbers (float or integer)"
        )
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    limit = info.compress_size * (MAX_DEFLATE_RATIO if info.compress_type else 1) + 4096
    if declared > limit:
        raise DictoptInputError(
            f"{path}: {key!r} declares shape {tuple(shape)} of {dtype} ({declared} bytes), more "
            f"than its {info.compress_size} stored bytes can hold; the file is corrupt"
        )
    return f[key]


def load_npz(path: str | Path, *, lam: float | None = None, d_in: int | None = None) -> Dictionary:
    """Load atoms (and optionally bias and λ) from an ``.npz`` file; see the module docstring.

    Parameters
    ----------
    path:
        The ``.npz`` file.
    lam:
        λ (overrides the file's).
    d_in:
        Expected width, if known.

    Returns
    -------
    Dictionary
        Canonical.
    """
    path = Path(path)
    if not path.is_file():
        raise DictoptInputError(f"{path}: no such file")
    wanted = (*ATOM_KEYS, *BIAS_KEYS, "lam", "d_in")
    try:
        with np.load(path, allow_pickle=False) as f:
            present = list(f.files)
            key = next((k for k in ATOM_KEYS if k in present), None)
            if key is None:
                raise DictoptInputError(
                    f"{path}: no atoms; looked for keys {list(ATOM_KEYS)}, found "
                    f"{sorted(present)[:20]}"
                )
            # Only the keys dictopt uses are read (an unused array may be huge), each after
            # its declared shape was checked against what its compressed bytes can hold.
            arrays = {k: _read_member(f, k, path) for k in wanted if k in present}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
        text = str(err)
        if "pickle" in text.lower():
            text = "it holds Python objects (pickled data), which dictopt never loads"
        raise DictoptInputError(f"{path}: corrupt or unreadable .npz file ({text})") from err
    W = torch.as_tensor(np.asarray(arrays[key], dtype=np.float64))
    if W.ndim != 2:
        raise DictoptInputError(f"{path}: {key!r} must be 2-D, got shape {tuple(W.shape)}")
    bias_key = next((k for k in BIAS_KEYS if k in arrays), None)
    bias = torch.as_tensor(np.asarray(arrays[bias_key], dtype=np.float64)) if bias_key else None
    if d_in is None and "d_in" in arrays:
        d_in = int(arrays["d_in"])
    if d_in is None and bias is not None:
        d_in = int(bias.numel())
    rows, cols = W.shape
    if d_in is not None:
        if rows == cols:
            if key not in ROW_KEYS:
                raise DictoptInputError(
                    f"{path}: {key!r} is square ({rows}x{cols}); its orientation is ambiguous. "
                    "Store it as 'atoms' (rows are atoms)"
                )
        elif cols != d_in:
            if rows == d_in:
                raise DictoptInputError(
                    f"{path}: {key!r} has shape {tuple(W.shape)} but d = {d_in}: it is "
                    "[d, K]; dictopt's layout is atoms as rows [K, d]. Transpose it"
                )
            raise DictoptInputError(
                f"{path}: {key!r} has shape {tuple(W.shape)}, incompatible with d = {d_in}"
            )
    elif key not in ROW_KEYS:
        raise DictoptInputError(
            f"{path}: cannot verify the orientation of {key!r} {tuple(W.shape)}: store it as "
            "'atoms' [K, d] or add 'd_in' or a bias"
        )
    if lam is None and "lam" in arrays:
        lam = float(arrays["lam"])
    has_bias = bias is not None
    meta = {
        "library": "numpy",
        "file": str(path),
        "architecture": "lasso",
        "conventions": {"orientation": f"{key!r} rows are atoms [K, d]"},
        "lam_conversion": "lam as stored (THEORY §1 convention)" if lam is not None
        else "no lam stored: lam is None",
        "lam_factor": 1.0 if lam is not None else None,
    }
    return Dictionary.from_decoder(W, bias, lam=lam, has_bias=has_bias, meta=meta)
