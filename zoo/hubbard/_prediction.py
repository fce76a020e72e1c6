"""``HubbardPrediction``: predicted U/V of one pw.x run and the QE input text they imply."""

import dataclasses
from typing import Any

from .dft.inputs import MANIFOLD, supercell_atom

PairKey = tuple[int, int, tuple[int, int, int]]


@dataclasses.dataclass(frozen=True)
class HubbardPrediction:
    """Predicted U (per 1-based site) and V (per ``(i, j, image)`` pair), in eV.

    ``labels``/``elements`` per site; ``param_in`` the values pw.x used (same keys, plus the
    not-predicted ones); ``sc_index`` maps a V key to QE's 3x3x3 supercell index j;
    ``not_predicted`` names the parameters left to their input value and why.
    """

    U: dict[int, float]
    V: dict[PairKey, float]
    labels: dict[int, str]
    elements: dict[int, str]
    distances: dict[PairKey, float]
    param_in: dict[PairKey, float]
    sc_index: dict[PairKey, int]
    not_predicted: dict[PairKey, str]
    projector: str = "ortho-atomic"

    def __getitem__(self, key: str) -> dict:
        return {"U": self.U, "V": self.V}[key]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready keys as strings ``"i"``/``"i-j-n1,n2,n3"``)."""
        name = lambda k: f"{k[0]}-{k[1]}-{','.join(map(str, k[2]))}"  # noqa: E731
        return {
            "U": {str(i): u for i, u in self.U.items()},
            "V": {name(k): v for k, v in self.V.items()},
            "elements": {str(i): e for i, e in self.elements.items()},
            "not_predicted": {name(k): why for k, why in self.not_predicted.items()},
        }

    def parameters(self) -> list[tuple[int, int, float]]:
        """``[(i, j_supercell, eV)]`` for the next run: predictions, else the input values."""
        out = []
        for key, j in sorted(self.sc_index.items(), key=lambda kv: (kv[0][0], kv[1])):
            i = key[0]
            if key[0] == key[1] and key[2] == (0, 0, 0) and i in self.U:
                out.append((i, j, self.U[i]))
            elif key in self.V:
                out.append((i, j, self.V[key]))
            else:
                out.append((i, j, self.param_in[key]))
        return out

    def hubbard_card(self, syntax: str = "qe7") -> str:
        """Text to paste into the next pw.x input.

        ``"qe6"``: ``Hubbard_V(i,j,1) = value`` lines for ``&system`` (QE <= 7.0; also set
        ``lda_plus_u = .true.``, ``lda_plus_u_kind = 2``). ``"qe7"``: the QE >= 7.1
        ``HUBBARD {projector}`` card with ``V label-manifold label-manifold i j value`` lines.
        """
        if syntax not in ("qe6", "qe7"):
            raise ValueError(
                f"syntax must be 'qe6' (QE <= 7.0) or 'qe7' (QE >= 7.1), got {syntax!r}"
            )
        params = self.parameters()
        if syntax == "qe6":
            return "".join(f"Hubbard_V({i},{j},1) = {_value(v, 'd')}\n" for i, j, v in params)
        nat = len(self.labels)
        lines = [f"HUBBARD {{{self.projector}}}"]
        for i, j, v in params:
            a = supercell_atom(j, nat)[0] + 1
            mi = f"{self.labels[i]}-{MANIFOLD[self.elements[i]]}"
            mj = f"{self.labels[a]}-{MANIFOLD[self.elements[a]]}"
            lines.append(f"V {mi} {mj} {i} {j} {_value(v, 'e')}")
        return "\n".join(lines) + "\n"


def _value(v: float, exponent: str) -> str:
    # pw.x prints V to 4 decimals: a pair active at 1e-8 reads 0.0, but a zero would switch it
    # off (and drop its occupation blocks), so keep it switched on
    return f"{v:.6f}" if abs(v) >= 1e-6 else f"1.0{exponent}-8"


class PredictsRuns:
    """``predict(pw_output)`` for a lone U or V model (``zoo.load("hubbard-u")``)."""

    def predict(
        self, pw_output, *, occup=None, labels=None, pairs: list[PairKey] | None = None
    ) -> HubbardPrediction:
        """This model's part of :meth:`HubbardUV.predict` (same arguments): U of every d
        site (a U model) or V of every p-d pair (a V model) of the pw.x run `pw_output`;
        the other part is listed in ``not_predicted`` (``zoo.load("hubbard-uv")`` has both)."""
        from ._predict import predict_part  # _predict imports the model classes

        return predict_part(self, pw_output, occup=occup, labels=labels, pairs=pairs)


__all__ = ["PairKey", "HubbardPrediction", "PredictsRuns"]
