"""Running pw.x on this machine for :func:`zoo.hubbard.self_consistent_hubbard`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .dft.runner import mpi_cmd, run_command

#: ``run_pw(input_file, workdir) -> pw.x stdout path``
RunPw = Callable[[Path, Path], Path]


def run_pw_local(
    nprocs: int = 2,
    npool: int = 2,
    *,
    nice: int = 10,
    pw_exe: str = "pw.x",
    mpirun: str = "mpirun",
    timeout: float | None = None,
) -> RunPw:
    """A `run_pw` running ``nice -n {nice} mpirun -np {nprocs} {pw_exe} -nk {npool}`` locally.

    Uses the root-safe Open MPI environment (``OMPI_ALLOW_RUN_AS_ROOT=1``,
    ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1``) and ``OMP_NUM_THREADS=1``; ``nprocs=1`` runs the bare
    executable (`npool` ignored). The input is given on stdin, stdout goes to ``<workdir>/pw.out``.
    """
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs: expected an int >= 1, got {nprocs!r}")
    if not isinstance(npool, int) or npool < 1 or (nprocs > 1 and nprocs % npool):
        raise ValueError(f"npool: expected an int >= 1 dividing nprocs={nprocs}, got {npool!r}")
    cmd = mpi_cmd(pw_exe, nprocs, npool, mpirun)

    def run_pw(input_file: Path, workdir: Path) -> Path:
        missing = [c for c in (cmd[0], pw_exe) if shutil.which(c) is None]
        if missing:
            raise FileNotFoundError(f"run_pw_local: {missing[0]!r} not found on PATH")
        out = Path(workdir) / "pw.out"
        run_command(cmd, cwd=Path(workdir), stdin=Path(input_file), stdout=out, nice=nice,
                    timeout=timeout)  # fmt: skip
        return out

    return run_pw


__all__ = ["RunPw", "run_pw_local"]
