"""Archiving: plan (pure), download, store at every target, verify, record; and the checks
of what was archived. Imports nothing at package level: `pipeline.config` uses object_keys."""
