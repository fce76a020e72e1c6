"""zoo.train on tiny Equinox models: config, metrics, losses, fit, determinism, resume, freezing."""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import train
from zoo.train import TrainConfig, fit, regression_metrics, weighted_loss


def make_batches(n_batches: int, seed: int, sign: float = 1.0, size: int = 8) -> list[dict]:
    """Batches of y = sign * (x @ w) with the last row of each batch padding (mask 0)."""
    rng = np.random.default_rng(seed)
    w = np.array([[1.5], [-2.0]], dtype=np.float32)
    out = []
    for _ in range(n_batches):
        x = rng.normal(size=(size, 2)).astype(np.float32)
        y = sign * x @ w
        mask = np.ones(size, dtype=np.float32)
        mask[-1] = 0.0
        y[-1] = 1e3  # padding garbage: must not matter
        out.append({"x": x, "y": y, "mask": mask})
    return out


def make_model(seed: int = 0) -> eqx.nn.MLP:
    return eqx.nn.MLP(2, 1, width_size=8, depth=1, key=jax.random.key(seed))


def predict_fn(model, batch):
    return {"y": (jax.vmap(model)(batch["x"]), batch["y"], batch["mask"])}


def loss_fn(model, batch):
    return weighted_loss(predict_fn(model, batch), {"y": 1.0})


CFG = TrainConfig(seed=3, max_epochs=4, learning_rate=3e-2)


def leaves(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("seed", -1),
        ("max_epochs", 0),
        ("optimizer", "sgd"),
        ("learning_rate", 0.0),
        ("learning_rate", math.nan),
        ("schedule", "linear"),
        ("warmup", 4),
        ("grad_clip", -1.0),
        ("early_stopping_patience", 0),
        ("eval_every", 1.5),
        ("checkpoint_every", 0),
        ("plateau_factor", 1.0),
        ("final_lr_factor", 2.0),
        ("nonfinite", "ignore"),
        ("weight_decay", 0.1),  # only with adamw
        ("ema_decay", 1.0),
        ("ema_decay", 0.0),
    ],
)
def test_config_rejects_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(CFG, **{field: value})


def test_config_json_round_trip():
    cfg = TrainConfig(optimizer="adamw", weight_decay=1e-4, schedule="cosine", grad_clip=1.0)
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="lerning_rate"):
        TrainConfig.from_dict({"lerning_rate": 1.0})


def test_schedules():
    from zoo.train._optim import make_optimizer

    lr, n = 1e-2, 10
    cos = TrainConfig(max_epochs=5, learning_rate=lr, schedule="cosine", final_lr_factor=0.1)
    _, sched = make_optimizer(cos, n)
    assert float(sched(0)) == pytest.approx(lr)
    assert float(sched(50)) == pytest.approx(0.1 * lr)
    exp = dataclasses.replace(cos, schedule="exponential", warmup=1.0)
    _, sched = make_optimizer(exp, n)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5 * lr)
    assert float(sched(10)) == pytest.approx(lr)
    assert float(sched(50)) == pytest.approx(0.1 * lr, rel=1e-5)


def test_plateau_scales_rate():
    from zoo.train._optim import Plateau

    cfg = TrainConfig(schedule="plateau", plateau_patience=2, plateau_factor=0.5)
    p = Plateau()
    scales = []
    for v in [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.45]:
        p.update(v, cfg)
        scales.append(p.scale)
    assert scales == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25]
    for _ in range(20):
        p.update(1.0, cfg)
    assert p.scale == cfg.final_lr_factor  # the floor


# --- metrics and losses -----------------------------------------------------------------------


