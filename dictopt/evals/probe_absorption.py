"""Probe-based feature absorption (Chanin et al., arXiv 2409.14507; SAEBench's absorption eval).

The method, in three steps, each on held-out words:

1. **Probes.** One logistic-regression probe per class (here: per first letter) on the model's
   activations ``x``. A word is a *probe true positive* of its class when the probe's score is
   positive.
2. **Main latents (k-sparse probing).** Latents are ranked per class by the coefficients of an
   L1-regularised logistic regression on the SAE codes (positive coefficients only: latents that
   predict the class), ties broken by the difference of mean codes. For ``k = 1, 2, ...`` a
   logistic regression on the top ``k`` latents is scored by F1 on held-out words; ``k`` grows
   while F1 improves by more than ``f1_jump`` (SAEBench: 0.03). The latents of the last
   accepted ``k`` are the class's *main latents* (more than one: feature splitting).
3. **Absorption, per probe true positive.** With the unit probe direction ``p``, the word's
   probe projection is ``x·p`` and latent ``k`` contributes ``a_k (d_k·p)`` (canonical codes,
   unit atoms). Latents other than the main ones with ``d_k·p ≥ cos_fraction`` and a positive
   contribution are *potential absorbers*.

   - **Full absorption** (one absorbing latent): every main latent is silent, the latent with
     the largest contribution has ``d_k·p ≥ cos_full`` and contributes at least
     ``proportion`` of ``x·p`` (which must be positive). That latent is the *absorbing latent*.
   - **Absorption fraction** (partial, up to ``max_absorbers`` latents): 0 when the main
     latents' contribution already reaches ``x·p`` or the top absorbers contribute less than
     ``proportion`` of it; 1 when the main latents contribute nothing; otherwise the absorbers'
     share ``A / (A + M)`` with ``A = min(absorbers, x·p − M)``.

   Per class: the full-absorption rate and the mean absorption fraction over its probe true
   positives; overall: their means over classes (SAEBench's ``mean_full_absorption_score`` and
   ``mean_absorption_fraction_score``). The thresholds are SAEBench's defaults.

Everything here is numpy and scikit-learn on arrays: the caller encodes the words with the SAE.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AbsorptionThresholds:
    """SAEBench's thresholds (``FeatureAbsorptionCalculator`` defaults)."""

    cos_full: float = 0.025
    """Full absorption: the top contributor's cosine with the probe direction is at least this."""
    cos_fraction: float = 0.1
    """Absorption fraction: a potential absorber's cosine with the probe is at least this."""
    proportion: float = 0.4
    """The absorber(s) must contribute at least this share of the probe projection ``x·p``."""
    max_absorbers: int = 3
    """Absorption fraction: at most this many absorbing latents are summed."""
    f1_jump: float = 0.03
    """k-sparse probing: ``k`` grows while held-out F1 improves by more than this."""
    max_k: int = 10
    """k-sparse probing: largest ``k`` tried."""
    eps: float = 1e-8
    """A code at or below this is silent."""


DEFAULT_THRESHOLDS = AbsorptionThresholds()

# scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratio``
_L1: dict[str, Any] = (
    {"l1_ratio": 1.0} if tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
    else {"penalty": "l1"}
)


def _split_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = float(np.sum(y & pred))
    prec = tp / max(float(pred.sum()), 1.0)
    rec = tp / max(float(y.sum()), 1.0)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {"accuracy": float(np.mean(y == pred)), "precision": prec, "recall": rec, "f1": f1}


@dataclass
class LetterProbes:
    """One linear probe per class, with held-out figures."""

    weights: np.ndarray
    """``[C, d]`` probe weights (scores are ``x @ weights.T + bias``)."""
    bias: np.ndarray
    """``[C]`` intercepts."""
    per_class: list[dict[str, float]]
    """Held-out accuracy, precision, recall, F1 and the counts per class."""
    multiclass_accuracy: float
    """Held-out accuracy of the arg-max over the class scores."""

    def scores(self, x_ND: np.ndarray) -> np.ndarray:
        """``[N, C]`` probe scores (positive: the probe says the class is present)."""
        return x_ND @ self.weights.T + self.bias

    @property
    def directions(self) -> np.ndarray:
        """Unit probe directions."""
        return self.weights / np.linalg.norm(self.weights, axis=1, keepdims=True)

    def mean(self, key: str) -> float:
        """Mean of ``key`` over the classes that have held-out words."""
        vals = [m[key] for m in self.per_class if m["n_test"] > 0]
        return float(np.mean(vals)) if vals else float("nan")


