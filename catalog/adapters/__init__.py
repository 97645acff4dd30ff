"""Storage adapters: one module per backend behind the ports of catalog/store.py.

`azure` (Azure Storage and Azurite, the only module that imports the Azure SDKs) and `memory` (fast
property tests; the contract suite in tests/contract keeps it honest). Adapters import only the
ports, the errors and the settings; catalog/bootstrap.py is the one place that picks one.
"""
