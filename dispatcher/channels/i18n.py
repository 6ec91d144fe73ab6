"""A resident's language: which catalogues translate their messages and how their dates are written.

A resident's locale tag (``fr-CA``, ``es_US``, ``EN-gb``, or garbage) resolves once to a
:class:`ContentLocale`: the translation catalogues to try, most specific first (``fr_CA`` then ``fr``,
then the English written in the templates), and the Babel locale that formats dates and times. A
language without a catalogue gets English words and English formats: dates in a language the rest of
the message is not in would be worse than none. The resolved name is what a batch is grouped by, so
``fr-CA`` and ``fr_ca`` share one rendering.

Catalogues are gettext ``.po`` files under ``locales/`` with their compiled ``.mo`` beside them (see
``scripts/catalogues.sh``; ``tests/test_locales.py`` checks that both agree and nothing is missing).
"""

from __future__ import annotations

import gettext
import logging
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_interval, format_time
from babel.messages.mofile import read_mo

#: Where the catalogues live: ``locales/<language>[_<REGION>]/LC_MESSAGES/messages.mo``.
LOCALES_DIR = Path(str(resources.files("dispatcher.channels") / "locales"))
#: The gettext domain of every catalogue.
DOMAIN = "messages"
#: The language the templates are written in, and where every fallback ends.
SOURCE_LANGUAGE = "en"
#: The locale for a tag that names no language we write (or names nothing at all).
DEFAULT_LOCALE = "en_US"
#: Longest tag looked at; anything longer is garbage (residents' tags are checked at 35 characters).
_MAX_TAG = 64
_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_QUOTED = re.compile(r"'[^']*'")

logger = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def catalogue_names(directory: Path = LOCALES_DIR) -> frozenset[str]:
    """The locales with a compiled catalogue in ``directory`` (``es``, ``fr``, ``fr_CA``...)."""
    if not directory.is_dir():
        return frozenset()
    return frozenset(path.parent.parent.name for path in directory.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))


@dataclass(frozen=True)
class ContentLocale:
    """What a resident's locale tag means for rendering; equal for every tag that renders alike."""

    #: Babel's name of the formatting locale (``fr_CA``): the grouping key.
    name: str
    #: Catalogues to try, most specific first (``("fr_CA", "fr")``); English from the templates after.
    catalogues: tuple[str, ...]
    #: Where those catalogues are (the package's own, but for tests of broken or partial ones).
    directory: Path = LOCALES_DIR

    @property
    def babel(self) -> Locale:
        return Locale.parse(self.name)


def _parse(tag: str) -> Locale | None:
    """The longest prefix of ``tag`` Babel knows (``fr-CA-u-ca-gregory`` → ``fr_CA``), or None."""
    parts = re.split(r"[-_]", tag)
    for end in range(len(parts), 0, -1):
        try:
            return Locale.parse("_".join(parts[:end]))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return None


def resolve_locale(tag: object, directory: Path = LOCALES_DIR) -> ContentLocale:
    """The rendering of a resident's locale tag, with fallbacks: ``fr-CA`` → ``fr`` → English.

    Never fails: an unknown, malformed or missing tag renders in :data:`DEFAULT_LOCALE`.
    """
    if not isinstance(tag, str) or len(tag) > _MAX_TAG or not _TAG.match(tag):
        return ContentLocale(DEFAULT_LOCALE, (), directory)
    return _resolve(tag, directory)


@lru_cache(maxsize=4096)
def _resolve(tag: str, directory: Path) -> ContentLocale:
    """:func:`resolve_locale` for a well-formed tag; cached, since millions of residents share a few tags."""
    locale = _parse(tag)
    available = catalogue_names(directory)
    if locale is None or (locale.language != SOURCE_LANGUAGE and locale.language not in available):
        return ContentLocale(DEFAULT_LOCALE, (), directory)
    name = str(locale)
    chain = [name] if name != locale.language else []
    if locale.territory and f"{locale.language}_{locale.territory}" not in chain:
        chain.append(f"{locale.language}_{locale.territory}")
    chain.append(locale.language)
    return ContentLocale(name, tuple(c for c in chain if c in available), directory)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _usable(msgid: str, msgstr: str) -> bool:
    """Whether a translation can stand in for its message: the same placeholders, it formats, no markup.

    Templates format every message (``%`` as in Python); a translation that names another placeholder
    or holds a lone ``%`` would fail the send, so it is left out and the message falls back. HTML
    templates take a translation as markup, so one with tags its message has not is left out too.
    """
    names = sorted(_PLACEHOLDER.findall(msgid))
    if sorted(_PLACEHOLDER.findall(msgstr)) != names:
        return False
    if ("<" in msgstr or ">" in msgstr) and not ("<" in msgid or ">" in msgid):
        return False
    try:
        msgstr % dict.fromkeys(names, "")
    except (KeyError, ValueError, TypeError):
        return False
    return True


