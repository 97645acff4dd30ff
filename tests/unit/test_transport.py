"""The storage clients read proxy and CA settings from the environment once, with requests' meaning."""
from catalog.azure_store import environment_transport


def test_proxy_applies_unless_no_proxy_names_the_host(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t = environment_transport("https://acct.table.core.windows.net")
    assert t.session.proxies == {"https": "http://proxy.example:3128"} and t.session.trust_env is False
    monkeypatch.setenv("NO_PROXY", ".core.windows.net,localhost")
    assert environment_transport("https://acct.table.core.windows.net").session.proxies == {}


def test_ca_bundle_from_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/custom.pem")
    assert environment_transport("https://a.queue.core.windows.net").connection_config.verify == \
        "/etc/ssl/certs/custom.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert environment_transport("https://a.queue.core.windows.net").connection_config.verify is True


def test_pool_is_larger_than_the_hosts_concurrency():
    adapter = environment_transport("http://127.0.0.1:10002/devstoreaccount1").session.get_adapter("http://x")
    assert adapter._pool_maxsize >= 24
