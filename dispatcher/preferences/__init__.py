"""Residents as the engine knows them: the index (bulk import and incremental updates), their settings
honoured at the last moment, and the provider feedback (dead tokens, bounces) that keeps them clean.

Modules: ``importing/`` (the COPY bulk load, split by job), ``cli_import`` (its command line),
``validation`` (checks shared by import and updates), ``updates`` (ordered, idempotent changes),
``actors`` (the "residents" queue), ``eligibility`` (the check before each batch), ``feedback`` (token
retirement, email suppression, stored webhook events and their quarantine), ``sendgrid_events`` (which
SendGrid events suppress what), ``signature`` and ``webhook`` (SendGrid's event webhook), ``quiet_hours``
(whether a push waits for the resident's morning, and until when).
"""
