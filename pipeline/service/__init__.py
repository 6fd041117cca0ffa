"""`rtk-archive serve`: RealtimeKit webhooks in (signature checked, the announced work recorded
in the ledger before the answer), an in-process worker that archives it through the archive
engine, a periodic reconcile listing, and health, readiness and metrics endpoints.

Nothing heavy is imported here: the configuration reads `pipeline.service_settings`."""
