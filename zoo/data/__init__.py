"""Loaders of the training data sets shipped in ``data/`` (validated, with clear errors)."""

from .batio3 import load_batio3 as load_batio3
from .batio3 import read_qe_cards as read_qe_cards
from .si29 import load_si29 as load_si29
from .si29 import load_split as load_split
from .si29 import make_batches as make_batches
