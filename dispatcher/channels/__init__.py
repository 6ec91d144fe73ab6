"""Notification channels: FCM push and SendGrid email, reached over HTTP through their client libraries."""
