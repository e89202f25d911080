"""The notes ship inside the package and every ``notes:`` label of the catalogue names a passage."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradoracle import specification
from gradoracle.identities import SOURCES, all_identities

REPO_NOTES = Path(__file__).resolve().parents[2] / "shared" / "notes" / "gradient-notes.md"


def test_every_source_label_of_the_catalogue_names_a_passage() -> None:
    labels = {i.source.split()[0] for i in all_identities() if i.source.startswith("notes:")}
    assert labels == set(SOURCES)
    for label in labels:
        p = specification.passage(label)
        assert p.text.strip(), label
        assert p.title


@pytest.mark.parametrize(
    ("label", "formula"),
    [
        ("notes:identity-1", r"\frac{\partial \rvz}{\partial \rvx} = \rmW \]"),
        ("notes:identity-2", r"\frac{\partial \rvz}{\partial \rvx} = \rmW^T"),
        ("notes:identity-4", r"\text{diag}(f'(\rvx))"),
        ("notes:identity-5", r"\frac{\partial J}{\partial \rmW} = \boldsymbol{\delta} \rvx^T"),
        ("notes:identity-6", r"\rvx^T \boldsymbol{\delta}"),
        ("notes:mlp", r"\hat{\rvy} - \rvy"),
        ("notes:conv-filter", r"\rmX * \boldsymbol{\delta}"),
        ("notes:conv-input", r"\text{rot180}(\rmK)"),
        ("notes:max-pool", "router"),
        ("notes:avg-pool", r"\frac{1}{k^2} \delta_{uv}"),
    ],
)
def test_each_passage_holds_its_own_formula_and_not_the_next(label: str, formula: str) -> None:
    text = specification.passage(label).text
    assert formula in text
    others = [specification.passage(o).text for o in specification.labels() if o != label]
    # passages do not overlap: the identity-1 passage must not run on into identity 2, etc.
    assert all(text not in o for o in others)


def test_unknown_label_names_the_known_ones() -> None:
    with pytest.raises(specification.UnknownNotesLabelError, match="notes:identity-1"):
        specification.passage("notes:identity-9")


def test_section_title_for_a_source_with_a_qualifier() -> None:
    assert specification.section_title("notes:mlp (step A)") == "MLP example"
    assert specification.section_title("user") == "user"


@pytest.mark.skipif(not REPO_NOTES.exists(), reason="the project's shared/notes is not beside this clone")
def test_shipped_notes_are_the_projects_notes_verbatim() -> None:
    assert specification.notes_text() == REPO_NOTES.read_text(encoding="utf-8")


def test_explain_prints_the_notes_passage(capsys: pytest.CaptureFixture[str]) -> None:
    from gradoracle.cli import main

    assert main(["explain", "conv-input"]) == 0
    out = capsys.readouterr().out
    assert "notes:conv-input - the notes, CNN example 2" in out
    assert r"\text{rot180}(\rmK)" in out
    assert main(["explain", "conv-input", "--no-notes"]) == 0
    assert "rot180}(\\rmK)" not in capsys.readouterr().out
