"""Quantum ESPRESSO pw.x + hp.x pipeline for Hubbard U/V labels (plain functions, no model code).

Modules
-------
- ``structures``: small AFM/FM oxide cells as JSON-able dicts, seeded rattles and strains.
- ``cathodes``: battery-cathode cells (rutile, layered, spinel, olivine) from published
  crystal structures, and k/q meshes scaled to a cell.
- ``inputs``: pw.x input (QE 6.7 ``Hubbard_V(i,j,k)`` or QE >= 7.1 ``HUBBARD`` card) and hp.x
  input; Hubbard atoms first, crystal coordinates wrapped to [0, 1), QE 3x3x3 supercell indices,
  every TM-ligand first-shell pair activated (1e-8) at iteration 0.
- ``parsers``: pw.x stdout, ``occup.txt`` (full-precision on-site + inter-site blocks),
  hp.x ``Hubbard_parameters.dat`` / ``parameters.out`` / stdout. One ValueError on bad files.
- ``runner``: atomic files, the per-job step lock, process groups that die with the runner,
  commands under ``nice`` + ``mpirun -np 2 ... -nk 2``.
- ``cycle``: the self-consistent cycle as resumable steps ``scf0, hp0, scf1, hp1, ...``; the
  pseudopotential directory (``$ZOO_PSEUDO_DIR``).
- ``pieces``: an hp.x step split into resumable pieces (``perturb_only_atom``, ``compute_hp``).
- ``dataset``: label rows (one per U/V per sc step) and ``data/hubbard/`` writer.
- ``queue`` / ``plan`` / ``plan_cathodes``: the local queue CLI and the planned jobs.

Orbital order of all occupation matrices: QE real harmonics, p = (z, x, y),
d = (z2, xz, yz, x2-y2, xy).

Mapping to AiiDA (aiida-quantumespresso + aiida-hubbard, for QE >= 7.2 at scale)
-----------------------------------------------------------------------------
- structure dict + Hubbard list (``inputs.initial_hubbard``) -> ``HubbardStructureData``
  (``initialize_hubbard_parameters`` / ``append_hubbard_parameter(i, i_trans, j, j_trans)``: our
  supercell index ``j`` is ``inputs.supercell_atom(j, nat)`` = (atom, translation)).
- step ``scf<k>`` (``cycle._run_scf``: ``inputs.pw_input`` with ``qe_version >= (7, 1)``) ->
  ``PwBaseWorkChain`` / ``PwCalculation`` with ``hubbard_structure``; our retry with halved
  ``mixing_beta`` is what ``PwBaseWorkChain``'s error handlers do.
- step ``hp<k>`` (``cycle._run_hp``) -> ``HpWorkChain`` / ``HpCalculation`` with ``parent_scf``
  = the scf<k> remote folder, ``qpoints`` = ``hp["nq"]``, parameters = ``inputs.hp_input``;
  ``parsers.parse_hubbard_parameters_dat`` ~ ``HpParser``'s ``hubbard`` output.
- the sequence scf0, hp0, scf1, ... with ``hubbard_for_iteration`` ->
  ``SelfConsistentHubbardWorkChain`` (``max_iterations`` = ``n_iter``; it stops on a
  U/V tolerance, we run a fixed number of iterations because every iteration is a label).
- ``dataset.rows_for_step`` reads what those work chains store: ``output_parameters``,
  ``occup.txt`` from the retrieved folder (add it to ``additional_retrieve_list``) and the
  ``hubbard`` output of ``HpCalculation``.
- the queue (``queue run``) -> the AiiDA daemon; ``status.json`` -> process node states.
"""
