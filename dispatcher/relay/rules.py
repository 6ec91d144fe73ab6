"""The relay's product rules in one place: durations, keywords and the automatic replies.

The replies never name a person, a number or a post: they go to whoever texted a proxy number.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

#: A conversation session stays active this long after it started.
SESSION_DAYS = 7
SESSION_LIFETIME = timedelta(days=SESSION_DAYS)
#: Contact Me turns itself off on a post this long after it was switched on.
CONTACT_DAYS = 30
CONTACT_LIFETIME = timedelta(days=CONTACT_DAYS)
#: Longest text relayed (ten SMS segments); longer bodies are cut, never split across sessions.
MAX_BODY_CHARS = 1600


class PostState(StrEnum):
    """A post's Contact Me state (``relay_posts.state``)."""

    PENDING = "pending"  # waiting for the author to confirm the number by text
    ON = "on"
    HIDDEN = "hidden"  # no one new; people already in touch may start again
    OFF = "off"  # removed, cancelled by the author, or switched off after 30 days
    CLOSED = "closed"  # resolved or deleted: every session was cancelled


#: States in which a post takes new contacts from someone (``HIDDEN``: only from people already in touch).
OPEN_STATES = (PostState.ON, PostState.HIDDEN)


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    CANCEL = "cancel"
    CONFIRM = "confirm"


#: The carriers' opt-out, opt-in and help words (CTIA; Twilio's defaults), and the product's CANCEL and YES.
KEYWORDS: dict[str, Keyword] = {
    **{word: Keyword.STOP for word in ("STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "REVOKE", "OPTOUT")},
    **{word: Keyword.START for word in ("START", "UNSTOP")},
    **{word: Keyword.HELP for word in ("HELP", "INFO")},
    "CANCEL": Keyword.CANCEL,
    "YES": Keyword.CONFIRM,
}


def keyword_of(body: str) -> Keyword | None:
    """The keyword a text consists of (one word, any case, surrounding spaces and punctuation ignored)."""
    word = body.strip().strip(".!").upper()
    return KEYWORDS.get(word)


CONFIRM_REQUEST = ("Community Requests: reply YES to use this number for Contact Me on your post. "
                   "Reply CANCEL to turn Contact Me off, HELP for help.")
CONFIRMED = "Community Requests: thank you, Contact Me is on. Reply CANCEL at any time to turn it off."
ENDED = ("Community Requests: this conversation has ended, so your message was not delivered. "
         "Thank you for helping.")
ENDED_CALL = "This conversation has ended. Thank you for helping. Goodbye."
HELP = ("Community Requests Contact Me: messages to this number are relayed anonymously. "
        "Reply STOP to stop messages from this number, CANCEL to turn Contact Me off on your posts.")
STOPPED = "Community Requests: you will get no more messages from this number. Reply START to undo."
STARTED = "Community Requests: messages from this number are on again."
CANCELLED = "Community Requests: Contact Me is now off on all your posts. No one new can contact you."
