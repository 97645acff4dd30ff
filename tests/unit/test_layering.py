"""The catalog core knows nothing of azure.functions, and only the adapter touches the storage SDKs."""
import ast
from pathlib import Path

CATALOG = Path(__file__).resolve().parents[2] / "catalog"
SDK_ADAPTERS = {"azure_store.py"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_catalog_never_imports_azure_functions():
    offenders = [p.name for p in CATALOG.rglob("*.py") if any(n.startswith("azure.functions") for n in imports(p))]
    assert offenders == []


def test_only_the_adapter_imports_the_storage_sdks():
    storage = ("azure.data.tables", "azure.storage", "azure.core", "azure.identity")
    offenders = sorted(p.name for p in CATALOG.rglob("*.py")
                       if p.name not in SDK_ADAPTERS and any(n.startswith(storage) for n in imports(p)))
    assert offenders == []
