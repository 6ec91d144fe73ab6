"""The vendored FCM description is Google's, unchanged, and the checker reads it as intended."""

from __future__ import annotations

import json
from importlib import resources

from dispatcher.sandbox.discovery import DescriptionChecker, load_description, snake_case


def test_vendored_fcm_description_equals_the_one_in_google_api_python_client() -> None:
    installed = resources.files("googleapiclient").joinpath("discovery_cache", "documents", "fcm.v1.json")
    vendored = load_description()

    assert json.loads(installed.read_text("utf-8")) == vendored, (
        "google-api-python-client ships another fcm.v1.json: refresh dispatcher/sandbox/descriptions/ "
        "(see its README) and check what changed in Google's schema")


def test_checker_reads_types_refs_enums_and_formats() -> None:
    checker = DescriptionChecker(load_description())

    assert checker.problem("AndroidConfig", {"ttl": "10s", "priority": "high"}) is None
    assert checker.problem("AndroidConfig", {"notification": {"notification_count": "3"}}) is None
    assert checker.problem("AndroidConfig", {"notification": {"notificationCount": 2**31}}) is not None
    assert checker.problem("AndroidConfig", {"direct_boot_ok": "true"}) is not None
    assert checker.problem("Notification", {"title": ["x"]}) is not None
    problem = checker.problem("AndroidConfig", {"notification": {"colour": "#fff"}}, "message.android")
    assert problem is not None and problem.field == "message.android.notification.colour"


def test_snake_case_is_the_proto_name() -> None:
    assert snake_case("collapseKey") == "collapse_key"
    assert snake_case("validateOnly") == "validate_only"
    assert snake_case("ttl") == "ttl"
