"""`_cards`: model cards, the README.md of a model folder, written and read.

`make_model_card` writes a card whose YAML front matter the Hugging Face Hub understands
(``library_name``, ``license``, ``tags``, ``datasets``, ``metrics``, ``base_model``);
`read_card_metadata` reads that front matter back.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def make_model_card(
    name: str,
    *,
    description: str = "",
    license: str = "mit",
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    metrics: Mapping[str, float | int | str] | None = None,
    config: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    repo_id: str | None = None,
) -> str:
    """A README.md model card whose YAML front matter the Hub understands.

    The front matter has ``library_name: e3zoo``, ``license``, ``tags``, ``datasets``,
    ``metrics`` (names) and ``base_model`` (a Hub repo id, with ``base_model_revision``); the
    metric values go in a table in the body. The usage line loads ``repo_id`` (a Hub id or a
    folder path), else `name`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if not isinstance(license, str) or not license:
        raise ValueError("license must be a non-empty string, e.g. 'mit' or 'cc-by-4.0'")
    metrics = dict(metrics or {})
    meta: dict[str, Any] = {"library_name": "e3zoo", "license": license}
    meta["tags"] = list(dict.fromkeys(["e3zoo", "jax", "equinox", "e3nn", "materials", *tags]))
    if datasets:
        meta["datasets"] = list(datasets)
    if metrics:
        meta["metrics"] = sorted(metrics)
    if base_model:
        meta["base_model"] = base_model
        if base_model_revision:
            meta["base_model_revision"] = base_model_revision
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += ["## Usage", "", "```python", "import zoo", ""]
    lines += [f'model = zoo.load("{repo_id or name}")', "```", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for key in sorted(metrics):
            value = metrics[key]
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    if config:
        lines += ["## Model", ""]
        lines += [f"- `{k}`: `{config[k]}`" for k in ("model_type", "zoo_version") if k in config]
        lines.append("")
    lines += ["Files: `config.json` (architecture), `model.safetensors` (weights), this card.", ""]
    return "\n".join(lines)


def read_card_metadata(path: str | os.PathLike) -> dict:
    """The YAML front matter of a model card as a dict ({} when there is none)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable model card ({err})") from err
    if not text.startswith("---"):
        return {}
    head, sep, _ = text[3:].partition("\n---")
    try:
        meta = yaml.safe_load(head) if sep else None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML front matter ({err})") from err
    return meta if isinstance(meta, dict) else {}
