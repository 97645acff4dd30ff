"""The README's library quickstart is executed, so it cannot rot."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def code_blocks(language: str, after_heading: str) -> list[str]:
    text = README.read_text()
    section = text[text.index(after_heading):]
    section = section[:section.find("\n## ", 3)] if "\n## " in section[3:] else section
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_library_quickstart_runs(storage_connection, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", storage_connection)
    blocks = code_blocks("python", "## Library quickstart")
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {})
