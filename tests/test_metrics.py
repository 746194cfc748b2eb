"""Recovery metrics pinned on cases whose answer is known."""

import numpy as np
import pytest
import torch

from dictopt import DictoptInputError
from dictopt.metrics import atom_recovery, cosine_matrix


def test_permuted_scaled_copy_is_fully_recovered():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(6, 5))
    learned = 3.0 * true[[4, 2, 0, 1, 5, 3]]
    rec = atom_recovery(learned, true, threshold=0.999)
    assert rec.fraction == 1.0
    assert rec.best_match.tolist() == [2, 3, 1, 5, 0, 4]
    assert torch.allclose(rec.best_cosine, torch.ones(6, dtype=torch.float64))


def test_antipodal_atom_does_not_count_and_splitting_is_counted():
    true = np.eye(3)
    learned = np.array([[-1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0.01], [0, 0, 1.0]])
    rec = atom_recovery(learned, true, threshold=0.99)
    assert rec.fraction == pytest.approx(2 / 3)
    assert rec.split_counts.tolist() == [0, 2, 1]


def test_cosine_matrix_errors():
    with pytest.raises(DictoptInputError, match="width"):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(DictoptInputError, match="zero rows"):
        cosine_matrix(np.zeros((1, 3)), np.ones((2, 3)))
    with pytest.raises(DictoptInputError, match="threshold"):
        atom_recovery(np.ones((1, 3)), np.ones((1, 3)), threshold=2.0)