def test_regression_metrics_values_and_mask():
    true = np.array([[1.0], [2.0], [3.0], [100.0]])
    pred = np.array([[1.5], [2.0], [2.0], [-7.0]])
    m = regression_metrics(pred, true, mask=np.array([1, 1, 1, 0]))
    assert m["n"] == 3
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(1.25 / 3))
    assert m["r2"] == pytest.approx(1 - 1.25 / 2.0)
    assert regression_metrics(true, true)["r2"] == 1.0
    with pytest.raises(ValueError, match="mask"):
        regression_metrics(pred, true, mask=np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        regression_metrics(pred, true[:2])


def test_weighted_loss_masks_and_weights():
    pred = jnp.array([[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]])
    true = jnp.zeros((3, 2))
    mask = jnp.array([1.0, 1.0, 0.0])
    loss, aux = weighted_loss({"a": (pred, true, mask)}, {"a": 2.0})
    assert float(aux["loss_a"]) == pytest.approx(0.5)
    assert float(loss) == pytest.approx(1.0)
    loss, _ = weighted_loss({"a": (pred, true, mask)}, {"a": 1.0}, loss="mae")
    assert float(loss) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="absent"):
        weighted_loss({"a": (pred, true, mask)}, {"b": 1.0})


def test_irreps_loss_and_metrics():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(5, 3, 3)).astype(np.float32)
    true = rng.normal(size=(5, 3, 3)).astype(np.float32)
    mask = np.ones(5, np.float32)
    out = {"z": (jnp.asarray(pred), jnp.asarray(true), jnp.asarray(mask))}
    cart, _ = weighted_loss(out, {"z": 1.0})
    irr, _ = weighted_loss(out, {"z": 1.0}, tensor_kinds={"z": "rank2"})
    assert float(irr) == pytest.approx(float(cart), rel=1e-5)  # orthonormal basis, 9 = 9 comps
    only_0e, _ = weighted_loss(
        out, {"z": 1.0}, tensor_kinds={"z": "rank2"}, irreps_weights={"z": {"1e": 0, "2e": 0}}
    )
    trace_err = np.trace(pred - true, axis1=1, axis2=2) / np.sqrt(3)
    assert float(only_0e) == pytest.approx(np.mean(trace_err**2), rel=1e-5)
    m = train.metrics_from_predictions({"z": (pred, true, mask)}, {"z": "rank2"})
    assert set(m["z"]["irreps"]) == {"1x0e", "1x1e", "1x2e"}
    assert m["z"]["irreps"]["1x0e"]["mae"] == pytest.approx(np.mean(np.abs(trace_err)), rel=1e-5)


def test_parity_plot_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.normal(size=(20, 3))
    train.parity_plot(t + 0.1, t, tmp_path / "p.png", "y", "eV", mask=np.ones(20))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- fit --------------------------------------------------------------------------------------


def test_fit_learns_and_writes_outputs(tmp_path):
    tr, va = make_batches(4, 0), make_batches(2, 1)
    model = make_model()
    res = fit(model, loss_fn, tr, va, CFG, out_dir=tmp_path, predict_fn=predict_fn, progress=False)
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert res.best_val_loss == min(r["val_loss"] for r in h)
    assert h[res.best_epoch - 1]["val_loss"] == res.best_val_loss
    for name in ("best_model.safetensors", "train_config.json", "history.json", "metrics.json"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "parity_y.png").exists()
    assert (tmp_path / "checkpoint" / "checkpoint.safetensors").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    assert TrainConfig.from_dict(json.loads((tmp_path / "train_config.json").read_text())) == CFG
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["validation"]["y"]) == {"mae", "rmse", "r2", "n"}
    assert metrics["validation"]["y"]["n"] == 2 * 7  # padding rows excluded
    assert metrics["best_epoch"] == res.best_epoch
    ev = train.evaluate(res.model, predict_fn, va)
    assert ev["y"]["mae"] == pytest.approx(metrics["validation"]["y"]["mae"])
    loaded = train.load_weights(make_model(seed=9), tmp_path / "best_model.safetensors")
    assert same(loaded, res.model)


def test_same_seed_bit_identical_and_seed_matters():
    tr, va = make_batches(4, 0), make_batches(2, 1)
    a = fit(make_model(), loss_fn, tr, va, CFG, progress=False)
    b = fit(make_model(), loss_fn, tr, va, CFG, progress=False)
    c = fit(make_model(), loss_fn, tr, va, dataclasses.replace(CFG, seed=4), progress=False)
    assert same(a.final_model, b.final_model) and same(a.model, b.model)
    assert not same(a.final_model, c.final_model)  # the seed drives the batch order


class Killed(Exception):
    pass


