"""mkdocs hook: one page per shipped model, made from its model card (zoo/weights/<name>/).

The card's YAML front matter is dropped (its values are in the card's tables) and the plots it
links are copied next to the page, so the relative image links of the card work unchanged.
"""

from pathlib import Path

from mkdocs.structure.files import File

WEIGHTS = Path(__file__).resolve().parents[1] / "zoo" / "weights"


def _body(card: str) -> str:
    if card.startswith("---"):
        _, _, rest = card[3:].partition("\n---")
        return rest.lstrip("\n")
    return card


def on_files(files, config):
    for folder in sorted(p for p in WEIGHTS.iterdir() if (p / "README.md").is_file()):
        page = f"models/{folder.name}/index.md"
        text = _body((folder / "README.md").read_text(encoding="utf-8"))
        files.append(File.generated(config, page, content=text))
        for plot in sorted(folder.glob("*.png")):
            files.append(File.generated(config, f"models/{folder.name}/{plot.name}",
                                        abs_src_path=str(plot)))  # fmt: skip
    return files
