"""Text that comes from adapters is data: never markup, never terminal control, never huge.

An adapter's name, its exception messages and anything it returns as text reach the
terminal (rich), ``report.md``, ``report.html``, ``report.json``, ``junit.xml`` and the
pytest plugin's messages.  :func:`clean_text` is the one sanitiser all of them use:

- every control character except newline and tab (C0, DEL, C1 such as the 8-bit CSI
  ``\\x9b``) is shown as its escape (``\\x1b``), so an ANSI colour or an OSC window-title
  sequence becomes inert visible text (``\\x1b]0;title\\x07``); ``\\r\\n`` becomes ``\\n``;
- Unicode bidirectional overrides and isolates (``U+202A``-``U+202E``, ``U+2066``-``U+2069``)
  are shown as ``\\u202e`` too, so text cannot reorder what is printed around it;
- a lone surrogate (what :func:`os.fsdecode` gives for a non-UTF-8 file name) becomes
  ``U+FFFD``, so the text always encodes as UTF-8;
- text longer than ``limit`` characters keeps its first three quarters and its last quarter
  around a note ``[... N characters cut; the original was M characters ...]``.

:class:`CleanText` applies it on every assignment to a record's text fields (so every
output of a :class:`gradoracle.results.CheckResult` or a convention probe gets it), and
:func:`markup_safe` / :func:`plain` are the rich boundary (markup escaped, or a
``rich.text.Text`` that is never parsed as markup).  Importing this module imports
neither rich nor any framework.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

#: Longest message or repro kept in a record (characters); a check's full diagnostic with
#: its repro is 0.4-1.7 KB for the catalogue's inputs.
MESSAGE_LIMIT = 8192
#: Longest other free-text field (a probe's error, a description, an observed convention).
FIELD_LIMIT = 2048
#: Longest name (adapter, identity, dtype) kept in a record.
NAME_LIMIT = 200

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE_LOW, _SURROGATE_HIGH = 0xD800, 0xDFFF
_NOTE_ROOM = 100  # characters reserved for the truncation note


def _replace(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if _SURROGATE_LOW <= code <= _SURROGATE_HIGH:
        return "\ufffd"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_str(value: object) -> str:
    """``str(value)`` that never raises: an object whose ``__str__`` fails is described instead."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception as exc:  # an adapter's exception may raise from __str__
        try:
            kind = type(exc).__name__
        except Exception:  # pragma: no cover - type() of an exception cannot fail in practice
            kind = "Exception"
        return f"<unprintable {type(value).__name__}: str() raised {kind}>"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: 3/4 head, note, 1/4 tail.

    The note says how many characters were cut and how long the original was.
    """
    if limit <= 0 or len(text) <= limit:
        return text
    budget = max(limit - _NOTE_ROOM, 0)  # the note fits in the limit: cutting twice changes nothing
    head = (budget * 3) // 4
    tail = budget - head
    cut = len(text) - head - tail
    note = f"\n[... {cut:,} characters cut; the original was {len(text):,} characters ...]\n"
    return text[:head] + note + text[len(text) - tail :]


def clean_text(value: object, limit: int | None = FIELD_LIMIT) -> str:
    """Adapter text made safe for every output (see the module docstring).

    ``limit`` is the most characters kept (``None``: no limit).  Idempotent:
    ``clean_text(clean_text(s)) == clean_text(s)`` for the same limit.
    """
    text = safe_str(value)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if _UNSAFE.search(text) is not None:
        text = _UNSAFE.sub(_replace, text)
    return truncate(text, limit) if limit is not None else text


def one_line(value: object, limit: int = FIELD_LIMIT) -> str:
    """:func:`clean_text` on one line: newlines and tabs become spaces, runs of spaces one."""
    return " ".join(clean_text(value, limit=None).split())[: max(limit, 1)]


def clean_strings(obj: Any, limit: int | None = None) -> Any:
    """A copy of a JSON-like structure with :func:`clean_text` applied to every string (keys too)."""
    if isinstance(obj, str):
        return clean_text(obj, limit)
    if isinstance(obj, Mapping):
        return {clean_text(k, NAME_LIMIT): clean_strings(v, limit) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_strings(v, limit) for v in obj]
    return obj


def markup_safe(value: object, limit: int | None = FIELD_LIMIT) -> str:
    """Text for a rich markup string: :func:`clean_text`, then rich's markup escaped (``[`` -> ``\\[``)."""
    from rich.markup import escape

    return escape(clean_text(value, limit))


def plain(value: object, limit: int | None = FIELD_LIMIT, style: str = "") -> Any:
    """A ``rich.text.Text`` of the cleaned text: rendered as is, never parsed as markup."""
    from rich.text import Text

    return Text(clean_text(value, limit), style=style)


class CleanText:
    """Mixin for record dataclasses: text fields are cleaned on every assignment.

    ``_text_limits`` maps a field name to its limit; a value that is not a string (``None``,
    numbers, arrays) is stored unchanged.
    """

    _text_limits: ClassVar[Mapping[str, int]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        limit = self._text_limits.get(name)
        if limit is not None and isinstance(value, str):
            value = clean_text(value, limit)
        object.__setattr__(self, name, value)
