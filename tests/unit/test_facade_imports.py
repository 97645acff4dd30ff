"""The package facade loads every public name lazily: the HTTP client works without the Azure SDK,
and every name the facade promises resolves to the object its module defines."""
import subprocess
import sys
import textwrap
from pathlib import Path

import catalog

ROOT = Path(__file__).resolve().parents[2]

BLOCK_AZURE = textwrap.dedent("""
    import sys

    class BlockAzure:
        '''As if no azure package were installed: any import of azure or azure.* fails.'''
        def find_spec(self, name, path=None, target=None):
            if name == "azure" or name.startswith("azure."):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, BlockAzure())
    for name in [n for n in sys.modules if n == "azure" or n.startswith("azure.")]:
        del sys.modules[name]
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_AZURE + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_http_client_imports_without_the_azure_sdk():
    run = run_python("""
        from catalog import CatalogHttpClient, Change, HttpUnavailableError, Operation, OperationFailed
        with CatalogHttpClient("http://127.0.0.1:9/api", retries=0) as client:
            assert client.base_url.endswith("/api")
        loaded = sorted(n for n in sys.modules if n.split(".")[0] == "azure")
        print("azure modules:", loaded, "library loaded:", "catalog.client" in sys.modules)
    """)
    assert run.returncode == 0, run.stderr
    assert "azure modules: [] library loaded: False" in run.stdout


def test_the_blocker_bites_the_library():
    """The same subprocess cannot load the library, which needs the SDK: the block is real."""
    run = run_python("""
        try:
            from catalog import TableCatalogClient
        except ImportError as e:
            print("refused:", e)
    """)
    assert run.returncode == 0, run.stderr
    assert "refused: blocked for this test: azure" in run.stdout


def test_every_public_name_resolves_to_its_module_object():
    from catalog import client, errors, remote, settings

    homes = {".client": client, ".errors": errors, ".settings": settings, ".remote": remote}
    assert sorted(catalog.__all__) == sorted(catalog._MODULE_OF)
    for name in catalog.__all__:
        assert getattr(catalog, name) is getattr(homes[catalog._MODULE_OF[name]], name), name
    assert set(catalog.__all__) <= set(dir(catalog))
    try:
        catalog.NoSuchName  # noqa: B018
    except AttributeError as e:
        assert "NoSuchName" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_no_module_of_the_package_shares_a_name_with_a_public_name():
    """Loading a submodule binds it as an attribute of its package: a module `catalog/query.py` would
    replace the library's `catalog.query` function once anything imported it."""
    modules = {p.stem for p in (ROOT / "catalog").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert modules & set(catalog.__all__) == set()
    run = subprocess.run([sys.executable, "-c", "import catalog.service, catalog\n"
                          "from catalog import query\n"
                          "from catalog.client import query as library_query\n"
                          "print(query is library_query, catalog.query is library_query)"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "True"]
