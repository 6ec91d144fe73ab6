"""Moderation assist: flag what a request's text does that the posting guidelines forbid.

It advises a human moderator: it never publishes, blocks or edits. Each :class:`Flag` names the rule,
the guideline it breaks, the field and the offending span (character offsets), so the moderator sees
exactly what to look at. Rules, each a small function over the text:

- ``non_specific_incident``: the incident type, or the text, says only "suspicious activity" (or
  another type that names no crime);
- ``street_address``: a specific street address (house number, street and suffix, confirmed by
  ``usaddress``); a block ("1200 block of Pine St") or an intersection is fine;
- ``personal_name``: a person's name (an honorific and a surname, or a known first name and a surname,
  confirmed by ``probablepeople``), not the investigator's or an officer's;
- ``phone_number``: a phone number (``phonenumbers``) other than the investigator's;
- ``vague_suspect``: a suspect described only by race, height, age and sex, without two distinctive
  features (clothing, vehicle, marks).

Names and addresses are allowed when there is an ongoing threat to physical safety (a missing person,
``URGENT_INCIDENT_TYPES``), as the guidelines allow. Everything runs locally from the libraries' bundled
models: nothing is downloaded at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import phonenumbers
import probablepeople
import usaddress

from dispatcher.config import URGENT_INCIDENT_TYPES

#: The guideline each rule enforces, in the words shown to the moderator.
GUIDELINES = {
    "non_specific_incident": "Name a specific incident type (a crime or a safety threat), not "
                             "\"suspicious activity\".",
    "street_address": "No specific addresses unless there is an ongoing threat to physical safety or the "
                      "information is public; use the block or an intersection.",
    "personal_name": "No victims' or other people's names unless there is an ongoing threat to physical "
                     "safety (a missing person) or the information is public.",
    "phone_number": "The only phone number in a request is the investigator's.",
    "vague_suspect": "A suspect description must identify one person: race, height, age and sex are too "
                     "general and need two distinctive features (clothing, vehicle, other unique marks).",
}
RULES = tuple(GUIDELINES)


@dataclass(frozen=True)
class Flag:
    """One problem: which rule, where (field and character offsets), the text there, and the guideline."""

    rule: str
    field: str
    start: int
    end: int
    text: str
    guideline: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag(rule: str, field: str, text: str, start: int, end: int) -> Flag:
    return Flag(rule, field, start, end, text[start:end], GUIDELINES[rule])


# -- non-specific incident types --------------------------------------------------------------------
_VAGUE_TYPES = frozenset({
    "suspicious_activity", "suspicious_person", "suspicious_persons", "suspicious_vehicle",
    "suspicious_circumstances", "suspicious", "other", "general", "unknown", "misc", "miscellaneous",
    "incident", "investigation", "activity", "crime", "police_activity", "disturbance", "information",
})
_VAGUE_PHRASE = re.compile(r"\bsuspicious (?:activity|activities|behaviou?r|circumstances|incident)\b", re.I)


def _incident(incident_type: str, details: str) -> Iterator[Flag]:
    if incident_type in _VAGUE_TYPES:
        yield _flag("non_specific_incident", "incident_type", incident_type, 0, len(incident_type))
    for match in _VAGUE_PHRASE.finditer(details):
        yield _flag("non_specific_incident", "details", details, match.start(), match.end())


# -- street addresses --------------------------------------------------------------------------------
_SUFFIXES = frozenset({
    "st", "street", "ave", "av", "avenue", "rd", "road", "blvd", "boulevard", "dr", "drive", "ln", "lane",
    "ct", "court", "way", "pl", "place", "ter", "terrace", "pkwy", "parkway", "cir", "circle", "hwy",
    "highway", "trl", "trail", "sq", "square", "loop", "row", "aly", "alley", "pike", "run", "crescent",
})
_HOUSE_NUMBER = re.compile(r"(?<![\w.-])\d{1,6}[A-Za-z]?(?=\s)(?!\s*(?:block|blk|hundred|am|pm|a\.m|p\.m|years|yrs|mph|"
                           r"minutes|hours|feet|ft|lbs|cars|vehicles|people|times|%))", re.I)
_WORD = re.compile(r"\S+")


def _addresses(details: str) -> Iterator[Flag]:
    taken_until = -1
    for number in _HOUSE_NUMBER.finditer(details):
        if number.start() < taken_until:
            continue
        window = list(_WORD.finditer(details, number.start()))[:7]
        if len(window) < 3:
            continue
        end = _address_end(details, window)
        if end is not None:
            taken_until = end
            yield _flag("street_address", "details", details, number.start(), end)


def _address_end(details: str, window: list[re.Match[str]]) -> int | None:
    """Where the street address starting at ``window[0]`` ends, or ``None`` if it is not one."""
    for last in range(2, len(window)):
        suffix = window[last].group().strip(".,;:!?)").lower()
        if suffix not in _SUFFIXES:
            continue
        candidate = details[window[0].start():window[last].end()].rstrip(".,;:!?)")
        try:
            tagged, kind = usaddress.tag(candidate)
        except usaddress.RepeatedLabelError:
            return None
        if (kind == "Street Address" and tagged.get("AddressNumber") == window[0].group()
                and "StreetName" in tagged):
            return window[0].start() + len(candidate)
        return None
    return None


# -- personal names ----------------------------------------------------------------------------------
#: Common given names (US census): the small rule set that tells "Maria Lopez" from "Main Street".
_FIRST_NAMES_TEXT = """
james john robert michael william david richard joseph thomas charles christopher daniel matthew anthony mark
donald steven paul andrew joshua kenneth kevin brian george timothy ronald edward jason jeffrey ryan jacob gary
nicholas eric jonathan stephen larry justin scott brandon benjamin samuel gregory alexander frank patrick
raymond jack dennis jerry tyler aaron jose adam nathan henry douglas zachary peter kyle noah ethan jeremy
walter christian keith roger terry austin sean gerald carl harold dylan arthur lawrence jordan jesse bryan
billy bruce gabriel joe logan alan juan albert willie elijah wayne randy vincent mason roy ralph bobby russell
bradley philip eugene carlos luis miguel diego jorge omar ahmed mohammed ali wei chen hiroshi raj
mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty sandra margaret ashley
kimberly emily donna michelle carol amanda melissa deborah stephanie dorothy rebecca sharon laura cynthia amy
kathleen angela shirley brenda emma anna pamela nicole samantha katherine christine helen debra rachel carolyn
janet maria catherine heather diane olivia julie joyce victoria ruth virginia lauren kelly christina joan
evelyn judith andrea hannah megan cheryl jacqueline martha madison teresa gloria sara janice ann kathryn abigail
sophia frances jean alice judy isabella julia grace amber denise danielle marilyn beverly charlotte natalie
theresa diana brittany doris kayla alexis lori marie rosa ana sofia lucia carmen elena priya aisha fatima
mei yuki
"""
FIRST_NAMES = frozenset(_FIRST_NAMES_TEXT.split())
_HONORIFIC = r"(?:Mr|Mrs|Ms|Miss|Mx)\.?"
_STAFF_TITLE = re.compile(r"(?:Det|Detective|Officer|Ofc|Sgt|Sergeant|Lt|Lieutenant|Deputy|Chief|Capt|Captain|"
                          r"Cpl|Corporal|Trooper|Agent|Inspector)\.?\s+$")
_CAP = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_NAME = re.compile(rf"\b(?:{_HONORIFIC}\s+{_CAP}(?:\s+{_CAP})?|{_CAP}(?:\s+[A-Z]\.)?\s+{_CAP})")


def _name_candidates(details: str) -> Iterator[re.Match[str]]:
    """Capitalised runs that may be names; a run whose first word is no given name ("Victim Nancy Baker")
    is tried again from its second word."""
    position = 0
    while (match := _NAME.search(details, position)) is not None:
        yield match
        first = match.group().split()[0].strip(".").lower()
        if first in FIRST_NAMES or re.match(_HONORIFIC, match.group()):
            position = match.end()
        else:
            position = match.start() + len(match.group().split()[0])


def _names(details: str, investigator_name: str | None) -> Iterator[Flag]:
    allowed = {part.lower() for part in re.findall(r"[A-Za-z]+", investigator_name or "") if len(part) > 1}
    for match in _name_candidates(details):
        text = match.group()
        if _STAFF_TITLE.search(details[max(0, match.start() - 16):match.start()]):
            continue
        words = [w.strip(".").lower() for w in text.split()]
        if allowed and set(words) & allowed and not re.match(_HONORIFIC, text):
            continue
        if re.match(_HONORIFIC, text):
            yield _flag("personal_name", "details", details, match.start(), match.end())
            continue
        if words[0] not in FIRST_NAMES:
            continue
        try:
            tagged, kind = probablepeople.tag(text)
        except probablepeople.RepeatedLabelError:
            continue
        if kind == "Person" and "Surname" in tagged:
            yield _flag("personal_name", "details", details, match.start(), match.end())


# -- phone numbers -----------------------------------------------------------------------------------
def _phones(details: str, investigator_phone: str | None, region: str) -> Iterator[Flag]:
    own = _normalised(investigator_phone, region)
    matcher = phonenumbers.PhoneNumberMatcher(details, region, leniency=phonenumbers.Leniency.POSSIBLE)
    for match in matcher:
        if own is not None and phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164) == own:
            continue
        yield _flag("phone_number", "details", details, match.start, match.end)


def _normalised(phone: str | None, region: str) -> str | None:
    if not phone:
        return None
    try:
        return phonenumbers.format_number(phonenumbers.parse(phone, region), phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        return None


# -- vague suspect descriptions ----------------------------------------------------------------------
_GENERIC = re.compile(
    r"\b(?:white|black|hispanic|latino|latina|asian|caucasian|african[- ]american|native american|"
    r"middle[- ]eastern|male|female|man|woman|men|women|boy|girl|teen(?:ager)?s?|juveniles?|"
    r"(?:late |early |mid[- ]?)?(?:teens|twenties|thirties|forties|fifties|\d0s)|"
    r"\d{1,2}\s*(?:-|to)\s*\d{1,2}\s*years?\s*old|\d{1,2}\s*years?\s*old|age[ds]?\s+\d{1,2}|"
    r"\d\s*'\s*\d{1,2}\s*\"?|\d\s*(?:ft|feet|foot)(?:\s*\d{1,2}(?:\s*(?:in|inches))?)?|tall|short|"
    r"medium build|heavy[- ]set|thin|slim|skinny|stocky)\b", re.I)
_SUSPECT = re.compile(r"\b(?:suspects?|subjects?|male|female|man|woman|men|women|person|individual|"
                      r"teen(?:ager)?s?|juveniles?|boy|girl)\b", re.I)
_DISTINCTIVE = re.compile(
    r"\b(?:wearing|wore|dressed|jacket|coat|hoodie|hooded|sweatshirt|shirt|t-shirt|jersey|vest|pants|jeans|"
    r"shorts|skirt|dress|hat|cap|beanie|helmet|mask|gloves|shoes|sneakers|boots|backpack|bag|duffel|"
    r"glasses|sunglasses|tattoos?|scars?|birthmark|piercings?|limp|beard|mustache|goatee|dreadlocks|braids|"
    r"ponytail|mohawk|bald|car|truck|van|sedan|suv|pickup|vehicle|motorcycle|scooter|bicycle|bike|plates?|"
    r"license|toyota|honda|ford|chevy|chevrolet|nissan|bmw|tesla|jeep|dodge|hyundai|kia|subaru|"
    r"logo|stripes?|striped|cast|crutches|wheelchair|carrying|holding)\b", re.I)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def _suspects(details: str) -> Iterator[Flag]:
    if len(_DISTINCTIVE.findall(details)) >= 2:
        return
    for sentence in _SENTENCE.finditer(details):
        text = sentence.group()
        generic = _GENERIC.findall(text)
        if generic and _SUSPECT.search(text) and len(generic) >= 2:
            start = sentence.start() + (len(text) - len(text.lstrip()))
            end = sentence.start() + len(text.rstrip())
            yield _flag("vague_suspect", "details", details, start, end)


# -- the whole check -----------------------------------------------------------------------------------
def moderate_text(details: str, *, incident_type: str = "", investigator_name: str | None = None,
                  investigator_phone: str | None = None, region: str = "US") -> list[Flag]:
    """Every flag for one request's text, in order of rule then position."""
    flags = list(_incident(incident_type, details))
    if incident_type not in URGENT_INCIDENT_TYPES:
        flags += _addresses(details)
        flags += _names(details, investigator_name)
    flags += _phones(details, investigator_phone, region)
    flags += _suspects(details)
    return flags


def moderate_request(request: Mapping[str, Any]) -> list[Flag]:
    """Flags for a request as the pipeline holds it (a JSON object; fields it lacks are not checked)."""
    found = request.get("investigator")
    investigator: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    details = request.get("details")
    incident_type = request.get("incident_type")
    return moderate_text(
        details if isinstance(details, str) else "",
        incident_type=incident_type if isinstance(incident_type, str) else "",
        investigator_name=investigator.get("name") if isinstance(investigator.get("name"), str) else None,
        investigator_phone=investigator.get("phone") if isinstance(investigator.get("phone"), str) else None,
    )
