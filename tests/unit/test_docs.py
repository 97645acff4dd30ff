"""The project's docs stand alone: every file they point to is in the repository."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Paths written in backticks or as link targets: `catalog/api/`, [x](docs/architecture.md)
PATH = re.compile(r"(?:`|\]\()((?:catalog|devhost|docs|infra|tests|bench|scripts)/[\w./-]*?)(?=[`)#:\s])")


def test_every_path_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        for path in PATH.findall(doc.read_text()):
            if "<" in path or "*" in path:
                continue
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert missing == []


def test_no_doc_cites_a_design_file_outside_the_repository():
    for doc in [*DOCS, ROOT / "azure.yaml"]:
        assert "DESIGN" not in doc.read_text(), doc.name


def test_the_license_is_mit():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
