"""Warnings that point at the user's line.

A warning raised deep inside a prediction or a load is shown with the file and line of the
first caller outside zoo and the libraries that call back into it (equinox's bound methods,
ASE's calculator machinery), e.g. ``model.predict(...)`` or ``atoms.get_forces()``.
"""

from __future__ import annotations

import sys
import warnings

#: top-level packages whose frames stand between the user's line and zoo's code
_PASS_THROUGH = frozenset({"zoo", "equinox", "ase"})


def _internal(frame) -> bool:
    return str(frame.f_globals.get("__name__", "")).partition(".")[0] in _PASS_THROUGH


def user_stacklevel() -> int:
    """The ``stacklevel`` with which the function calling this one points ``warnings.warn``
    at the first frame outside :data:`_PASS_THROUGH`."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _internal(frame):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` at the user's line (:func:`user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
