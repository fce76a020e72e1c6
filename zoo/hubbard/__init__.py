"""Hubbard U/V: data pipeline (``zoo.hubbard.dft``) and models.

Occupation matrices (QE basis) -> spin-flip-invariant irreps features -> on-site (U) and
inter-site (V) models (``KernelModel``, shipped: kernel ridge regression on the features'
rotation invariants; ``OnsiteModel`` / ``IntersiteModel``: HubbardML's tensor-square
networks; ``HubbardEnsemble``: a mean of networks). Every model answers ``predict(pw_output)``
for a pw.x run (a U model the U of its d sites, a V model the V of its p-d pairs);
``HubbardUV`` answers both, and ``self_consistent_hubbard`` alternates pw.x runs and
predictions.
"""

from ._basis import occupations_qe_to_e3nn as occupations_qe_to_e3nn
from ._basis import qe_to_e3nn as qe_to_e3nn
from ._basis import wigner_d_qe as wigner_d_qe
from ._ensemble import HubbardEnsemble as HubbardEnsemble
from ._features import intersite_features as intersite_features
from ._features import onsite_features as onsite_features
from ._fit import fit_scalers as fit_scalers
from ._kernel import KernelModel as KernelModel
from ._kernel import cross_validate as cross_validate
from ._loop import HubbardLoopError as HubbardLoopError
from ._loop import LoopResult as LoopResult
from ._loop import self_consistent_hubbard as self_consistent_hubbard
from ._models import IntersiteModel as IntersiteModel
from ._models import OnsiteModel as OnsiteModel
from ._predict import HubbardUV as HubbardUV
from ._prediction import HubbardPrediction as HubbardPrediction
from ._pw_local import run_pw_local as run_pw_local
from ._split import TRAIN as TRAIN
from ._split import VALIDATE as VALIDATE
from ._split import baseline_metrics as baseline_metrics
from ._split import duplicate_clusters as duplicate_clusters
from ._split import regression_metrics as regression_metrics
from ._split import split_by_clusters as split_by_clusters
