"""Twilio Programmable Messaging and Voice as the ``twilio`` library and Twilio's webhooks see them.

REST (HTTP Basic auth with the account SID and auth token, form-encoded bodies, JSON answers, errors as
``{"code", "message", "more_info", "status"}``, from Twilio's API reference and error dictionary):

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (``To``, ``From``, ``Body``): 201 with a
  Message resource. Refused as Twilio refuses: 20003 (401, credentials), 21604/21603 (``To``/``From``
  missing), 21211/21212 (not E.164), 21602 (no body), 21617 (body over 1,600 characters), 21610 (the
  recipient texted STOP to that ``From`` number), 20429 (429, over the account's quota).
* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (``To``, ``From``, ``Url`` or ``Twiml``): 201
  with a Call resource.

Phones: every message accepted is *delivered* to its recipient's phone (stream ``twilio_messages``),
unless that phone blocks the sender (:meth:`TwilioSandbox.block`): then it is recorded as blocked, as a
handset drops it. STOP texted to a number makes Twilio refuse further texts to that sender (21610).

Inbound (:meth:`TwilioSandbox.inbound`, ``POST /_sandbox/twilio/inbound``): a phone texts or calls one of
our numbers; the sandbox posts the signed webhook (``X-Twilio-Signature``: HMAC-SHA1 over the URL and the
sorted parameters, base64, keyed by the auth token, implemented here from Twilio's description and not
with the library under test), then acts on the TwiML answer: ``<Message>`` replies are delivered to the
sender, ``<Dial callerId><Number>`` rings that number showing the caller id (stream ``twilio_calls``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl

import httpx

from dispatcher.sandbox.faults import Faults
from dispatcher.sandbox.http import Response, json_response
from dispatcher.sandbox.quota import Quota
from dispatcher.sandbox.recorder import Recorder

API_PREFIX = "/2010-04-01/Accounts/"
MAX_BODY_CHARS = 1600
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
_START_WORDS = frozenset({"START", "UNSTOP", "YES"})
_FAULT_CODES = {429: 20429, 500: 20500, 503: 20503}


def twilio_error(status: int, code: int, message: str) -> Response:
    return json_response(status, {"code": code, "message": message,
                                  "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status})


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(token, url + each key and value, keys sorted))."""
    payload = url + "".join(key + params[key] for key in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class TwilioSandbox:
    """One account's messages, calls, phones and webhooks."""

    def __init__(self, account_sid: str, auth_token: str, faults: Faults, recorder: Recorder,
                 webhook_base: str | None = None) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.faults = faults
        self.recorder = recorder
        #: Where inbound webhooks go: ``<webhook_base>/relay/twilio/sms`` and ``.../voice``.
        self.webhook_base = webhook_base
        self._auth = b"Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode())
        self._quota = Quota()
        #: (phone, our number) pairs where the phone texted STOP.
        self.stopped: set[tuple[str, str]] = set()
        #: phone -> numbers it blocks.
        self.blocks: dict[str, set[str]] = {}

    # -- phones ------------------------------------------------------------------------------------
    def block(self, phone: str, number: str) -> None:
        """The person holding ``phone`` blocks ``number`` on the handset."""
        self.blocks.setdefault(phone, set()).add(number)

    def clear(self) -> None:
        self.stopped.clear()
        self.blocks.clear()

    def _deliver(self, to: str, from_: str, body: str, via: str, sid: str) -> None:
        blocked = from_ in self.blocks.get(to, ())
        self.recorder.record("twilio_messages", {"ts": time.time(), "sid": sid, "to": to, "from": from_,
                                                 "body": body, "via": via, "delivered": not blocked})

    # -- REST --------------------------------------------------------------------------------------
    async def rest(self, method: str, path: str, authorization: bytes | None, body: bytes) -> Response | None:
        """Answer a call under ``/2010-04-01/Accounts/``; None when the path is not one of ours."""
        rest = path[len(API_PREFIX):]
        account, _, resource = rest.partition("/")
        if method != "POST" or resource not in ("Messages.json", "Calls.json"):
            return None
        plan = self.faults.twilio
        delay = plan.latency_seconds() + plan.slow_headers_seconds()
        if delay:
            await asyncio.sleep(delay)
        if authorization != self._auth or account != self.account_sid:
            self.recorder.count("twilio.unauthorized")
            return twilio_error(401, 20003, "Authenticate")
        if plan.quota:
            wait = self._quota.take(plan.quota, plan.quota_window_seconds)
            if wait:
                self.recorder.count("twilio.rate_limited")
                return twilio_error(429, 20429, "Too Many Requests")
        status = plan.call_fault()
        if status is not None:
            self.recorder.count(f"twilio.fault_{status}")
            return twilio_error(status, _FAULT_CODES.get(status, 20500), "Service fault (sandbox)")
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return twilio_error(400, 20001, "Could not parse the request body")
        if resource == "Messages.json":
            return self._message(form, plan.resets())
        return self._call(form)

    def _numbers(self, form: dict[str, str]) -> tuple[str, str] | Response:
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not from_:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not _E164.fullmatch(to):
            return twilio_error(400, 21211, "The 'To' number is not a valid phone number.")
        if not _E164.fullmatch(from_):
            return twilio_error(400, 21212, "The 'From' number is not a valid phone number.")
        return to, from_

    def _message(self, form: dict[str, str], cut: bool) -> Response:
        numbers = self._numbers(form)
        if isinstance(numbers, Response):
            self.recorder.count("twilio.rejected")
            return numbers
        to, from_ = numbers
        body = form.get("Body", "")
        if not body and not form.get("MediaUrl"):
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if (to, from_) in self.stopped:
            self.recorder.count("twilio.unsubscribed")
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = _sid("SM")
        self.recorder.count("twilio.accepted")
        self._deliver(to, from_, body, "rest", sid)
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        resource = {"sid": sid, "account_sid": self.account_sid, "to": to, "from": from_, "body": body,
                    "status": "queued", "direction": "outbound-api", "num_segments": str(1 + len(body) // 160),
                    "date_created": now, "date_updated": now, "date_sent": None, "price": None,
                    "error_code": None, "error_message": None, "api_version": "2010-04-01",
                    "uri": f"{API_PREFIX}{self.account_sid}/Messages/{sid}.json"}
        response = json_response(201, resource)
        return response._replace(cut=cut)

    def _call(self, form: dict[str, str]) -> Response:
        numbers = self._numbers(form)
        if isinstance(numbers, Response):
            return numbers
        if not form.get("Url") and not form.get("Twiml"):
            return twilio_error(400, 21205, "Url or Twiml is required.")
        to, from_ = numbers
        sid = _sid("CA")
        self.recorder.record("twilio_calls", {"ts": time.time(), "sid": sid, "direction": "outbound-api",
                                              "to": to, "caller_id": from_,
                                              "connected": from_ not in self.blocks.get(to, ())})
        return json_response(201, {"sid": sid, "account_sid": self.account_sid, "to": to, "from": from_,
                                   "status": "queued", "direction": "outbound-api",
                                   "uri": f"{API_PREFIX}{self.account_sid}/Calls/{sid}.json"})

    # -- inbound -----------------------------------------------------------------------------------
    async def inbound(self, kind: str, from_: str, to: str, body: str = "", url: str | None = None,
                      signature: str | None = None, signed_url: str | None = None) -> dict[str, Any]:
        """A phone texts (``kind="sms"``) or calls (``"call"``) our number ``to``; post the signed webhook
        and act on its TwiML. ``signature`` overrides the computed one (to test a forged request);
        ``signed_url`` is the URL Twilio was configured with when a proxy forwards to ``url``."""
        if kind not in ("sms", "call"):
            raise ValueError("kind must be 'sms' or 'call'")
        target = url or f"{(self.webhook_base or '').rstrip('/')}/relay/twilio/{'sms' if kind == 'sms' else 'voice'}"
        params = {"AccountSid": self.account_sid, "From": from_, "To": to, "ApiVersion": "2010-04-01"}
        if kind == "sms":
            params |= {"MessageSid": _sid("SM"), "Body": body, "NumMedia": "0", "NumSegments": "1"}
            word = body.strip().upper()
            if word in _STOP_WORDS:
                self.stopped.add((from_, to))
            elif word in _START_WORDS:
                self.stopped.discard((from_, to))
        else:
            params |= {"CallSid": _sid("CA"), "CallStatus": "ringing", "Direction": "inbound"}
        headers = {"X-Twilio-Signature": signature or twilio_signature(self.auth_token, signed_url or target, params)}
        async with httpx.AsyncClient(timeout=30.0) as client:
            answer = await client.post(target, data=params, headers=headers)
        result: dict[str, Any] = {"status": answer.status_code, "twiml": answer.text, "replies": [], "dial": None}
        self.recorder.record("twilio_webhooks", {"ts": time.time(), "kind": kind, "url": target,
                                                 "status": answer.status_code})
        if answer.status_code == 200:
            self._act_on(kind, from_, to, answer.text, result)
        return result

    def _act_on(self, kind: str, from_: str, to: str, twiml: str, result: dict[str, Any]) -> None:
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError:
            result["error"] = "the webhook answer is not TwiML"
            return
        for element in root:
            if element.tag == "Message" and element.text:
                sid = _sid("SM")
                self._deliver(from_, to, element.text, "twiml", sid)
                result["replies"].append(element.text)
            elif element.tag == "Dial":
                caller_id = element.get("callerId") or from_
                dialed = [number.text or "" for number in element.iter("Number")]
                for number in dialed:
                    connected = caller_id not in self.blocks.get(number, ())
                    self.recorder.record("twilio_calls", {"ts": time.time(), "sid": _sid("CA"),
                                                          "direction": "inbound-bridged", "to": number,
                                                          "caller_id": caller_id, "connected": connected})
                result["dial"] = {"caller_id": caller_id, "numbers": dialed}
            elif element.tag == "Say":
                result["said"] = element.text


def parse_control(payload: dict[str, Any]) -> dict[str, Any]:
    """Validate ``POST /_sandbox/twilio/inbound`` and ``/block`` bodies: strings where strings belong."""
    for key in ("from", "to", "kind", "body", "url", "phone", "number"):
        if key in payload and payload[key] is not None and not isinstance(payload[key], str):
            raise ValueError(f"{key} must be a string")
    return payload
