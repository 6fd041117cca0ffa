"""Evidence that stands on its own, beside the ledger and the hash-chained audit log: Ed25519
signatures of the manifests (signing), RFC 3161 trusted timestamps of the audit log's head
(timestamps), BagIt bags for hand-off (bagit_export) and the auditor's HTML report (html_report)."""
