"""`_hub_mixin`: huggingface_hub's ``ModelHubMixin`` surface for the zoo's Equinox models.

``SomeModel.from_pretrained(repo_or_dir, revision=..., cache_dir=..., local_files_only=...,
token=...)``, ``model.save_pretrained(dir)`` and ``model.push_to_hub(repo_id)`` as
huggingface_hub users expect, on top of `zoo.hub` (sha256 pins of the shipped names, checked
downloads, the whole repo snapshotted into the Hugging Face cache).

Equinox modules are frozen dataclasses: the mixin adds no field (its attributes are class
attributes of a plain class, which dataclasses do not collect) and skips
``ModelHubMixin.__new__``, which would store the ``__init__`` arguments on the instance; a
model's ``config`` field is its configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import equinox as eqx
from huggingface_hub import ModelCard, ModelHubMixin

T = TypeVar("T", bound="HubMixin")


class HubMixin(
    ModelHubMixin,
    library_name="e3zoo",
    tags=["e3zoo", "jax", "equinox", "e3nn"],
):
    """Hub methods for an ``eqx.Module`` with a JSON-safe ``config`` dict naming its
    ``model_type`` (see ``zoo._registry.MODEL_TYPES``). Inherit it before ``eqx.Module``:
    ``class ResponseModel(HubMixin, eqx.Module)``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not issubclass(cls, eqx.Module):
            raise TypeError(f"{cls.__name__}: HubMixin is for eqx.Module subclasses")

    def __new__(cls, *args: Any, **kwargs: Any):
        # past ModelHubMixin.__new__ to eqx.Module.__new__, which marks the instance as
        # being initialised (its fields may be set in __init__)
        return super(ModelHubMixin, cls).__new__(cls, *args, **kwargs)

    @classmethod
    def from_pretrained(
        cls: type[T],
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> T:
        """Load a model of this class: a shipped name, a Hub repo id ``"org/name"`` or a folder.

        Same options as `zoo.from_pretrained` (``dtype``, ``device``, ``source``, ``endpoint``,
        ...). A repo whose config.json names a model type that this class is not (e.g. a
        ShieldingModel repo loaded with ``ResponseModel.from_pretrained``) is refused; a
        subclass of the registered class is built as that subclass.
        """
        from .hub import _load

        if "model_types" in kwargs:
            raise ValueError(f"{cls.__name__}.from_pretrained builds {cls.__name__}: "
                             "model_types= is for zoo.from_pretrained")  # fmt: skip
        return _load(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            model_class=cls,
            **kwargs,
        )

    @classmethod
    def _from_pretrained(
        cls: type[T],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> T:
        """huggingface_hub's loading hook: :meth:`from_pretrained` of this class."""
        if force_download:
            raise ValueError("force_download=True is not supported: a cached file that fails "
                             "its sha256 check is removed and downloaded again")  # fmt: skip
        return cls.from_pretrained(model_id, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only, token=token,
                                   **model_kwargs)  # fmt: skip

    def _save_pretrained(self, save_directory: Path) -> None:
        """huggingface_hub's saving hook: writes into an empty or new folder only."""
        self.save_pretrained(save_directory)

    def save_pretrained(self, save_directory: str | os.PathLike, *, card: str | None = None,
                        overwrite: bool = False, **kwargs: Any) -> Path:  # fmt: skip
        """Write config.json, model.safetensors and README.md (see `zoo.save_pretrained`)."""
        from ._serialization import save_pretrained

        return save_pretrained(self, save_directory, card=card, overwrite=overwrite, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        branch: str | None = None,
        card: str | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """Save to a temporary folder and upload it to ``repo_id`` (created if missing) on
        ``branch`` (default ``main``); returns huggingface_hub's ``CommitInfo``."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, revision=branch, token=token, private=private,
                           commit_message=commit_message, card=card, endpoint=endpoint)  # fmt: skip

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The default card of this model (`zoo.make_model_card`) as a ``ModelCard``."""
        from ._cards import make_model_card

        config = dict(getattr(self, "config", {}) or {})
        name = str(kwargs.get("name") or config.get("model_type") or type(self).__name__)
        return ModelCard(make_model_card(name, config=config))
