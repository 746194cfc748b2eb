"""The torch SAE family: ReLU (decoder-norm-weighted L1), TopK, BatchTopK, JumpReLU,
Matryoshka BatchTopK and matching pursuit.

Every architecture is a small ``nn.Module`` with ``encode``/``decode``, a config dataclass
(SAELens field names), an exact conversion ``to_dictionary()`` to the canonical
:class:`~dictopt.problem.Dictionary`, and the :class:`~dictopt.problem.RawEncoder` hooks that
:mod:`dictopt.io.native` uses to save and rebuild it. Train with :mod:`dictopt.solvers.train`.
"""

from dictopt.solvers.sae.base import (
    SAE,
    SAE_CLASSES,
    ForwardOutput,
    SAEConfig,
    get_sae_class,
    make_config,
    make_sae,
    mse_loss,
)
from dictopt.solvers.sae.jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from dictopt.solvers.sae.mp import MPSAE, MPSAEConfig, matching_pursuit
from dictopt.solvers.sae.relu import ReLUSAE, ReLUSAEConfig
from dictopt.solvers.sae.topk import (
    BatchTopKSAE,
    BatchTopKSAEConfig,
    MatryoshkaSAE,
    MatryoshkaSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

__all__ = [
    "SAE",
    "SAE_CLASSES",
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "ForwardOutput",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "MPSAE",
    "MPSAEConfig",
    "MatryoshkaSAE",
    "MatryoshkaSAEConfig",
    "ReLUSAE",
    "ReLUSAEConfig",
    "SAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "get_sae_class",
    "make_config",
    "make_sae",
    "matching_pursuit",
    "mse_loss",
]