class DiesAfter:
    """A batch sequence that raises after `n` reads, like a kill in the middle of an epoch."""

    def __init__(self, batches, n):
        self.batches, self.left = batches, n

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        self.left -= 1
        if self.left < 0:
            raise Killed
        return self.batches[i]


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_after_interrupt_is_bit_identical(tmp_path, ema):
    tr, va = make_batches(4, 0), make_batches(2, 1)
    cfg = dataclasses.replace(CFG, max_epochs=5, schedule="cosine", ema_decay=ema)
    ref = fit(make_model(), loss_fn, tr, va, cfg, progress=False)
    with pytest.raises(Killed):  # 1 read for the signature, then 2 full epochs and 2 steps
        fit(make_model(), loss_fn, DiesAfter(tr, 1 + 10), va, cfg, out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in saved] == [1, 2]
    res = fit(make_model(seed=5), loss_fn, tr, va, cfg, out_dir=tmp_path, progress=False)
    assert same(res.final_model, ref.final_model) and same(res.model, ref.model)
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in ref.history]
    # a finished run resumes to the same result without training
    again = fit(make_model(), loss_fn, DiesAfter(tr, 1), va, cfg, out_dir=tmp_path, progress=False)
    assert same(again.model, ref.model)


def test_ema_is_the_decayed_average_of_the_trajectory():
    """One batch, no shuffle: epoch k is step k, and the raw trajectory does not see the EMA."""
    tr, va, d = make_batches(1, 0), make_batches(1, 1), 0.7
    cfg = dataclasses.replace(CFG, max_epochs=3, shuffle=False)
    raw = [make_model()] + [
        fit(make_model(), loss_fn, tr, None, dataclasses.replace(cfg, max_epochs=k),
            progress=False).final_model
        for k in (1, 2, 3)
    ]  # fmt: skip
    res = fit(make_model(), loss_fn, tr, va, dataclasses.replace(cfg, ema_decay=d), progress=False)
    w = [d**3, (1 - d) * d**2, (1 - d) * d, 1 - d]  # weights of steps 0..3
    want = [sum(c * x for c, x in zip(w, xs)) for xs in zip(*map(leaves, raw))]
    for got, ref in zip(leaves(res.final_model), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert not same(res.final_model, raw[-1])
    # validation judged the averaged weights
    best = res.history[res.best_epoch - 1]["val_loss"]
    assert best == pytest.approx(float(loss_fn(res.model, va[0])[0]), rel=1e-5)


def test_checkpoint_of_other_run_is_refused(tmp_path):
    tr, va = make_batches(2, 0), make_batches(1, 1)
    cfg = dataclasses.replace(CFG, max_epochs=1)
    fit(make_model(), loss_fn, tr, va, cfg, out_dir=tmp_path, progress=False)
    before = (tmp_path / "checkpoint" / "checkpoint.safetensors").read_bytes()
    other = dataclasses.replace(cfg, learning_rate=1e-3)
    with pytest.raises(ValueError, match="learning_rate"):
        fit(make_model(), loss_fn, tr, va, other, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="n_train_batches"):
        fit(make_model(), loss_fn, tr + tr, va, cfg, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="resume=False"):
        fit(make_model(), loss_fn, tr, va, cfg, out_dir=tmp_path, progress=False, resume=False)
    assert (tmp_path / "checkpoint" / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.parametrize("spec", ["callable", "pytree"])
def test_freeze_trains_only_selected_leaves(spec):
    model = make_model()
    if spec == "callable":
        trainable = lambda path: path.startswith(".layers[1]")
    else:
        trainable = jax.tree.map(lambda _: False, model)
        trainable = eqx.tree_at(lambda m: m.layers[1], trainable, replace_fn=lambda s: True)
    tr, va = make_batches(2, 0), make_batches(1, 1)
    res = fit(model, loss_fn, tr, va, CFG, trainable=trainable, progress=False)
    new = res.final_model
    assert np.array_equal(new.layers[0].weight, model.layers[0].weight)
    assert np.array_equal(new.layers[0].bias, model.layers[0].bias)
    assert not np.array_equal(new.layers[1].weight, model.layers[1].weight)
    assert not np.array_equal(new.layers[1].bias, model.layers[1].bias)
    with pytest.raises(ValueError, match="nothing to train"):
        fit(model, loss_fn, tr, va, CFG, trainable=lambda p: False, progress=False)


def nan_loss_fn(model, batch):
    loss, aux = loss_fn(model, batch)
    return jnp.where(batch["poison"] > 0, jnp.nan, loss), aux


def test_nonfinite_steps_skipped_or_raised():
    tr = make_batches(3, 0)
    for i, b in enumerate(tr):
        b["poison"] = np.float32(i == 1)
    va = [dict(b, poison=np.float32(0)) for b in make_batches(1, 1)]
    cfg = dataclasses.replace(CFG, max_epochs=2)
    res = fit(make_model(), nan_loss_fn, tr, va, cfg, progress=False)
    assert res.n_skipped == 2 and [r["n_skipped"] for r in res.history] == [1, 1]
    assert all(np.isfinite(x).all() for x in leaves(res.final_model))
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(
            make_model(),
            nan_loss_fn,
            tr,
            va,
            dataclasses.replace(cfg, nonfinite="raise"),
            progress=False,
        )
    with pytest.raises(FloatingPointError, match="every training step"):
        fit(make_model(), nan_loss_fn, [tr[1]], va, cfg, progress=False)


def test_early_stopping_on_validation(capsys):
    # validation targets have the opposite sign: learning the training data makes it worse
    tr, va = make_batches(3, 0), make_batches(1, 1, sign=-1.0)
    cfg = dataclasses.replace(CFG, max_epochs=50, early_stopping_patience=2)
    res = fit(make_model(), loss_fn, tr, va, cfg, progress=True)
    assert "step" in capsys.readouterr().err  # the tqdm bar
    assert len(res.history) < 50
    assert len(res.history) == res.best_epoch + 2
    assert not same(res.model, res.final_model)


def test_weights_round_trip_is_strict(tmp_path):
    model = make_model()
    train.save_weights(model, tmp_path / "w.safetensors")
    skeleton = eqx.filter_eval_shape(make_model, 1)
    assert same(train.load_weights(skeleton, tmp_path / "w.safetensors"), model)
    wider = eqx.nn.MLP(2, 1, width_size=9, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"shape \(8, 2\)"):
        train.load_weights(wider, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="no array"):
        train.load_weights({"mlp": model}, tmp_path / "w.safetensors")


def test_bad_inputs():
    tr = make_batches(1, 0)
    with pytest.raises(ValueError, match="sequence"):
        fit(make_model(), loss_fn, iter(tr), None, CFG, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit(make_model(), loss_fn, [], None, CFG, progress=False)
    with pytest.raises(ValueError, match="TrainConfig"):
        fit(make_model(), loss_fn, tr, None, {"seed": 0}, progress=False)
    with pytest.raises(ValueError, match="devices"):
        fit(make_model(), loss_fn, tr, None, CFG, progress=False, devices=["cpu"])
    with pytest.raises(ValueError, match="scalar"):
        fit(make_model(), lambda m, b: (jnp.ones(2), {}), tr, None, CFG, progress=False)


def test_checkpoint_from_before_a_new_config_field_resumes(tmp_path):
    """A finished run checkpointed before a TrainConfig field existed (at its default) is the
    same run: it resumes without training instead of being refused."""
    import safetensors.numpy

    from zoo.train._checkpoint import _STATE_KEY, load_checkpoint
    from zoo.train._fit import CHECKPOINT

    tr, va = make_batches(2, 0), make_batches(1, 1)
    ref = fit(make_model(), loss_fn, tr, va, CFG, out_dir=tmp_path, progress=False)
    arrays, state = load_checkpoint(tmp_path / CHECKPOINT)
    del state["signature"]["config"]["ema_decay"]
    meta = {_STATE_KEY: json.dumps(state)}
    (tmp_path / CHECKPOINT).write_bytes(safetensors.numpy.save(arrays, metadata=meta))
    again = fit(make_model(), loss_fn, DiesAfter(tr, 1), va, CFG, out_dir=tmp_path, progress=False)
    assert same(again.model, ref.model)
    with pytest.raises(ValueError, match="learning_rate"):  # a real difference still is refused
        fit(make_model(), loss_fn, tr, va, dataclasses.replace(CFG, learning_rate=1e-3),
            out_dir=tmp_path, progress=False)  # fmt: skip
