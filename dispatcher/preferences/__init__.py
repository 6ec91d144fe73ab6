"""Residents as the engine knows them: the index (bulk import and incremental updates), their settings
honoured at the last moment, and the provider feedback (dead tokens, bounces) that keeps them clean.

Modules: ``importing`` (COPY bulk load, split by job), ``updates`` (ordered, idempotent changes), ``actors`` (the
"residents" queue), ``eligibility`` (the check before each batch), ``feedback`` (token retirement,
email suppression, stored webhook events), ``signature`` and ``webhook`` (SendGrid's event webhook).
"""
