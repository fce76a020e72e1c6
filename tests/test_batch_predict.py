"""Batch prediction (`zoo._predict`, `zoo._capacity`): lists and iterators in padded batches,
outputs in input order, capacities that do not recompile, and bad input (unknown species in a
mixed batch, empty input, an iterator failing part-way)."""

import jax
import numpy as np
import pytest
from ase import Atoms
from test_heads import BACKBONE

from zoo import _predict
from zoo._capacity import Capacities, Capacity, fresh, plan
from zoo._jax_cache import count_compiles
from zoo._neighbors import neighbor_pairs
from zoo.model import ResponseModel, make_config
from zoo.structure import Structure

R_MAX = 4.49  # the shipped model's 4.5 would share its capacities (`capacities_for`)
FRAC = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def bto(a=4.0, seed=None, repeat=(1, 1, 1)) -> Atoms:
    atoms = Atoms("BaTiO3", scaled_positions=FRAC, cell=[a, a, a], pbc=True).repeat(repeat)
    if seed is not None:
        atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def model():
    backbone = dict(BACKBONE, channels=2, lmax=2, r_max=R_MAX)  # two layers: 1e needs them
    config = make_config([56, 22, 8], ["born_charges", "dielectric"], backbone=backbone)
    return ResponseModel(config, key=jax.random.key(0))


def mixed():
    """Structures of 5, 10, 40 and 5 atoms, not in size order (packing reorders them)."""
    return [bto(4.0, 1, (2, 1, 1)), bto(4.0, 2), bto(4.05, 3, (2, 2, 2)), bto(3.95, 4)]


def n_edges(atoms) -> int:
    return len(neighbor_pairs(Structure.from_ase(atoms), R_MAX)[0])


def test_strain_that_removes_a_shell_keeps_the_capacity(model):
    """The second Ti-O shell (1.118 a) leaves the cutoff between a = 4.00 and 4.10 Å:
    154 -> 106 edges; the capacity of either holds the other, so nothing recompiles."""
    assert (n_edges(bto(4.00)), n_edges(bto(4.10))) == (154, 106)
    for first, second in ((4.00, 4.10), (4.10, 4.00)):
        caps = Capacities()
        need = [Capacity(6, n_edges(bto(a)), 2) for a in (first, second)]
        assert caps.fit(need[0]) == caps.fit(need[1]) and len(caps) == 1
    model.predict(bto(4.00))
    with count_compiles() as count:
        outs = [model.predict(bto(a, seed)) for seed, a in enumerate((4.10, 3.95, 4.05, 4.0))]
    assert count.compiles == 0, count
    assert all(np.isfinite(o["born_charges"]).all() for o in outs)


def test_new_structures_inside_a_seen_capacity_do_not_recompile(model):
    model.predict([bto(4.0, seed) for seed in range(6)])
    with count_compiles() as count:
        model.predict([bto(4.02, seed) for seed in range(10, 16)])
        model.predict([bto(3.98, seed) for seed in range(20, 23)])
    assert count.compiles == 0, count


def test_fresh_capacities_grow_geometrically_and_reuse_is_bounded():
    caps = Capacities(max_waste=2.0)
    sizes = [fresh(Capacity(n + 1, 30 * n, 2)) for n in range(1, 2000)]
    assert len(set(sizes)) < 80  # a handful of shapes over three orders of magnitude
    assert all(c.n_edges >= 1.25 * 30 * n for n, c in zip(range(1, 2000), sizes))
    big = caps.fit(Capacity(401, 12000, 2))
    assert caps.fit(Capacity(300, 9000, 2)) == big  # within 2x: reused
    small = caps.fit(Capacity(50, 1500, 2))
    assert small != big and small.n_nodes < 100 and len(caps) == 2
    with pytest.raises(ValueError, match="max_waste"):
        Capacities(max_waste=0.5)