def _check_xy(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DictoptInputError(
            f"{name}: expected x [N, d] and y [N], got {x.shape} and {y.shape}"
        )


def train_probes(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n_classes: int,
    C: float = 1.0,
    max_iter: int = 2000,
) -> LetterProbes:
    """One binary logistic-regression probe per class (balanced class weights).

    Parameters
    ----------
    x_train, y_train, x_test, y_test:
        Activations ``[N, d]`` and integer classes ``[N]`` in ``0 .. n_classes - 1``.
    n_classes:
        Number of classes (26 letters).
    C:
        Inverse L2 strength of scikit-learn's ``LogisticRegression``.

    Returns
    -------
    LetterProbes
        Weights, intercepts and held-out figures per class; a class absent from the training
        words gets a zero probe with intercept −1 (it never fires).
    """
    _check_xy(x_train, y_train, "train")
    _check_xy(x_test, y_test, "test")
    d = x_train.shape[1]
    W = np.zeros((n_classes, d))
    b = -np.ones(n_classes)
    per_class = []
    for c in range(n_classes):
        pos = y_train == c
        if 0 < pos.sum() < len(pos):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                lr = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter)
                lr.fit(x_train, pos)
            W[c], b[c] = lr.coef_[0], lr.intercept_[0]
        pred = (x_test @ W[c] + b[c]) > 0
        m = _split_metrics(y_test == c, pred)
        m.update(n_train=int(pos.sum()), n_test=int((y_test == c).sum()))
        per_class.append(m)
    probes = LetterProbes(W, b, per_class, 0.0)
    probes.multiclass_accuracy = float(np.mean(probes.scores(x_test).argmax(1) == y_test))
    return probes


@dataclass
class SparseProbing:
    """k-sparse probing of one class: ranked latents, F1 per k, and the main latents."""

    ranking: list[int]
    """The ``max_k`` best latents, best first."""
    f1_by_k: list[float]
    """Held-out F1 of the logistic regression on the top ``k`` latents, ``k = 1 ..``."""
    main: list[int]
    """The main latents (top ``k`` at the last ``k`` whose F1 jumped by more than f1_jump)."""


def _rank_latents(codes_NK: np.ndarray, pos: np.ndarray, max_k: int, l1_C: float) -> list[int]:
    """Latents by positive L1-probe coefficient, then by mean-code difference."""
    diff_K = codes_NK[pos].mean(0) - codes_NK[~pos].mean(0)
    live = np.flatnonzero(codes_NK.max(0) > 0)
    coef_K = np.zeros(codes_NK.shape[1])
    if live.size and 0 < pos.sum() < len(pos):
        scale = codes_NK[:, live].std(0) + 1e-12
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr = LogisticRegression(C=l1_C, solver="liblinear", class_weight="balanced",
                                    max_iter=500, **_L1)
            lr.fit(codes_NK[:, live] / scale, pos)
        coef_K[live] = lr.coef_[0]
    order = np.lexsort((-diff_K, -np.maximum(coef_K, 0.0)))
    return [int(k) for k in order[:max_k]]


def sparse_probing(
    codes_train_NK: np.ndarray,
    y_train: np.ndarray,
    codes_test_NK: np.ndarray,
    y_test: np.ndarray,
    cls: int,
    *,
    thresholds: AbsorptionThresholds = DEFAULT_THRESHOLDS,
    l1_C: float = 0.05,
) -> SparseProbing:
    """Main latents of class ``cls`` by k-sparse probing on SAE codes (see the module text)."""
    pos_tr, pos_te = y_train == cls, y_test == cls
    ranking = _rank_latents(codes_train_NK, pos_tr, thresholds.max_k, l1_C)
    f1s: list[float] = []
    main: list[int] = []
    best = -np.inf
    for k in range(1, len(ranking) + 1):
        cols = ranking[:k]
        if 0 < pos_tr.sum() < len(pos_tr):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                lr = LogisticRegression(class_weight="balanced", max_iter=500)
                lr.fit(codes_train_NK[:, cols], pos_tr)
            pred = lr.decision_function(codes_test_NK[:, cols]) > 0
        else:
            pred = np.zeros(len(y_test), dtype=bool)
        f1 = float(f1_score(pos_te, pred, zero_division=0.0))
        f1s.append(f1)
        if f1 > best + thresholds.f1_jump:
            best, main = f1, cols
        else:
            break
    return SparseProbing(ranking, f1s, main)


