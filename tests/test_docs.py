"""The reference docs build strictly (any warning, e.g. a broken link or reference, fails) and
hold a page per shipped model (with its plots), per architecture and the API pages."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).with_name("mkdocs"))
    assert Path(mkdocs).is_file(), "mkdocs is missing: pip install -e '.[docs]'"
    site = tmp_path / "site"
    result = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("batio3-response", "si29-shielding", "hubbard-u", "hubbard-v", "hubbard-uv"):
        page = site / "models" / name / "index.html"
        assert page.is_file(), page
        plots = sorted((ROOT / "zoo" / "weights" / name).glob("*.png"))
        assert plots and all((page.parent / p.name).is_file() for p in plots)
        assert all(f'src="{p.name}"' in page.read_text() for p in plots)
    for arch in ("nequip", "mace", "allegro"):
        assert "doc-heading" in (site / "architectures" / arch / "index.html").read_text()
    hub = (site / "api" / "hub" / "index.html").read_text()
    assert "from_pretrained" in hub and "push_to_hub" in hub
    assert (site / "experiments" / "index.html").is_file()
