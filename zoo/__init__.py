"""zoo: an Equinox + e3nn-jax model zoo of E(3)-equivariant models for properties beyond
energies and forces (Born charges, Raman tensors, NMR shielding, Hubbard U/V).

Read top-down, as a prediction flows: structure -> graph -> architecture -> model (heads,
normalisation) -> property; then loading and saving, training, and the tools on top.
"""

from importlib.metadata import PackageNotFoundError, version

# isort: split
# input: validated structures and padded periodic graphs
from .graph import Graph as Graph
from .graph import bucket_size as bucket_size
from .graph import build_graph as build_graph
from .graph import check_species as check_species
from .structure import Structure as Structure
from .structure import as_structure as as_structure

# isort: split
# architectures: graph -> per-node (Allegro: per-edge) irreps features; `backbones` is the
# registry name -> (Config, Module)
from . import backbones as backbones
from ._arch_config import DatasetInfo as DatasetInfo
from .allegro import Allegro as Allegro
from .allegro import AllegroConfig as AllegroConfig
from .mace import MACE as MACE
from .mace import MACEConfig as MACEConfig
from .nequip import NequIP as NequIP
from .nequip import NequIPConfig as NequIPConfig

# isort: split
# models: backbone + tensor heads + normalisation, with `predict`; a bare backbone as a
# Potential (energy, forces, stress)
from ._predict import PredictionInterrupted as PredictionInterrupted
from .backbones import Potential as Potential
from .field import FieldModel as FieldModel
from .model import ResponseModel as ResponseModel
from .shielding import ShieldingModel as ShieldingModel

# isort: split
# derivatives of energies: forces, stress, field responses
from .response import energy_forces_stress as energy_forces_stress
from .response import mixed_derivatives as mixed_derivatives
from .response import total_energy as total_energy

# isort: split
# tensor conventions
from .irreps import irreps_of as irreps_of
from .irreps import to_cartesian as to_cartesian
from .irreps import to_irreps as to_irreps
from .nmr import chemical_shift as chemical_shift
from .nmr import haeberlen as haeberlen
from .nmr import herzfeld_berger as herzfeld_berger

# isort: split
# model folders: embedded weights, the Hub, saving
from ._registry import WEIGHTS_DIR as WEIGHTS_DIR
from ._registry import write_registry as write_registry
from ._serialization import make_model_card as make_model_card
from ._serialization import save_pretrained as save_pretrained
from .hub import WeightsUnavailableError as WeightsUnavailableError
from .hub import from_pretrained as from_pretrained
from .hub import info as info
from .hub import list_models as list_models
from .hub import load as load
from .hub import push_to_hub as push_to_hub
from .hub import to_device as to_device

# isort: split
# on top: fine-tuning and the ASE calculator
from .calculator import Calculator as Calculator
from .finetune import finetune as finetune

# isort: split
# subpackages
from . import hubbard as hubbard
from . import irreps as irreps
from . import nmr as nmr
from . import testing as testing
from . import train as train

try:
    __version__ = version("e3zoo")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
