"""The README's HTTP client quickstart is executed against the app served by `python -m catalog serve`."""
from catalog import CatalogHttpClient
from tests.integration.test_readme import code_blocks


def test_http_client_quickstart_runs(served, monkeypatch):
    monkeypatch.setenv("CATALOG_API", served.base)
    monkeypatch.delenv("CATALOG_API_KEY", raising=False)
    blocks = code_blocks("python", "## HTTP client quickstart")
    assert len(blocks) == 1 and "CatalogHttpClient" in blocks[0]
    exec(compile(blocks[0], "README.md", "exec"), {})
    with CatalogHttpClient(served.base) as client:  # what the example left behind, seen by another client
        assert client.count({"category": "garden"}) == 1000 and client.count({"sku": "A-1"}) == 1
