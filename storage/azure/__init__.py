"""`azure`: Azure Blob Storage, through azure-storage-blob: its settings (settings.py) and the
adapter (adapter.py)."""
