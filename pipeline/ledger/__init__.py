"""The ledger: what rtk-archive knows and did, per recording, per file and per target."""
