"""Fixtures shared by the Hubbard tests."""

import shutil
import subprocess
from pathlib import Path

import jax
import pytest

from zoo.hubbard._models import IntersiteModel, OnsiteModel
from zoo.hubbard._predict import HubbardUV

LD1 = Path(__file__).resolve().parents[1] / "data" / "qe" / "ld1"
NIO_PSEUDOS = {"Ni": "Ni.pbe-n-rrkjus_psl.1.0.0.UPF", "O": "O.pbe-nl-rrkjus_psl.1.0.0.UPF"}


@pytest.fixture(scope="module")
def uv():
    """An untrained, small HubbardUV for Fe/Mn/Ni oxides (plumbing tests only)."""
    small = {"hidden_layers": 1, "key": jax.random.key(0)}
    return HubbardUV(
        OnsiteModel(["Fe", "Mn", "Ni"], feature_irreps="2x0e+2x2e", **small),
        IntersiteModel(["Fe", "Mn", "Ni", "O"], feature_irreps="2x0e+2x1e+2x2e", **small),
    )


@pytest.fixture
def nio_pseudos(tmp_path) -> tuple[dict[str, str], Path]:
    """``(pseudos, pseudo_dir)``: the NiO pseudopotentials generated here with ld1.x."""
    missing = [x for x in ("pw.x", "hp.x", "ld1.x", "mpirun") if shutil.which(x) is None]
    assert not missing, f"{missing} not found: apt-get install quantum-espresso (as .ci/run does)"
    pdir = tmp_path / "pseudo"
    pdir.mkdir()
    for name in NIO_PSEUDOS.values():
        with open(LD1 / name.replace(".UPF", ".ld1.in")) as fin:
            subprocess.run(["ld1.x"], stdin=fin, cwd=pdir, capture_output=True, check=True)
        assert (pdir / name).exists()
    return dict(NIO_PSEUDOS), pdir
