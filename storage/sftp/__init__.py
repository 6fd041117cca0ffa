"""`sftp`: a folder on an SSH server the customer runs: its settings (settings.py), the host key
(hostkeys.py), logging in (login.py), the connection pool (pool.py), small remote operations
(remote.py), the adapter (target.py) and how its failures are classified (errors.py)."""
