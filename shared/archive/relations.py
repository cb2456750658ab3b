"""Which record a session's nested reference means when a hand-made archive contradicts itself.

A session names each related record twice: by id, and by the snapshot's name (``{"id": 134, "name": "A"}``); speakers
and tracks also list their sessions (``sessions: [{"id", "title"}]``). In the hand-made variants the three disagree
now and then: the id is a neighbour's, while the name and the back reference agree on another record. The rule:

- The given id is kept when its record does not contradict the reference: its name matches, or it lists the session,
  or there is nothing to compare (no name given, a file without back references). A stale name alone is not evidence:
  names get edited (``"Hong Phuc DANG"`` for ``"Hong Phuc Dang"``, ``"Saal "`` for a longer room name).
- It is replaced when the evidence is conclusive: the given record neither matches the name nor lists the session
  (or does not exist), and exactly one other record both lists the session and carries that name (compared without
  case and extra spaces; a near-identical spelling counts only together with the back reference, never alone).
- Anything in between (the given record contradicts the reference but nothing points to a single other one, or name
  and back reference point to different records) keeps the id and is reported: the organizer decides.

Every decision that is not silent is a ``relation_conflict`` warning naming the file, record, field, the id given and
the record chosen.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CLOSE_NAME = 0.85  # difflib ratio above which two spellings are taken for one name (only with a back reference)
_SHOWN = 80  # characters of a name quoted in a message


def name_key(value: Any) -> str | None:
    """A name as compared: NFKC, case-folded, runs of white space collapsed; None for no usable name."""
    if not isinstance(value, str):
        return None
    key = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    return key or None


def _close(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return a == b or difflib.SequenceMatcher(None, a, b).ratio() >= CLOSE_NAME


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return "'" + (text if len(text) <= _SHOWN else text[:_SHOWN] + "...") + "'"


@dataclass
class Evidence:
    """What one target file (speakers, tracks, microlocations, session types) says about its records."""

    singular: str
    names: dict[int, str] = field(default_factory=dict)  # id -> name as written (shortened)
    listed_by: dict[int, list[int]] = field(default_factory=dict)  # session id -> ids of records listing it
    has_back: set[int] = field(default_factory=set)  # ids of records that carry a sessions list
    _by_name: dict[str, list[int]] | None = None

    def add(self, record_id: int, name: Any, sessions: Any) -> None:
        if isinstance(name, str):
            self.names[record_id] = name[:500]
        if isinstance(sessions, list):
            self.has_back.add(record_id)
            for item in sessions:
                session_id = item.get("id") if isinstance(item, dict) else None
                if type(session_id) is int:
                    listing = self.listed_by.setdefault(session_id, [])
                    if record_id not in listing:
                        listing.append(record_id)
        self._by_name = None

    def named(self, key: str) -> list[int]:
        if self._by_name is None:
            by_name: dict[str, list[int]] = {}
            for record_id, name in self.names.items():
                k = name_key(name)
                if k is not None:
                    by_name.setdefault(k, []).append(record_id)
            self._by_name = by_name
        return self._by_name.get(key, [])

    def _who(self, record_id: int) -> str:
        name = self.names.get(record_id)
        return f"{self.singular} {record_id}" + (f" {_quote(name)}" if name is not None else "")


@dataclass(frozen=True)
class Verdict:
    chosen: int  # the id to link (the given one when kept)
    detail: str  # the warning's text


def judge(evidence: Evidence, given: int, exists: bool, name: Any, session_id: int | None,
          field_name: str) -> Verdict | None:
    """What a session's reference ``{"id": given, "name": name}`` should link to; None when it is consistent (or
    when ``given`` is missing and nothing conclusive points elsewhere: the reader then rebuilds it)."""
    want = name_key(name)
    own = name_key(evidence.names.get(given)) if exists else None
    listers = [j for j in evidence.listed_by.get(session_id, ()) if j != given] if session_id is not None else []
    named = [j for j in evidence.named(want) if j != given] if want is not None else []
    strong = [j for j in listers if j in named]
    if not strong and want is not None and not _close(own, want):
        # A misspelt name still counts when the record lists the session and the given one is nowhere near it.
        strong = [j for j in listers if _close(name_key(evidence.names.get(j)), want)]
    refers = f"{field_name} names {evidence.singular} {given}" + (f" {_quote(name)}" if want is not None else "")
    if not exists:
        if len(strong) == 1:
            chosen = strong[0]
            return Verdict(chosen, f"{refers}, which does not exist; {evidence._who(chosen)} lists this session "
                                   f"under that name: linked to {evidence.singular} {chosen}")
        return None  # rebuilt from the snapshot by the reader, as for any missing record
    name_ok = None if want is None or own is None else own == want
    lists_ok = None if given not in evidence.has_back or session_id is None else (
        given in evidence.listed_by.get(session_id, ()))
    if name_ok is False and lists_ok is not True:
        if len(strong) == 1:
            chosen = strong[0]
            return Verdict(chosen, f"{refers}, but {_said(evidence, given, lists_ok)}; {evidence._who(chosen)} "
                                   f"lists this session under that name: linked to {evidence.singular} {chosen}")
        if lists_ok is None and not named:
            return None  # a stale name, and no other record carries it
    elif name_ok is False:  # the record lists the session: a stale name, unless another one has both
        if not strong:
            return None
    elif lists_ok is False:  # the name matches (or none was given) but the record does not list the session
        if not listers:
            return None  # an incomplete back reference: nothing points elsewhere
    else:
        return None  # confirmed, or nothing to compare against
    said = _said(evidence, given, lists_ok)
    others = _others(evidence, listers, named)
    return Verdict(given, f"{refers}, but {said}; {others}: kept {evidence.singular} {given} (check this link)")


def _said(evidence: Evidence, given: int, lists_ok: bool | None) -> str:
    parts = []
    name = evidence.names.get(given)
    parts.append(f"{evidence.singular} {given} is {_quote(name)}" if name is not None
                 else f"{evidence.singular} {given} has no name")
    if lists_ok is False:
        parts.append("does not list this session")
    elif lists_ok is True:
        parts.append("lists this session")
    return " and ".join(parts)


def _others(evidence: Evidence, listers: Iterable[int], named: Iterable[int]) -> str:
    listers, named = list(listers), list(named)
    parts = []
    if listers:
        parts.append(_some(evidence, listers) + (" lists" if len(listers) == 1 else " list") + " this session")
    only_named = [j for j in named if j not in listers]
    if only_named:
        parts.append(_some(evidence, only_named) + (" has" if len(only_named) == 1 else " have") + " that name")
    return "; ".join(parts) if parts else f"no other {evidence.singular} points to this session"


def _some(evidence: Evidence, ids: list[int]) -> str:
    shown = ", ".join(evidence._who(j) for j in ids[:3])
    return shown + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
