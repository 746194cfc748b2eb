"""Small real data sets bundled with scikit-learn (no download): no ground truth.

These worlds have ``K_true = 0``: ``atoms`` is an empty ``[0, d]`` array, ``codes`` an empty
``[N, 0]`` array, ``bias`` zeros, and :meth:`World.truth` raises. They exist so that solvers and
the checker can be exercised on natural data with the same interface.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dictopt.data.worlds._core import Streams, World, count, flag, register_world
from dictopt.validation import DictoptInputError

DIGITS_N = 1797


def _no_truth(x: np.ndarray) -> World:
    n, d = x.shape
    return World(
        name="",
        x=np.ascontiguousarray(x, dtype=np.float64),
        atoms=np.zeros((0, d)),
        codes=np.zeros((n, 0)),
        bias=np.zeros(d),
    )


@register_world(
    "digits",
    "scikit-learn's 8x8 handwritten digits (1797 x 64), pixel values / 16; no ground truth",
    defaults={"n": DIGITS_N, "scale": True},
    param_docs={
        "n": f"number of images (≤ {DIGITS_N}); fewer are sampled without replacement with "
        "the seed, kept in the data set's order",
        "scale": "divide pixel values (integers 0..16) by 16 so that x lies in [0, 1]",
    },
)
def digits(params: dict[str, Any], rng: Streams) -> World:
    """``sklearn.datasets.load_digits().data``, optionally scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    n = count(params, "n")
    if n > DIGITS_N:
        raise DictoptInputError(f"n: the digits data set has {DIGITS_N} images, asked for {n}")
    scale = flag(params, "scale")
    x = load_digits().data.astype(np.float64)
    if n < DIGITS_N:
        x = x[np.sort(rng.codes.choice(DIGITS_N, size=n, replace=False))]
    return _no_truth(x / 16.0 if scale else x)


@register_world(
    "patches",
    "random 8x8 grayscale patches of scikit-learn's two sample photos, in [0, 1]; no ground truth",
    defaults={"n": 5000, "patch_size": 8, "center": False},
    param_docs={
        "n": "number of patches, sampled uniformly (image, then position) with the seed",
        "patch_size": "side of the square patches; d = patch_size²",
        "center": "subtract each patch's own mean (removes brightness)",
    },
)
def patches(params: dict[str, Any], rng: Streams) -> World:
    """Patches of ``load_sample_images()`` (china.jpg, flower.jpg; 427 x 640 each).

    Grayscale is the ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``, divided by 255 so pixel
    values lie in [0, 1]. Each patch picks one of the two images uniformly, then a uniformly
    random top-left corner; rows of ``x`` are patches flattened row-major.
    """
    from sklearn.datasets import load_sample_images

    n = count(params, "n")
    s = count(params, "patch_size")
    center = flag(params, "center")
    gray = [
        img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        for img in load_sample_images().images
    ]
    h = min(g.shape[0] for g in gray)
    w = min(g.shape[1] for g in gray)
    if s > min(h, w):
        raise DictoptInputError(f"patch_size: must be ≤ {min(h, w)} (image size), got {s}")
    which = rng.codes.integers(0, len(gray), size=n)
    top = rng.codes.integers(0, h - s + 1, size=n)
    left = rng.codes.integers(0, w - s + 1, size=n)
    stack = np.stack([g[:h, :w] for g in gray])
    offs = np.arange(s)
    x = stack[
        which[:, None, None], top[:, None, None] + offs[None, :, None], left[:, None, None] + offs
    ].reshape(n, s * s)
    if center:
        x = x - x.mean(axis=1, keepdims=True)
    return _no_truth(x)
