"""Local hosting for the function app where Azure Functions Core Tools are not installed.

This package is the only place besides function_app.py that knows azure.functions; the
catalog core never imports it.
"""
