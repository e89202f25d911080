"""The notes (the specification) as shipped in the package, and their passages by ``notes:`` label.

The file ``notes/gradient-notes.md`` inside the package is a verbatim copy of the project's
``notes/gradient-notes.md``; every identity's ``source`` label (``notes:identity-5``,
``notes:conv-input``, ...) names one passage of it, so ``gradoracle explain`` can print what a label
means outside this repository.  A passage is the text between two anchors of the notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

NOTES_RESOURCE = "notes/gradient-notes.md"


@dataclass(frozen=True)
class Passage:
    """One labelled passage of the notes: its label, the notes' own section title, and its text."""

    label: str
    title: str
    text: str


# label -> (section title as the notes word it, first line of the passage, first line after it)
_ANCHORS: dict[str, tuple[str, str, str]] = {
    "notes:identity-1": (
        "Useful identities 1: matrix times column vector w.r.t. the column vector",
        "1. Matrix times column vector with respect to the column vector",
        "1. Row vector times matrix with respect to the row vector",
    ),
    "notes:identity-2": (
        "Useful identities 2: row vector times matrix w.r.t. the row vector",
        "1. Row vector times matrix with respect to the row vector",
        "1. A vector with itself",
    ),
    "notes:identity-3": (
        "Useful identities 3: a vector with itself",
        "1. A vector with itself",
        "1. An element-wise function applied a vector",
    ),
    "notes:identity-4": (
        "Useful identities 4: an element-wise function applied to a vector",
        "1. An element-wise function applied a vector",
        "1. Matrix times column vector with respect to the matrix",
    ),
    "notes:identity-5": (
        "Useful identities 5: matrix times column vector w.r.t. the matrix",
        "1. Matrix times column vector with respect to the matrix",
        "1. Row vector times matrix with respect to the matrix",
    ),
    "notes:identity-6": (
        "Useful identities 6: row vector times matrix w.r.t. the matrix",
        "1. Row vector times matrix with respect to the matrix",
        "Gradient Layout",
    ),
    "notes:mlp": ("MLP example", "MLP example", "CNN example"),
    "notes:conv-filter": (
        "CNN example 1: gradient w.r.t. the filter",
        "CNN example",
        "2. Gradient w.r.t Input",
    ),
    "notes:conv-input": (
        "CNN example 2: gradient w.r.t. the input",
        "2. Gradient w.r.t Input",
        "This maintains the pattern:",
    ),
    "notes:max-pool": ("Pooling layers: max pooling", "• Max Pooling", "• Average Pooling"),
    "notes:avg-pool": ("Pooling layers: average pooling", "• Average Pooling", "References"),
}


class UnknownNotesLabelError(KeyError):
    """A ``notes:`` label that names no passage of the notes."""


@cache
def notes_text() -> str:
    """The full text of the shipped notes."""
    return resources.files("gradoracle").joinpath(NOTES_RESOURCE).read_text(encoding="utf-8")


def labels() -> tuple[str, ...]:
    """Every ``notes:`` label that names a passage, in the notes' order."""
    return tuple(_ANCHORS)


def _line_starting(lines: list[str], prefix: str, start: int, label: str) -> int:
    for i in range(start, len(lines)):
        if lines[i].strip().startswith(prefix):
            return i
    raise UnknownNotesLabelError(f"the shipped notes lack the passage {prefix!r} that {label} names")


def passage(label: str) -> Passage:
    """The passage of the notes that ``label`` (``notes:identity-1``, ``notes:mlp``, ...) names.

    Its text runs from the anchor line that opens it up to (not including) the next passage's
    anchor, so a passage is exactly what the label's identities encode.
    """
    if label not in _ANCHORS:
        known = ", ".join(_ANCHORS)
        raise UnknownNotesLabelError(f"unknown notes label {label!r}; the notes' labels are: {known}")
    title, first, after = _ANCHORS[label]
    lines = notes_text().splitlines()
    begin = _line_starting(lines, first, 0, label)
    end = _line_starting(lines, after, begin + 1, label)
    text = "\n".join(lines[begin:end]).strip("\n")
    return Passage(label=label, title=title, text=text)


def section_title(source: str) -> str:
    """The notes' section title for an identity's ``source`` (itself when it is not a notes label)."""
    base = source.split()[0] if source else source
    return _ANCHORS[base][0] if base in _ANCHORS else source


_LABEL = re.compile(r"notes:[a-z0-9-]+")


def source_words(source: str) -> str:
    """An identity's ``source`` with every ``notes:`` label named by its section title.

    ``notes:identity-5, identity matvec-weight-grad`` ->
    ``notes "Useful identities 5: matrix times column vector w.r.t. the matrix", identity
    matvec-weight-grad``; a label the notes do not know stays as it is.
    """

    def title(match: re.Match[str]) -> str:
        label = match.group(0)
        return f'notes "{_ANCHORS[label][0]}"' if label in _ANCHORS else label

    return _LABEL.sub(title, source or "")