@dataclass
class WordAbsorption:
    """One probe true positive: its projections and verdicts."""

    row: int
    """Index of the word in the test arrays."""
    probe_projection: float
    """``x·p``."""
    main_projection: float
    """Sum of the main latents' contributions ``a_k (d_k·p)``."""
    main_active: bool
    """Some main latent is active."""
    top_latent: int
    """The non-main latent with the largest contribution (−1: none positive)."""
    top_projection: float
    top_cos: float
    absorption_fraction: float
    full_absorption: bool


@dataclass
class ClassAbsorption:
    """Absorption of one class (first letter)."""

    cls: int
    main: list[int]
    f1_by_k: list[float]
    n_true_positives: int
    """Held-out words of the class on which the probe fires."""
    n_main_silent: int
    """...of which every main latent is silent (the false negatives of the main latents)."""
    n_full: int
    full_rate: float
    mean_fraction: float
    absorbers: dict[int, int] = field(default_factory=dict)
    """Absorbing latent → number of words it fully absorbs."""
    words: list[WordAbsorption] = field(default_factory=list)
    in_means: bool = True
    """The probe is good enough (F1 above ``min_probe_f1``) and has true positives."""


def class_absorption(
    x_ND: np.ndarray,
    codes_NK: np.ndarray,
    atoms_KD: np.ndarray,
    is_class: np.ndarray,
    probe_scores: np.ndarray,
    probe_direction: np.ndarray,
    main: list[int],
    *,
    thresholds: AbsorptionThresholds = DEFAULT_THRESHOLDS,
) -> tuple[int, list[WordAbsorption]]:
    """Absorption verdicts on the probe true positives (``is_class`` and score > 0).

    Parameters
    ----------
    x_ND:
        Activations of the held-out words, as the SAE sees them.
    codes_NK:
        Their canonical codes (unit atoms).
    atoms_KD:
        Unit atoms.
    is_class, probe_scores:
        ``[N]`` the words' true class membership and the probe's scores.
    probe_direction:
        ``[d]`` the probe's weight vector (normalised here).
    main:
        The class's main latents.

    Returns
    -------
    (n_true_positives, verdicts)
    """
    th = thresholds
    p_D = probe_direction / np.linalg.norm(probe_direction)
    cos_K = atoms_KD @ p_D
    rows = np.flatnonzero(is_class & (probe_scores > 0))
    is_main = np.zeros(atoms_KD.shape[0], dtype=bool)
    is_main[main] = True
    out = []
    for r in rows:
        proj = float(x_ND[r] @ p_D)
        contrib_K = codes_NK[r] * cos_K
        main_proj = float(contrib_K[is_main].sum())
        main_active = bool((codes_NK[r, is_main] > th.eps).any())
        others = np.where(is_main, -np.inf, contrib_K)
        top = int(np.argmax(others))
        top_proj = float(others[top])
        if not top_proj > 0:
            top, top_proj = -1, 0.0
        # absorption fraction (partial absorption, up to max_absorbers latents)
        cand = (~is_main) & (cos_K >= th.cos_fraction) & (contrib_K > 0)
        vals = np.sort(contrib_K[cand])[::-1][: th.max_absorbers]
        absorbers = float(vals.sum())
        if proj <= 0 or main_proj >= proj or absorbers / proj < th.proportion:
            frac = 0.0
        elif main_proj <= 0:
            frac = 1.0
        else:
            a = min(absorbers, proj - main_proj)
            frac = float(np.clip(a / (a + main_proj), 0.0, 1.0))
        full = (not main_active and top >= 0 and float(cos_K[top]) >= th.cos_full
                and proj > 0 and top_proj / proj >= th.proportion)
        out.append(WordAbsorption(int(r), proj, main_proj, main_active, top, top_proj,
                                  float(cos_K[top]) if top >= 0 else 0.0, frac, full))
    return len(rows), out


