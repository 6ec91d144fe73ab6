"""Responses (share, decline, opt out of all future requests), pseudonyms, and what an agency can read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dispatcher import fanout
from dispatcher.agencies import pseudonyms
from dispatcher.agencies.actors import resident_responded
from dispatcher.agencies.api import router
from dispatcher.agencies.responses import (
    agency_shares,
    opt_back_in,
    parse_response,
    record_response,
    resident_responses,
)
from dispatcher.config import Settings, set_settings
from dispatcher.db.types import Conn
from dispatcher.errors import ConfigurationError, InvalidResponse
from dispatcher.ledger import Channel
from dispatcher.pipeline import distribute
from tests.factories import add_resident, register_agency, request_payload

INSIDE = (40.015, -105.273)
KEY_A = "a" * 40
KEY_B = "b" * 40


def _keys(settings: Settings, value: str) -> Settings:
    configured = settings.with_(pseudonym_keys=value)
    set_settings(configured)
    return configured


@pytest.fixture
def keyed(settings: Settings) -> Any:
    """Settings with one configured pseudonym key; the session's settings restored after."""
    yield _keys(settings, f"k1:{KEY_A}")
    set_settings(settings)


def _town(db: Conn, request_ids: list[str], agency: str = "pd-1") -> None:
    for resident_id in range(1, 7):
        add_resident(db, resident_id, *INSIDE, email=f"r{resident_id}@example.test", tokens=[f"t-{resident_id}"],
                     has_camera=True)
    for request_id in request_ids:
        outcome = distribute(request_payload(request_id, agency={"id": agency, "name": "Springfield Police"}))
        assert outcome.state == "sending", outcome


def _answer(db: Conn, request_id: str, resident_id: int, response: str, **extra: Any) -> None:
    record_response(db, parse_response(request_id, resident_id, response, extra.get("contact_consent", False),
                                       extra.get("contact")))


def test_pseudonyms_are_stable_per_agency_unlinkable_across_agencies(keyed: Settings) -> None:
    key = pseudonyms.pseudonym_keys(keyed)[0]
    first = pseudonyms.pseudonym(key, "pd-1", 42)
    assert first == pseudonyms.pseudonym(key, "pd-1", 42)
    assert first.startswith("Neighbor #k1-") and len(first) == len("Neighbor #k1-") + pseudonyms.DIGITS
    assert first != pseudonyms.pseudonym(key, "so-9", 42)
    assert first != pseudonyms.pseudonym(key, "pd-1", 43)
    other_key = pseudonyms.PseudonymKey("k1", KEY_B.encode())
    assert first != pseudonyms.pseudonym(other_key, "pd-1", 42)  # the number depends on the secret


@pytest.mark.parametrize("value", ["k1", "K1:" + KEY_A, "k1:short", f"k1:{KEY_A},k1:{KEY_B}"])
def test_bad_pseudonym_keys_are_refused(settings: Settings, value: str) -> None:
    with pytest.raises(ConfigurationError, match="PSEUDONYM_KEYS"):
        pseudonyms.pseudonym_keys(settings.with_(pseudonym_keys=value))