def test_plan_packs_every_structure_once_into_one_capacity():
    rng = np.random.default_rng(0)
    atoms = rng.integers(20, 110, size=67)
    sizes = [(int(n), int(30 * n)) for n in atoms]
    cap, batches = plan(sizes, 8, Capacities())
    assert sorted(i for b in batches for i in b) == list(range(67))
    for b in batches:
        assert len(b) + 1 <= cap.n_graphs and len(b) <= 16
        assert sum(sizes[i][0] for i in b) + 1 <= cap.n_nodes
        assert sum(sizes[i][1] for i in b) <= cap.n_edges
    assert len(batches) <= 2 * 67 / 8 + 1  # budget of 8 mean structures: about 8 per batch
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        plan(sizes, 0, Capacities())


def test_iterator_and_list_give_the_same_outputs_in_input_order(model):
    structures = mixed()
    merged = model.predict(structures, batch_size=2)
    lengths = [len(s) for s in structures]
    np.testing.assert_array_equal(merged["structure_index"], np.repeat(range(4), lengths))
    assert merged["dielectric"].shape == (4, 3, 3)
    from_iter = model.predict(iter(mixed()), batch_size=2)
    streamed = list(model.predict_iter(s for s in mixed()))
    assert len(streamed) == 4
    parts = np.split(merged["born_charges"], np.cumsum(lengths)[:-1])
    for k, s in enumerate(structures):
        alone = model.predict(s)
        np.testing.assert_allclose(parts[k], alone["born_charges"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(streamed[k]["born_charges"], parts[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(merged["dielectric"][k], alone["dielectric"], rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    for name in merged:
        np.testing.assert_allclose(from_iter[name], merged[name], rtol=1e-5, atol=1e-6)


def test_unknown_species_in_a_mixed_batch_names_structure_and_element(model):
    structures = mixed()
    structures[2].numbers[[0, 9]] = 79  # Au
    with pytest.raises(ValueError, match=r"structure 2: unknown species Au \(atoms 0, 9\)"):
        model.predict(structures)
    # from an iterator the first two are predicted before structure 2 is read
    with pytest.raises(_predict.PredictionInterrupted, match="structure 2") as info:
        model.predict(iter(structures))
    assert isinstance(info.value.__cause__, ValueError)
    assert "unknown species Au" in str(info.value.__cause__)
    assert info.value.index == 2 and info.value.results["dielectric"].shape == (2, 3, 3)


def test_empty_input_is_refused(model):
    with pytest.raises(ValueError, match="empty list of structures"):
        model.predict([])
    with pytest.raises(ValueError, match="the iterable was empty"):
        model.predict(iter([]))
    with pytest.raises(ValueError, match="the iterable was empty"):
        list(model.predict_iter(x for x in []))
    with pytest.raises(ValueError, match="expected an iterable of structures|cannot make"):
        model.predict(42)


def test_an_iterator_failing_midway_keeps_the_outputs_so_far(model):
    def frames():
        yield from mixed()[:3]
        raise OSError("truncated trajectory file")

    with pytest.raises(_predict.PredictionInterrupted, match="structure 3 .*truncated") as info:
        model.predict(frames(), batch_size=1)  # several chunks before the failure
    err = info.value
    assert isinstance(err.__cause__, OSError) and err.index == 3 and len(err.structures) == 3
    want = model.predict(mixed()[:3])
    for name in want:
        np.testing.assert_allclose(err.results[name], want[name], rtol=1e-5, atol=1e-6)
    got = []
    with pytest.raises(OSError, match="truncated"):
        for out in model.predict_iter(frames()):
            got.append(out)
    assert len(got) == 3  # streamed before the error

    def unreadable():
        raise OSError("unreadable file")
        yield  # a generator

    with pytest.raises(OSError, match="unreadable file"):  # nothing predicted: the error itself
        model.predict(unreadable())


def test_progress_bar_and_bad_arguments(model, capsys):
    model.predict([bto(4.0, 1), bto(4.0, 2)], progress=True)
    err = capsys.readouterr().err
    assert "predict" in err and "2/2" in err
    model.predict([bto(4.0, 1), bto(4.0, 2)])  # auto: off when stderr is not a terminal
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        model.predict(bto(), progress="yes")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        model.predict(bto(), batch_size=0)
