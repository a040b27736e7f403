"""The repository's documentation stays in step with the code.

- (the code map is each package's `__init__.py` docstring: tests/test_structure.py checks it);
- nothing cites the private method note that is not part of the repository; the method is
  documented in docs/method.md;
- every link from the README (or from the code) to docs/*.md points to an existing file, and
  a `#section` anchor to an existing heading of it;
- the README's Python example runs as written (on a tiny run folder and the authors' LAN).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# Built from parts so that this file does not contain the name it looks for.
PRIVATE_NOTE = "SASL_SPEC" + ".md"
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "results"}
TEXT_SUFFIXES = {"", ".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json"}
MAX_TEXT_BYTES = 2_000_000
DOC_LINK = re.compile(r"(?<![\w/.-])(docs/[\w./-]+?\.md)(#[\w-]+)?")


def _section(markdown: str, heading: str) -> str:
    """Text of the '## heading' section up to the next heading of level 2 (or 1)."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^#{{1,2}} |\Z)", markdown, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def text_files() -> list[Path]:
    """Text files of the repository (outside VCS, caches, virtualenvs and run outputs)."""
    found = []
    stack = [REPO]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                if entry.name not in SKIP_DIRS and not entry.name.endswith(".egg-info"):
                    stack.append(entry)
            elif entry.suffix.lower() in TEXT_SUFFIXES and entry.stat().st_size <= MAX_TEXT_BYTES:
                found.append(entry)
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    to hyphens (letters, digits, '-' and '_' are kept)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(markdown: str) -> set[str]:
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+?)\s*$", markdown, re.M)}


def test_nothing_cites_the_private_method_note():
    citing = [
        p.relative_to(REPO).as_posix()
        for p in text_files()
        if PRIVATE_NOTE in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert not citing, f"{PRIVATE_NOTE} is not in the repository (use docs/method.md): {citing}"


def test_text_file_scan_covers_the_repository():
    names = {p.relative_to(REPO).as_posix() for p in text_files()}
    assert {
        "README.md",
        "docs/method.md",
        "sassid_jax/evaluation/metrics.py",
        "tests/test_docs.py",
    } <= names
    assert {"configs/sasl_paper.py", "bench/README.md"} <= names


def test_links_to_docs_exist():
    sources = [README, *(p for p in text_files() if p.suffix == ".py")]
    broken = []
    for source in sources:
        for path, anchor in DOC_LINK.findall(source.read_text(encoding="utf-8", errors="replace")):
            target = REPO / path
            where = f"{source.relative_to(REPO).as_posix()}: {path}{anchor}"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
            elif anchor and anchor[1:] not in anchors_of(target.read_text()):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links to docs: " + "; ".join(broken)


def test_links_inside_docs_exist():
    broken = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        text = doc.read_text()
        for anchor in re.findall(r"\]\(#([\w-]+)\)", text):
            if anchor not in anchors_of(text):
                broken.append(f"{doc.relative_to(REPO).as_posix()}: #{anchor}")
    assert not broken, "links to missing headings: " + "; ".join(broken)


def test_readme_links_to_the_method():
    assert any(path == "docs/method.md" for path, _ in DOC_LINK.findall(README.read_text()))


def test_github_anchor():
    assert github_anchor("Flatness map alpha") == "flatness-map-alpha"
    assert github_anchor("Departures from the authors' release") == (
        "departures-from-the-authors-release"
    )
    assert github_anchor("U-Net") == "u-net"


def test_readme_python_example_runs(single_process_run, shared_data, tmp_path, monkeypatch):
    """The README's Python section, with its run folder and .pth pointed at real ones."""
    block = re.search(r"```python\n(.*?)```", _section(README.read_text(), "Python"), re.S)
    assert block, "README.md's Python section has no python code block"
    code = block.group(1)
    for name, path in {
        "runs/default": single_process_run,
        "LAN.pth": shared_data / "weights" / "official_LAN.pth",
    }.items():
        assert f'"{name}"' in code, f"the README's Python example no longer uses {name!r}"
        code = code.replace(f'"{name}"', repr(str(path)))
    rng = np.random.default_rng(0)
    clean = rng.integers(60, 200, (48, 40, 3), dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
    Image.fromarray(clean).save(tmp_path / "clean.png")
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python)", "exec"), namespace)
    assert np.asarray(Image.open(tmp_path / "denoised.png")).shape == (48, 40, 3)
    assert namespace["y"].shape == (1, 48, 40, 3)
