"""S3 and S3-compatible stores (aws, digitalocean, r2, b2, wasabi, minio), through boto3: the
providers as data (providers.py), their settings (settings.py), one adapter (adapter.py) and how
its failures are classified (errors.py)."""
