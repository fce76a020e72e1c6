"""Output heads: per-node features -> physical tensors.

- :class:`AtomTensorHead`: a per-atom Cartesian tensor read out directly (Born charges,
  Raman tensors, shielding), see ``atom_tensor.py``;
- :class:`GlobalTensorHead`: an intensive per-structure tensor from pooled features
  (dielectric tensor, chi(2)), see ``global_tensor.py``;
- :class:`EnergyHead` and the ``*_from_derivatives`` functions: tensors as derivatives of a
  learned energy with respect to fields, positions and nuclear moments, see ``derivative.py``.
"""

from .atom_tensor import AtomTensorHead as AtomTensorHead
from .derivative import COULOMB as COULOMB
from .derivative import EnergyHead as EnergyHead
from .derivative import born_from_derivatives as born_from_derivatives
from .derivative import dielectric_from_derivatives as dielectric_from_derivatives
from .derivative import raman_from_derivatives as raman_from_derivatives
from .derivative import shielding_from_derivatives as shielding_from_derivatives
from .global_tensor import GlobalTensorHead as GlobalTensorHead
