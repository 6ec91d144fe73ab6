"""What SendGrid v3 ``POST /v3/mail/send`` refuses, each rule with its source: one module for the sandbox and the tests.

Sources, named per rule below:

* [OAS] SendGrid's published v3 OpenAPI description of Mail Send (twilio.com/docs/sendgrid/api-reference/
  mail-send/mail-send, the ``mail_send`` request body schema: ``maxItems``, ``maxLength``, ``uniqueItems``,
  ``type``, property descriptions).
* [ERR] "Mail Send errors" (twilio.com/docs/sendgrid/api-reference/mail-send/errors): the messages and
  fields of the 400 answers.

:func:`mail_problem` answers the first problem as ``(message, field)``, the parts of SendGrid's error
body ``{"errors": [{"message", "field", "help"}]}``.
"""

from __future__ import annotations

from typing import Any

from dispatcher.config import SENDGRID_MAX_PERSONALIZATIONS

#: [OAS] ``personalizations`` maxItems 1000; [ERR] "limited to 1000 personalizations per API request".
MAX_PERSONALIZATIONS = SENDGRID_MAX_PERSONALIZATIONS
#: [ERR] "There is a limit of 1000 total recipients (to + cc + bcc) per request."
MAX_RECIPIENTS = 1000
#: [OAS] ``custom_args``: "must not exceed 10,000 bytes" (message and personalization arguments together);
#: counted as the UTF-8 bytes of every key and value.
MAX_CUSTOM_ARGS_BYTES = 10_000
#: [OAS] ``categories``: maxItems 10, uniqueItems, each item maxLength 255.
MAX_CATEGORIES = 10
MAX_CATEGORY_CHARS = 255
#: [OAS] ``headers`` (mail and personalization): "You may not overwrite the following headers: x-sg-id,
#: x-sg-eid, received, dkim-signature, Content-Type, Content-Transfer-Encoding, To, From, Subject,
#: Reply-To, CC, BCC". Header names are case-insensitive (RFC 5322), so the sandbox compares lower-cased.
RESERVED_HEADERS = frozenset({"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                              "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"})
#: [OAS] ``ip_pool_name``: minLength 2, maxLength 64.
IP_POOL_NAME_CHARS = (2, 64)
#: [OAS] ``asm.groups_to_display``: maxItems 25.
MAX_ASM_GROUPS_TO_DISPLAY = 25
#: The recipient lists of a personalization, in the order SendGrid numbers recipients.
RECIPIENT_KINDS = ("to", "cc", "bcc")

Problem = tuple[str, str | None]


def _has_email(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("email"), str) and "@" in value["email"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_map_problem(value: Any, field: str, what: str) -> Problem | None:
    """[OAS] ``headers`` and ``custom_args`` are objects of strings; [ERR] "... must be a string"."""
    if not isinstance(value, dict):
        return f"The {what} must be an object of string keys and string values.", field
    for key, item in value.items():
        if not isinstance(item, str):
            return f"The {what} values must be strings; {key!r} is not.", f"{field}.{key}"
    return None


def _headers_problem(headers: Any, field: str) -> Problem | None:
    found = _string_map_problem(headers, field, "headers")
    if found is not None:
        return found
    for name in headers:
        if name.lower() in RESERVED_HEADERS:
            return (f"The {name!r} header is reserved and may not be set through headers. Reserved: "
                    "x-sg-id, x-sg-eid, received, dkim-signature, Content-Type, Content-Transfer-Encoding, "
                    "To, From, Subject, Reply-To, CC, BCC.", f"{field}.{name}")
    return None


def _custom_args_bytes(args: dict[str, Any]) -> int:
    return sum(len(key.encode()) + len(str(value).encode()) for key, value in args.items())


def _categories_problem(categories: Any) -> Problem | None:
    if not isinstance(categories, list):
        return "The categories parameter must be an array of strings.", "categories"
    if len(categories) > MAX_CATEGORIES:
        return f"You may not have more than {MAX_CATEGORIES} categories per request.", "categories"
    seen: set[str] = set()
    for index, category in enumerate(categories):
        if not isinstance(category, str):
            return "A category must be a string.", f"categories.{index}"
        if len(category) > MAX_CATEGORY_CHARS:
            return f"A category cannot be more than {MAX_CATEGORY_CHARS} characters.", f"categories.{index}"
        if category in seen:
            return "The categories must be unique.", f"categories.{index}"
        seen.add(category)
    return None


def _envelope_problem(mail: dict[str, Any]) -> Problem | None:
    """Rules on the mail's own fields (not the personalizations)."""
    if "categories" in mail:
        found = _categories_problem(mail["categories"])
        if found is not None:
            return found
    if "asm" in mail:
        asm = mail["asm"]
        if not isinstance(asm, dict) or not _is_int(asm.get("group_id")):
            return "The asm group_id is required and must be an integer.", "asm.group_id"
        groups = asm.get("groups_to_display", [])
        if not isinstance(groups, list) or len(groups) > MAX_ASM_GROUPS_TO_DISPLAY \
                or not all(_is_int(group) for group in groups):
            return (f"The asm groups_to_display must be an array of at most {MAX_ASM_GROUPS_TO_DISPLAY} "
                    "integers.", "asm.groups_to_display")
    if "headers" in mail:
        found = _headers_problem(mail["headers"], "headers")
        if found is not None:
            return found
    if "custom_args" in mail:
        found = _string_map_problem(mail["custom_args"], "custom_args", "custom_args")
        if found is not None:
            return found
    if "reply_to" in mail and "reply_to_list" in mail:
        # [ERR] reply_to_list: "The reply_to and reply_to_list parameters cannot be used together."
        return "The reply_to and reply_to_list parameters cannot be used together.", "reply_to_list"
    if "reply_to" in mail and not _has_email(mail["reply_to"]):
        return "The reply_to email does not contain a valid address.", "reply_to.email"
    if "send_at" in mail and not _is_int(mail["send_at"]):
        # [OAS] ``send_at``: integer (a UNIX timestamp).
        return "The send_at parameter must be an integer (a UNIX timestamp).", "send_at"
    if "ip_pool_name" in mail:
        pool = mail["ip_pool_name"]
        low, high = IP_POOL_NAME_CHARS
        if not isinstance(pool, str) or not low <= len(pool) <= high:
            return f"The ip_pool_name must be a string of {low} to {high} characters.", "ip_pool_name"
    return None


def _content_problem(mail: dict[str, Any], has_template: bool) -> Problem | None:
    content = mail.get("content")
    if content is None and has_template:
        return None
    if not isinstance(content, list) or not content:
        # [ERR] content: "Unless a valid template_id is provided, the content parameter is required."
        return ("Unless a valid template_id is provided, the content parameter is required. There must "
                "be at least one defined content block.", "content")
    for index, block in enumerate(content):
        # [OAS] ``content[].value`` minLength 1; [ERR] "The content value must be a string at least one
        # character in length."
        value = block.get("value") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not block.get("type") or not isinstance(value, str) or not value:
            return ("The content value must be a string at least one character in length.",
                    f"content.{index}.value")
    return None


def is_sandbox_mode(mail: dict[str, Any]) -> bool:
    """[OAS] ``mail_settings.sandbox_mode.enable``: validate the mail, send nothing (answered 200)."""
    settings = mail.get("mail_settings")
    sandbox = settings.get("sandbox_mode") if isinstance(settings, dict) else None
    return isinstance(sandbox, dict) and sandbox.get("enable") is True


def mail_problem(mail: Any) -> Problem | None:
    """The first thing SendGrid would refuse about a mail send body (message, field), or None."""
    if not isinstance(mail, dict):
        return "Bad Request", None
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return ("The personalizations field is required and must have at least one personalization.",
                "personalizations")
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return ("You may not have more than 1000 personalizations per API request.", "personalizations")
    if not _has_email(mail.get("from")):
        return ("The from object must be provided for every email send. It is an object that requires the "
                "email parameter, but may also contain a name parameter.", "from.email")
    found = _envelope_problem(mail)
    if found is not None:
        return found
    base_args = mail.get("custom_args") or {}
    base_args_bytes = _custom_args_bytes(base_args)
    recipients = 0
    every_has_subject = True
    # The hot loop of every accepted call (a thousand personalizations): checks spelled inline.
    for index, personalization in enumerate(personalizations):
        if not isinstance(personalization, dict):
            return "Bad Request", f"personalizations.{index}"
        to = personalization.get("to")
        if not isinstance(to, list) or not to:
            return ("The to array is required for all personalization objects, and must have at least one "
                    "email object with a valid email address.", f"personalizations.{index}.to")
        for kind in RECIPIENT_KINDS:
            addresses = to if kind == "to" else personalization.get(kind)
            if not addresses:
                continue
            if not isinstance(addresses, list):
                return ("Does not contain a valid address.", f"personalizations.{index}.{kind}")
            for address in addresses:
                email = address.get("email") if isinstance(address, dict) else None
                if not isinstance(email, str) or "@" not in email:
                    return ("Does not contain a valid address.", f"personalizations.{index}.{kind}")
            recipients += len(addresses)
        headers = personalization.get("headers")
        if headers is not None:
            found = _headers_problem(headers, f"personalizations.{index}.headers")
            if found is not None:
                return found
        args = personalization.get("custom_args")
        if args is not None:
            field = f"personalizations.{index}.custom_args"
            found = _string_map_problem(args, field, "custom_args")
            if found is not None:
                return found
            if base_args_bytes + _custom_args_bytes(args) > MAX_CUSTOM_ARGS_BYTES:
                return f"The custom_args may not exceed {MAX_CUSTOM_ARGS_BYTES} bytes.", field
        elif base_args_bytes > MAX_CUSTOM_ARGS_BYTES:
            return f"The custom_args may not exceed {MAX_CUSTOM_ARGS_BYTES} bytes.", "custom_args"
        if "send_at" in personalization and not _is_int(personalization["send_at"]):
            return ("The send_at parameter must be an integer (a UNIX timestamp).",
                    f"personalizations.{index}.send_at")
        if every_has_subject and not personalization.get("subject"):
            every_has_subject = False
    if recipients > MAX_RECIPIENTS:
        return ("The total number of recipients must be less than 1000. This includes all recipients defined "
                "within the to, cc, and bcc parameters, across each object that you include in the "
                "personalizations array.", "personalizations")
    has_template = bool(mail.get("template_id"))
    if not has_template and not mail.get("subject") and not every_has_subject:
        return ("The subject is required. You can get around this requirement if you use a template with a "
                "subject defined or if every personalization has a subject defined.", "subject")
    return _content_problem(mail, has_template)
