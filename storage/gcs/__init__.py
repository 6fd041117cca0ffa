"""`gcs`: Google Cloud Storage, through google-cloud-storage: its settings (settings.py), the
adapter (adapter.py) and how its failures are classified (errors.py)."""