def test_share_decline_and_what_the_agency_sees(db: Conn, keyed: Settings) -> None:
    _town(db, ["r-1", "r-2"])
    _answer(db, "r-1", 1, "share")
    _answer(db, "r-1", 2, "share", contact_consent=True, contact={"name": "Sam", "phone": "+1 555 0101"})
    _answer(db, "r-1", 3, "decline")
    _answer(db, "r-1", 4, "opt_out_all_future")
    _answer(db, "r-2", 1, "share")

    shares = agency_shares(db, "pd-1", "r-1")
    key = pseudonyms.pseudonym_keys(keyed)[0]
    expected = sorted([pseudonyms.pseudonym(key, "pd-1", 1), pseudonyms.pseudonym(key, "pd-1", 2)])
    assert [s["neighbor"] for s in shares] == expected
    by_neighbor = {s["neighbor"]: s for s in shares}
    assert set(by_neighbor[pseudonyms.pseudonym(key, "pd-1", 1)]) == {"neighbor", "shared_at"}
    assert by_neighbor[pseudonyms.pseudonym(key, "pd-1", 2)]["contact"] == {"name": "Sam", "phone": "+1 555 0101"}
    # The same neighbour is the same number across the agency's requests.
    assert agency_shares(db, "pd-1", "r-2")[0]["neighbor"] == pseudonyms.pseudonym(key, "pd-1", 1)
    # Another agency cannot read the request, and an unknown request reads the same.
    for agency, request in (("so-9", "r-1"), ("pd-1", "nope")):
        with pytest.raises(InvalidResponse, match="no such request of this agency"):
            agency_shares(db, agency, request)

    own = resident_responses(db, 3)
    assert [(a["request_id"], a["response"]) for a in own["responses"]] == [("r-1", "decline")]
    assert resident_responses(db, 4)["opted_out_all_future"] is True


def test_agency_output_is_the_same_however_many_declined_ignored_or_opted_out(db: Conn, keyed: Settings) -> None:
    """The agency-facing outputs depend on the shares only: declines, silence and opt-outs change nothing."""
    _town(db, ["quiet", "busy"])
    _answer(db, "quiet", 1, "share")
    _answer(db, "busy", 1, "share")
    for resident_id in (2, 3, 4):
        _answer(db, "busy", resident_id, "decline")
    _answer(db, "busy", 5, "opt_out_all_future")

    def scrub(shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k != "shared_at"} for s in shares]

    assert scrub(agency_shares(db, "pd-1", "quiet")) == scrub(agency_shares(db, "pd-1", "busy"))
    app = FastAPI()
    app.include_router(router)
    client = TestClient(app)
    body = client.get("/agencies/pd-1/requests/busy/shares").json()
    assert set(body) == {"request_id", "shares"} and len(body["shares"]) == 1
    text = json.dumps(body) + json.dumps(client.get("/agencies.geojson").json())
    for leaked in ("decline", "opt_out", "resident", "count", "r2@example.test", "t-2", "40.015"):
        assert leaked not in text