class Catalogue(gettext.NullTranslations):
    """One compiled catalogue's usable translations, falling back to ``then`` for anything else."""

    def __init__(self, messages: dict[str, str], then: gettext.NullTranslations) -> None:
        super().__init__()
        self.messages = messages
        self.then = then

    def gettext(self, message: str) -> str:
        found = self.messages.get(message)
        return found if found is not None else self.then.gettext(message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return self.then.ngettext(msgid1, msgid2, n)  # no plural messages yet: the next layer decides


def _read_catalogue(path: Path) -> dict[str, str]:
    """The translated, usable messages of one ``.mo`` file (none if it cannot be read)."""
    try:
        with path.open("rb") as handle:
            catalog = read_mo(handle)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        logger.error("translation catalogue %s cannot be read; its messages fall back", path)
        return {}
    messages: dict[str, str] = {}
    for message in catalog:
        if isinstance(message.id, str) and message.id and isinstance(message.string, str) and message.string:
            if _usable(message.id, message.string):
                messages[message.id] = message.string
            else:
                logger.error("translation of %r in %s does not fit its message; it falls back", message.id, path)
    return messages


@lru_cache(maxsize=256)
def translations(catalogues: tuple[str, ...], directory: Path = LOCALES_DIR) -> gettext.NullTranslations:
    """The catalogues chained, each falling back to the next and the last to the English msgid.

    A message missing from (or untranslated in, or broken in) one catalogue comes from the next: a
    translator can ship a partial ``fr_CA`` that overrides a few words of ``fr``.
    """
    chain: gettext.NullTranslations = gettext.NullTranslations()
    for name in reversed(catalogues):
        chain = Catalogue(_read_catalogue(directory / name / "LC_MESSAGES" / f"{DOMAIN}.mo"), chain)
    return chain


def zone_info(name: str) -> ZoneInfo | timezone:
    """The IANA zone ``name``, or UTC for a name that is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _time_skeleton(locale: Locale) -> str:
    """``hm`` where the locale writes a 12-hour clock, ``Hm`` where it writes 24 hours."""
    pattern = _QUOTED.sub("", locale.time_formats["short"].pattern)
    return "hm" if "h" in pattern or "K" in pattern else "Hm"


def format_window(start: datetime, end: datetime, time_zone: str, locale: Locale | str = DEFAULT_LOCALE) -> str:
    """The footage window as the locale writes it, in the resident's time zone, with the zone's name.

    ``Mar 3, 2026, 9:00 PM – Mar 4, 2026, 2:00 AM (EST)`` in ``en_US``; one date when both ends fall on
    the same local day (``4 mars 2026, 03 h 00 – 08 h 00 (UTC+1)`` in ``fr_CA``).
    """
    loc = Locale.parse(locale) if isinstance(locale, str) else locale
    zone = zone_info(time_zone)
    a, b = start.astimezone(zone), end.astimezone(zone)
    joined = str(loc.datetime_formats["medium"])
    skeleton = _time_skeleton(loc)
    if a.date() == b.date():
        times = format_interval(a, b, skeleton, tzinfo=zone, locale=loc)
        text = joined.replace("{1}", format_date(a.date(), "medium", locale=loc)).replace("{0}", times)
    else:
        ends = [joined.replace("{1}", format_date(x.date(), "medium", locale=loc))
                .replace("{0}", format_time(x, "short", tzinfo=zone, locale=loc)) for x in (a, b)]
        fallback = str(loc.interval_formats.get(None, "{0} – {1}"))
        text = fallback.replace("{0}", ends[0]).replace("{1}", ends[1])
    return f"{text} ({zone_name(b, zone, loc)})"


def zone_name(moment: datetime, zone: ZoneInfo | timezone, locale: Locale) -> str:
    """The zone's abbreviation where the locale has one in use (``EST``, ``HNE``), else its long name
    (``Central European Standard Time``): a bare offset like ``+0100`` tells a resident little."""
    short = format_datetime(moment, "z", tzinfo=zone, locale=locale)
    if short[:1] in "+-" or short.startswith("GMT"):
        return format_datetime(moment, "zzzz", tzinfo=zone, locale=locale)
    return short
