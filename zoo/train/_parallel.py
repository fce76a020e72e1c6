"""Data parallelism with `jax.sharding`: parameters replicated, batches split on their first axis.

Sharding annotations never change what a jitted function computes, only where it runs, so the
data-parallel step is the single-device step (XLA inserts the gradient all-reduce); results
differ only by floating-point summation order.
"""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


class Placement:
    """Where `fit` puts parameters and batches.

    One device: everything is committed to it. Several: a 1-D `Mesh` over them; parameters and
    optimiser state are replicated (`PartitionSpec()`), and each batch array whose leading axis
    divides by the device count is split along it (`PartitionSpec("data")`). Arrays that do not
    divide (per-batch scalars, small tables) are replicated, which is correct but not parallel: for
    the best scaling give every array a leading axis that is a multiple of the device count
    (e.g. graphs padded to a multiple of it).
    """

    def __init__(self, devices: Sequence[jax.Device]):
        devices = list(devices)
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise ValueError(f"devices must be a non-empty sequence of jax.Device, got {devices!r}")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices must be distinct, got {devices!r}")
        self.devices = devices
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec(AXIS))

    @property
    def n(self) -> int:
        return len(self.devices)

    def replicate(self, tree: Any) -> Any:
        """Put every array leaf of `tree` on all devices."""
        return jax.tree.map(
            lambda x: jax.device_put(x, self.replicated) if eqx.is_array(x) else x, tree
        )

    def batch(self, batch: Any) -> Any:
        """Put a batch on the devices, split along the leading axis where it divides."""

        def put(x: Any) -> Any:
            if not eqx.is_array(x):
                return x
            if self.n > 1 and np.ndim(x) >= 1 and np.shape(x)[0] % self.n == 0:
                return jax.device_put(x, self.split)
            return jax.device_put(x, self.replicated)

        return jax.tree.map(put, batch)


def make_placement(devices: Sequence[jax.Device] | None) -> Placement | None:
    """`None` (let JAX use its default device) or a validated `Placement`."""
    return None if devices is None else Placement(devices)