@dataclass
class ProbeAbsorption:
    """The probe-based absorption of one SAE on the first-letter task."""

    classes: list[ClassAbsorption]
    mean_full_rate: float
    """Mean over classes of the full-absorption rate (SAEBench ``mean_full_absorption_score``)."""
    mean_fraction: float
    """Mean over classes of the mean absorption fraction (``mean_absorption_fraction_score``)."""
    mean_split: float
    """Mean number of main latents per class."""
    info: dict[str, Any] = field(default_factory=dict)

    def pairs(self) -> list[tuple[int, int, int, int]]:
        """``(class, main latent, absorbing latent, words)`` for every full-absorption case."""
        return [(c.cls, m, a, n) for c in self.classes if c.in_means
                for a, n in c.absorbers.items() for m in c.main]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (per-word verdicts left out)."""
        return {
            "mean_full_absorption": self.mean_full_rate,
            "mean_absorption_fraction": self.mean_fraction,
            "mean_main_latents": self.mean_split,
            "classes": [
                {"class": c.cls, "main": c.main, "f1_by_k": c.f1_by_k,
                 "true_positives": c.n_true_positives, "main_silent": c.n_main_silent,
                 "full_absorption": c.n_full, "full_rate": c.full_rate,
                 "mean_fraction": c.mean_fraction, "in_means": c.in_means,
                 "absorbers": {str(a): n for a, n in sorted(c.absorbers.items())}}
                for c in self.classes
            ],
            "info": self.info,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeAbsorption:
        """The summary :meth:`to_json` wrote (per-word verdicts are not in it).

        Parameters
        ----------
        data:
            :meth:`to_json`'s dict (as read back from JSON: absorber keys are strings).

        Returns
        -------
        ProbeAbsorption
        """
        classes = [
            ClassAbsorption(
                int(c["class"]), [int(m) for m in c["main"]], list(c["f1_by_k"]),
                int(c["true_positives"]), int(c["main_silent"]), int(c["full_absorption"]),
                float(c["full_rate"]), float(c["mean_fraction"]),
                absorbers={int(a): int(n) for a, n in c["absorbers"].items()},
                in_means=bool(c["in_means"]),
            )
            for c in data["classes"]
        ]
        return cls(classes, float(data["mean_full_absorption"]),
                   float(data["mean_absorption_fraction"]), float(data["mean_main_latents"]),
                   dict(data.get("info", {})))


def probe_absorption(
    probes: LetterProbes,
    codes_train_NK: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    codes_test_NK: np.ndarray,
    y_test: np.ndarray,
    atoms_KD: np.ndarray,
    *,
    thresholds: AbsorptionThresholds = DEFAULT_THRESHOLDS,
    min_true_positives: int = 1,
    min_probe_f1: float = 0.6,
) -> ProbeAbsorption:
    """The whole probe-based absorption eval of one SAE (module text).

    Parameters
    ----------
    probes:
        Probes trained on the activations (:func:`train_probes`).
    codes_train_NK, y_train:
        Training words: canonical codes and classes (k-sparse probing fits here).
    x_test, codes_test_NK, y_test:
        Held-out words (F1 for the choice of k, and the absorption verdicts).
    atoms_KD:
        The SAE's unit atoms.
    min_true_positives:
        Classes with fewer held-out probe true positives are left out of the means.
    min_probe_f1:
        Classes whose probe has a held-out F1 at or below this are left out of the means and
        of :meth:`ProbeAbsorption.pairs` (SAEBench 0.6.0: ``min_GT_probe_f1 = 0.6``).

    Returns
    -------
    ProbeAbsorption
    """
    _check_xy(x_test, y_test, "test")
    if codes_test_NK.shape != (x_test.shape[0], atoms_KD.shape[0]):
        raise DictoptInputError(
            f"codes: expected [{x_test.shape[0]}, {atoms_KD.shape[0]}], got {codes_test_NK.shape}"
        )
    scores = probes.scores(x_test)
    classes = []
    for c in range(probes.weights.shape[0]):
        sp = sparse_probing(codes_train_NK, y_train, codes_test_NK, y_test, c,
                            thresholds=thresholds)
        n_tp, words = class_absorption(
            x_test, codes_test_NK, atoms_KD, y_test == c, scores[:, c], probes.weights[c],
            sp.main, thresholds=thresholds,
        )
        absorbers: dict[int, int] = {}
        for w in words:
            if w.full_absorption:
                absorbers[w.top_latent] = absorbers.get(w.top_latent, 0) + 1
        n_full = sum(w.full_absorption for w in words)
        classes.append(ClassAbsorption(
            c, sp.main, sp.f1_by_k, n_tp, sum(not w.main_active for w in words), n_full,
            n_full / n_tp if n_tp else 0.0,
            sum(w.absorption_fraction for w in words) / n_tp if n_tp else 0.0,
            absorbers, words,
        ))
    for c in classes:
        c.in_means = (c.n_true_positives >= min_true_positives
                      and probes.per_class[c.cls]["f1"] > min_probe_f1)
    kept = [c for c in classes if c.in_means]
    if not kept:
        raise DictoptInputError(
            f"no class has a probe with held-out F1 above {min_probe_f1} and a true positive"
        )
    return ProbeAbsorption(
        classes,
        float(np.mean([c.full_rate for c in kept])),
        float(np.mean([c.mean_fraction for c in kept])),
        float(np.mean([len(c.main) for c in kept])),
        {"thresholds": thresholds.__dict__, "classes_in_means": len(kept)},
    )
