"""Operations tooling over a CatalogService: the CLI (`python -m catalog ...`), status and recover,
verify, reindex, import/export, and the progress bar they share. Nothing in the core imports it.
"""