def test_opt_out_applies_at_once_to_pending_deliveries_of_other_requests(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    _town(db, ["o-1", "o-2"])
    _answer(db, "o-1", 2, "opt_out_all_future")
    for request_id in ("o-1", "o-2"):
        for channel in Channel:
            fanout.drain(request_id, channel, budget_seconds=10)
    sandbox.flush()
    tokens = sorted(r["token"] for r in sandbox.records("fcm"))
    assert tokens == sorted([f"t-{i}" for i in (1, 3, 4, 5, 6)] * 2)
    assert "r2@example.test" not in {r["email"] for r in sandbox.records("sendgrid")}
    reasons = db.execute("SELECT DISTINCT status, reason FROM deliveries WHERE resident_id = 2").fetchall()
    assert reasons == [("skipped", "opted_out_all_future")]
    # Opting back in: the next request reaches them again; the opt-out also keeps the ledger from being written.
    distribute(request_payload("o-3"))
    assert db.execute("SELECT count(*) FROM deliveries WHERE request_id = 'o-3' AND resident_id = 2").fetchone() == (0,)
    assert opt_back_in(db, 2)
    distribute(request_payload("o-4"))
    assert db.execute("SELECT count(*) FROM deliveries WHERE request_id = 'o-4' AND resident_id = 2").fetchone() == (2,)


def test_rotation_keeps_known_neighbours_and_retiring_a_key_renumbers(db: Conn, settings: Settings) -> None:
    try:
        _keys(settings, f"k1:{KEY_A}")
        _town(db, ["k-1", "k-2", "k-3"])
        _answer(db, "k-1", 1, "share")
        before = agency_shares(db, "pd-1", "k-1")[0]["neighbor"]
        rotated = _keys(settings, f"k2:{KEY_B},k1:{KEY_A}")
        _answer(db, "k-2", 1, "share")
        _answer(db, "k-2", 2, "share")
        shares = {s["neighbor"] for s in agency_shares(db, "pd-1", "k-2")}
        new_key = pseudonyms.pseudonym_keys(rotated)[0]
        assert shares == {before, pseudonyms.pseudonym(new_key, "pd-1", 2)}
        _keys(settings, f"k2:{KEY_B}")  # k1 retired
        assert agency_shares(db, "pd-1", "k-1")[0]["neighbor"] == pseudonyms.pseudonym(new_key, "pd-1", 1)
    finally:
        set_settings(settings)


@pytest.mark.parametrize(("args", "problem"), [
    (("r-1", 1, "maybe"), "response: must be one of"),
    (("r-1", 0, "share"), "resident_id"),
    (("r-1", True, "share"), "resident_id"),
    (("bad id!", 1, "share"), "request_id"),
    (("r-1", 1, "share", "yes"), "contact_consent"),
    (("r-1", 1, "share", False, {"name": "Sam"}), "contact: sent only with a share and contact_consent"),
    (("r-1", 1, "decline", True, {"name": "Sam"}), "contact: sent only with a share"),
    (("r-1", 1, "share", True, {"address": "1 Main St"}), "only name, email and phone"),
    (("r-1", 1, "share", True, {"email": "not-an-email"}), "contact.email"),
])
def test_malformed_responses_are_named(args: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(InvalidResponse, match=problem):
        parse_response(*args)


def test_responses_to_what_cannot_take_them(db: Conn, keyed: Settings) -> None:
    _town(db, ["c-1"])
    with pytest.raises(InvalidResponse, match="no such request"):
        _answer(db, "missing", 1, "share")
    with pytest.raises(InvalidResponse, match="no such resident"):
        _answer(db, "c-1", 99, "share")
    db.execute("UPDATE community_requests SET respond_until = now() - interval '1 second' WHERE id = 'c-1'")
    with pytest.raises(InvalidResponse, match="response window"):
        _answer(db, "c-1", 1, "share")


def test_router_and_actor_record_responses(db: Conn, keyed: Settings) -> None:
    _town(db, ["a-1"])
    app = FastAPI()
    app.include_router(router)
    client = TestClient(app)
    assert client.post("/responses", json={"request_id": "a-1", "resident_id": 1, "response": "decline"}
                       ).status_code == 202
    refused = client.post("/responses", json={"request_id": "a-1", "resident_id": 1, "response": "maybe"})
    assert refused.status_code == 422 and "response" in refused.json()["detail"]
    assert client.post("/responses", json={"request_id": "zz", "resident_id": 1, "response": "share"}
                       ).status_code == 404
    resident_responded.fn("a-1", 1, "share")  # the actor's body, as a worker runs it: the latest answer wins
    assert client.get("/residents/1/responses").json()["responses"][0]["response"] == "share"
    resident_responded.fn("a-1", 1, "nonsense")  # dropped, logged by ids, nothing raised
    assert resident_responses(db, 1)["responses"][0]["response"] == "share"


def test_another_agency_numbers_the_same_resident_differently(db: Conn, keyed: Settings) -> None:
    register_agency(db, "so-9", name="County Sheriff", kind="sheriff")
    try:
        _town(db, ["p-1"])
        distribute(request_payload("s-1", agency={"id": "so-9", "name": "County Sheriff"}))
        _answer(db, "p-1", 1, "share")
        _answer(db, "s-1", 1, "share")
        assert agency_shares(db, "pd-1", "p-1")[0]["neighbor"] != agency_shares(db, "so-9", "s-1")[0]["neighbor"]
    finally:
        db.execute("DELETE FROM agencies WHERE id = 'so-9'")
