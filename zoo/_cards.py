"""`_cards`: model cards, the README.md of a model folder, written and read.

The front matter is built with huggingface_hub's ``ModelCardData`` (``library_name``,
``license``, ``tags``, ``datasets``, ``base_model``, and ``model-index`` evaluation results
with their measured values, from ``EvalResult``), so the Hub shows and parses it.
`make_model_card` writes a default card; `card_data`, `eval_result` and `with_front_matter`
are what the training recipes' card renderers use; `read_card_metadata` reads it back.
"""

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

#: tags every e3zoo card has
BASE_TAGS = ("e3zoo", "jax", "equinox", "e3nn", "materials")


def eval_result(
    task: tuple[str, str],
    dataset: tuple[str, str],
    metric: tuple[str, str],
    value: float,
    *,
    split: str | None = None,
    subset: str | None = None,
) -> EvalResult:
    """One measured value for ``model-index``: `task` = (type, name), `dataset` = (name, type),
    `metric` = (type, name with its unit), `value` finite; `subset` (the dataset ``config``)
    names the labels of one target (e.g. ``"U"``): huggingface_hub groups results by task type
    and dataset, not by task name."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"eval result {metric[1]!r}: value must be a finite number, got {value!r}")
    return EvalResult(
        task_type=task[0], task_name=task[1], dataset_name=dataset[0], dataset_type=dataset[1],
        dataset_split=split, dataset_config=subset, metric_type=metric[0], metric_name=metric[1],
        metric_value=float(value),
    )  # fmt: skip


def card_data(
    name: str,
    *,
    license: str = "mit",
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    results: Sequence[EvalResult] = (),
    base_model: str | None = None,
) -> ModelCardData:
    """The Hub metadata of a card: ``library_name: e3zoo``, `license`, the base tags plus
    `tags`, `datasets` (Hub dataset ids), `base_model` (a Hub repo id, for fine-tuned models)
    and `results` as ``model-index`` under `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if not isinstance(license, str) or not license:
        raise ValueError("license must be a non-empty string, e.g. 'mit' or 'cc-by-4.0'")
    return ModelCardData(
        library_name="e3zoo",
        license=license,
        tags=list(dict.fromkeys([*BASE_TAGS, *tags])),
        datasets=list(datasets) or None,
        base_model=base_model,
        model_name=name if results else None,
        eval_results=list(results) or None,
    )


def front_matter(data: ModelCardData) -> str:
    """``---`` + the YAML of `data` + ``---``."""
    return f"---\n{data.to_yaml()}\n---\n"


def with_front_matter(card: str, data: ModelCardData) -> str:
    """`card` (README.md text) with its front matter replaced by (or given) `data`'s; the body
    is kept byte for byte."""
    body = card
    if card.startswith("---"):
        _, sep, rest = card[3:].partition("\n---")
        if not sep:
            raise ValueError("card: front matter opened with '---' but never closed")
        body = rest.split("\n", 1)[1] if "\n" in rest else ""
    text = front_matter(data) + body
    ModelCard(text)  # parses as the Hub would (raises on invalid metadata)
    return text


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

    The front matter (`card_data`) has ``library_name: e3zoo``, ``license``, ``tags``,
    ``datasets`` and ``base_model`` (a Hub repo id, with ``base_model_revision``); the
    metric values go in a table in the body (measured results with their task and data set go
    in ``model-index``: see `card_data`). The usage line loads ``repo_id`` (a Hub id or a
    folder path), else `name`.
    """
    metrics = dict(metrics or {})
    data = card_data(name, license=license, tags=tags, datasets=datasets, base_model=base_model)
    data.metrics = sorted(metrics) or None  # the names; the values are in the body's table
    if base_model and base_model_revision:
        data.base_model_revision = base_model_revision
    lines = [front_matter(data), f"# {name}", ""]
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
