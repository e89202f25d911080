"""Issue 11, part B: adapter text is data, load failures exit 2, honest merges, atomic report sets.

Each hostile case runs the real command (``python -m gradoracle``) and asserts that the run
completes, the files are complete and valid, the exit code is the documented one and the
record or message names the fault.  Negative controls show each check would catch the bug.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gradoracle.reporting import load_schema
from gradoracle.results import CheckResult, Verdict
from gradoracle.text import MESSAGE_LIMIT, clean_text, markup_safe, one_line, truncate

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from broken_adapters import HOSTILE_TEXT, HUGE_MESSAGE_CHARS  # noqa: E402

#: What must never reach a file or a terminal from adapter text.
FORBIDDEN = ("\x1b", "\x9b", "\x07", "\u202e", "\r")
REPORT_FILES = ("report.json", "report.md", "report.html", "junit.xml")


def gradoracle(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m gradoracle ARGS`` with tests/ on the path; output decoded leniently."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("COLUMNS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gradoracle", *args],
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "surrogateescape"),
        proc.stderr.decode("utf-8", "surrogateescape"),
    )


def unsafe_chars(text: str) -> list[str]:
    """The forbidden characters (control, escapes, bidi, lone surrogates) in ``text``."""
    bad = [c for c in FORBIDDEN if c in text]
    bad += sorted({c for c in text if 0xD800 <= ord(c) <= 0xDFFF})
    bad += sorted({c for c in text if ord(c) < 0x20 and c not in "\n\t"})
    return bad


# --------------------------------------------------------------------- the sanitiser


HOSTILE_STRINGS = [
    HOSTILE_TEXT,
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "title\x1b]2;owned\x07after",
    "a\x00b\x08c\x7fd\x85e",
    "\ud800 lone high and \udfff lone low",
    "line one\r\nline two\roverwritten",
]


@pytest.mark.parametrize("text", HOSTILE_STRINGS)
def test_clean_text_leaves_no_control_no_surrogate_and_is_idempotent(text: str) -> None:
    assert unsafe_chars(text), "negative control: the raw text is hostile"
    cleaned = clean_text(text)
    assert unsafe_chars(cleaned) == []
    cleaned.encode("utf-8")  # no lone surrogate left: encodes strictly
    assert clean_text(cleaned) == cleaned
    # the text stays readable: escapes are shown, not dropped
    if "\x1b" in text:
        assert "\\x1b" in cleaned


def test_clean_text_keeps_newlines_tabs_and_ordinary_unicode() -> None:
    text = "grad of tanh: 1 - tanh²(x)\n\tσ'(x) = σ(x)(1 - σ(x)) ∇ 🙂"
    assert clean_text(text) == text


def test_truncation_keeps_head_and_tail_and_names_the_original_length() -> None:
    text = "HEAD" + "x" * 1_000_000 + "TAIL"
    cut = truncate(text, 4096)
    assert len(cut) <= 4096
    assert cut.startswith("HEAD") and cut.endswith("TAIL")
    assert "the original was 1,000,008 characters" in cut
    assert truncate(cut, 4096) == cut
    assert truncate("short", 4096) == "short"


def test_markup_safe_and_one_line() -> None:
    from rich.console import Console

    console = Console(width=200, color_system=None, force_terminal=False)
    with console.capture() as cap:
        console.print(f"[bold]{markup_safe('[/] [red]x[/red]')}[/bold]")
    assert "[/] [red]x[/red]" in cap.get()
    with pytest.raises(Exception, match="closing tag"):  # negative control: unescaped, rich raises
        console.print("[bold][/] [/bold]")
    assert one_line("a\n  b\tc\x1b") == "a b c\\x1b"


def test_records_are_cleaned_on_every_assignment() -> None:
    from gradoracle.conventions import ProbeResult

    r = CheckResult("id", "src", HOSTILE_TEXT, "float64", Verdict.ERROR, message="m" * (10 * MESSAGE_LIMIT))
    assert unsafe_chars(r.adapter) == [] and len(r.message) <= MESSAGE_LIMIT
    r.message = HOSTILE_TEXT
    assert unsafe_chars(r.message) == []
    restored = CheckResult.from_dict(json.loads(json.dumps(r.to_dict(), ensure_ascii=True)))
    assert unsafe_chars(restored.message) == []
    p = ProbeResult("probe", "ad", "float32", "d")
    p.error = "e" * 10**6 + HOSTILE_TEXT
    assert unsafe_chars(p.error) == [] and len(p.error) < 4096


def test_an_unprintable_value_is_described_not_raised() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    assert "unprintable Unprintable" in clean_text(Unprintable())


# -------------------------------------------------- hostile text through every output


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.scripts += tag == "script"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("hostile")
    proc = gradoracle(
        "report",
        "--adapter",
        "numpy",
        "--adapter",
        "broken_adapters:HostileTextAdapter",
        "--identity",
        "matvec-weight-grad",
        "--identity",
        "elementwise-relu",
        "--dtype",
        "float64",
        "--examples",
        "3",
        "--out",
        str(out),
    )
    return {"proc": proc, "out": out}


def test_hostile_text_run_completes_with_exit_1(hostile_run: dict[str, Any]) -> None:
    proc = hostile_run["proc"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name in REPORT_FILES:
        assert (hostile_run["out"] / name).is_file(), name


def test_hostile_text_never_reaches_the_terminal_as_control_or_markup(hostile_run: dict[str, Any]) -> None:
    proc = hostile_run["proc"]
    assert unsafe_chars(proc.stdout) == [] and unsafe_chars(proc.stderr) == []
    flat = "".join(proc.stdout.split())
    assert "hostile[/]\\x1b[31m" in flat  # the name is shown literally, as data


def test_hostile_text_files_are_valid_small_and_clean(hostile_run: dict[str, Any]) -> None:
    out: Path = hostile_run["out"]
    for name in REPORT_FILES:
        raw = (out / name).read_bytes()
        assert len(raw) < 512 * 1024, f"{name} is {len(raw)} bytes for a 1 MB message"
        assert unsafe_chars(raw.decode("utf-8")) == [], name  # strict UTF-8, no control characters
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, load_schema())
    ET.parse(out / "junit.xml")
    parser = _Parser()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    assert parser.scripts == 0
    hostile = [r for r in doc["results"] if r["adapter"].startswith("hostile")]
    assert hostile and all(r["verdict"] == "error" for r in hostile)
    for r in hostile:
        assert "RuntimeError" in r["message"]
        cut = re.search(r"characters cut; the original was ([\d,]+) characters", r["message"])
        assert cut and int(cut.group(1).replace(",", "")) >= HUGE_MESSAGE_CHARS
        assert len(r["message"]) <= MESSAGE_LIMIT
    probes = [c for c in doc["conventions"] if c["adapter"].startswith("hostile")]
    assert probes and all(c["error"] and len(c["error"]) <= 4096 for c in probes)


# ---------------------------------------------------------------- adapter load failures

LOAD_FAILURES = {
    "imp_runtime": ('raise RuntimeError("the framework failed to initialise")\n', "RuntimeError"),
    "imp_syntax": ("def broken(:\n    pass\n", "SyntaxError"),
    "imp_exit": ("import sys\nsys.exit(3)\n", "SystemExit(3)"),
    "imp_keyerror": ("import os\nos.environ['GRO_NO_SUCH_VARIABLE_SET']\n", "KeyError"),
}


@pytest.mark.parametrize("module", sorted(LOAD_FAILURES))
def test_adapter_import_failures_exit_2_with_the_cause_in_one_line(module: str, tmp_path: Path) -> None:
    source, cause = LOAD_FAILURES[module]
    (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    proc = gradoracle(
        "report", "--adapter", f"{module}:Adapter", "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert module in lines[0] and cause in lines[0]
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize(
    ("adapter", "cause"),
    [
        ("ConstructorRaisesAdapter", "RuntimeError: cannot open the device second line"),
        ("AvailableRaisesAdapter", "available() raised OSError: libfrobnicate.so"),
        ("ExitingConstructorAdapter", "SystemExit(4)"),
    ],
)
@pytest.mark.parametrize("command", ["check", "report"])
def test_adapter_constructor_and_available_failures_exit_2(
    adapter: str, cause: str, command: str, tmp_path: Path
) -> None:
    extra = ["--out", str(tmp_path)] if command == "report" else []
    proc = gradoracle(command, "--adapter", f"broken_adapters:{adapter}", "--identity", "mlp", *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and cause in lines[0], proc.stderr


def test_load_adapter_turns_every_failure_into_adapter_load_error(tmp_path: Path) -> None:
    from gradoracle.adapters import AdapterLoadError, load_adapter

    for adapter in ("ConstructorRaisesAdapter", "ExitingConstructorAdapter"):
        with pytest.raises(AdapterLoadError, match="constructor raised"):
            load_adapter(f"broken_adapters:{adapter}")
    # negative control: a correct adapter loads
    assert load_adapter("broken_adapters:ScaledAdapter").name == "ScaledAdapter"


# ------------------------------------------------------------- known-deviations files

DEVIATION_FILES = {
    "list-dtype": (
        b'[[deviation]]\nidentity = "mlp"\nadapter = "numpy"\nreason = "r"\ndtype = ["float32"]\n',
        ["deviation #1", "'dtype'", "list"],
    ),
    "int-identity": (
        b'[[deviation]]\nidentity = 3\nadapter = "numpy"\nreason = "r"\n',
        ["deviation #1", "'identity'", "int"],
    ),
    "second-entry-unknown-key": (
        b'[[deviation]]\nidentity = "mlp"\nadapter = "numpy"\nreason = "r"\n\n'
        b'[[deviation]]\nidentity = "mlp"\nadapter = "numpy"\nreason = "r"\ndtypes = "float32"\n',
        ["deviation #2", "dtypes"],
    ),
    "not-utf8": (
        b'[[deviation]]\nidentity = "ml\xff"\nadapter = "numpy"\nreason = "r"\n',
        ["UTF-8", "line 2"],
    ),
    "not-toml": (b"[[deviation]\n", ["not valid TOML"]),
    "missing-reason": (b'[[deviation]]\nidentity = "mlp"\nadapter = "numpy"\n', ["deviation #1", "'reason'"]),
}


@pytest.mark.parametrize("case", sorted(DEVIATION_FILES))
def test_bad_deviation_files_exit_2_naming_file_entry_and_key(case: str, tmp_path: Path) -> None:
    content, needles = DEVIATION_FILES[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(content)
    proc = gradoracle(
        "report", "--adapter", "numpy", "--known-deviations", str(path), "--out", str(tmp_path / "out")
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    assert f"{case}.toml" in text
    for needle in needles:
        assert needle in text, (needle, text)


def test_a_good_deviation_file_still_loads(tmp_path: Path) -> None:
    from gradoracle.deviations import load_deviations

    path = tmp_path / "ok.toml"
    path.write_text(
        '[[deviation]]\nidentity = "mlp*"\nadapter = "numpy"\nreason = "r"\ndtype = "float32"\nlink = ""\n',
        encoding="utf-8",
    )
    (entry,) = load_deviations(path)
    assert entry.dtype == "float32" and entry.identity == "mlp*"
