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
import threading
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


# ------------------------------------------------------------------ honest merges

MERGE_ARGS = ("--adapter", "numpy", "--identity", "matvec-weight-grad", "--identity", "elementwise-relu")


def in_process(*args: str) -> int:
    from gradoracle.cli import main

    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def shard(tmp_path: Path, name: str, k: int, n: int = 2, *extra: str) -> Path:
    out = tmp_path / name
    code = in_process(
        "report", *MERGE_ARGS, "--dtype", "float64", "--examples", "2", "--format", "json",
        "--shard", f"{k}/{n}", "--out", str(out), *extra,
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, Path]:
    return shard(tmp_path, "s1", 1), shard(tmp_path, "s2", 2)


def merge(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any] | None]:
    out = tmp_path / "merged"
    code = in_process("merge", *args, "--out", str(out), "--format", "json,md")
    doc = (
        json.loads((out / "report.json").read_text(encoding="utf-8"))
        if (out / "report.json").exists()
        else None
    )
    return code, str(out), doc


def test_complete_shards_merge_conforming(
    shards: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, doc = merge(tmp_path, *map(str, shards))
    assert code == 0, capsys.readouterr()
    assert doc and doc["summary"]["status"] == "conform"
    assert doc["run"]["merge"] == {"complete": True, "consistent": True, "accepted": []}


@pytest.mark.parametrize(
    ("case", "kind", "needle"),
    [
        ("missing", "missing", "shard(s) 2/2 of 2 missing"),
        ("duplicate", "duplicate", "shard 1/2 is given twice"),
        ("same-file-twice", "duplicate", "is given 2 times"),
    ],
)
def test_incomplete_sets_are_refused_unless_accepted(
    case: str, kind: str, needle: str, shards: tuple[Path, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    s1, s2 = shards
    if case == "missing":
        inputs = [s1]
    elif case == "duplicate":
        copy_dir = tmp_path / "s1-copy"
        copy_dir.mkdir()
        (copy_dir / "report.json").write_bytes((s1 / "report.json").read_bytes())
        inputs = [s1, copy_dir, s2]
    else:
        inputs = [s1, s1, s2]
    capsys.readouterr()
    code, out, doc = merge(tmp_path, *map(str, inputs))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and doc is None, err
    assert needle in err and f"--allow-{kind}" in err
    code, out, doc = merge(tmp_path, *map(str, inputs), f"--allow-{kind}")
    err = " ".join(capsys.readouterr().err.split())
    assert doc is not None and needle in err
    assert {p["kind"] for p in doc["run"]["merge"]["accepted"]} == {kind}
    assert needle in (Path(out) / "report.md").read_text(encoding="utf-8").replace("\\", "")
    if kind == "missing":  # an accepted incomplete set is never called conforming
        assert code == 1 and doc["summary"]["status"] == "incomplete"
    else:
        assert code == 0 and doc["summary"]["status"] == "conform"


def test_shards_of_different_seeds_are_refused_unless_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s1 = shard(tmp_path, "s1", 1, 2, "--seed", "1")
    s2 = shard(tmp_path, "s2", 2, 2, "--seed", "2")
    capsys.readouterr()
    code, _, doc = merge(tmp_path, str(s1), str(s2))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and doc is None and "different seeds" in err and "--allow-mixed" in err
    code, _, doc = merge(tmp_path, str(s1), str(s2), "--allow-mixed")
    assert code == 0 and doc is not None
    assert any("different seeds" in p["detail"] for p in doc["run"]["merge"]["accepted"])
    assert doc["run"]["merge"]["consistent"] is False


def test_shards_of_different_versions_are_refused(
    shards: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s1, s2 = shards
    doc = json.loads((s2 / "report.json").read_text(encoding="utf-8"))
    doc["environment"]["packages"]["numpy"] = "0.0.1"
    other = tmp_path / "s2-old-numpy"
    other.mkdir()
    (other / "report.json").write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    code, _, merged = merge(tmp_path, str(s1), str(other))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and merged is None
    assert "different package versions" in err and "numpy" in err and "0.0.1" in err


def test_unsharded_reports_of_different_adapters_still_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Negative control: joining full runs of different adapters is a legitimate union."""
    outs = []
    for adapter in ("numpy", "broken_adapters:ScaledAdapter"):
        out = tmp_path / adapter.replace(":", "_")
        args = ["--adapter", adapter, "--identity", "elementwise-relu", "--dtype", "float64"]
        in_process("report", *args, "--examples", "2", "--format", "json", "--out", str(out))
        outs.append(str(out))
    code, _, doc = merge(tmp_path, *outs)
    assert code == 1, capsys.readouterr()  # the scaled adapter fails; the merge itself is accepted
    assert doc and doc["run"]["merge"]["accepted"] == []


# ------------------------------------------------------------------ atomic report sets


@pytest.fixture
def full_set(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    args = ["--adapter", "numpy", "--identity", "elementwise-relu", "--dtype", "float64", "--examples", "2"]
    assert in_process("report", *args, "--out", str(out)) == 0
    return out


def set_snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")
    }


def test_every_file_of_a_set_carries_its_run_id(full_set: Path) -> None:
    from gradoracle.reporting.reportset import read_manifest, verify_report_set

    manifest = read_manifest(full_set)
    assert manifest is not None
    run_id = manifest["run_id"]
    assert sorted(manifest["files"]) == sorted(REPORT_FILES)
    assert json.loads((full_set / "report.json").read_text(encoding="utf-8"))["run_id"] == run_id
    assert f"run {run_id}" in (full_set / "report.md").read_text(encoding="utf-8").replace("\\", "")
    assert f'content="{run_id}"' in (full_set / "report.html").read_text(encoding="utf-8")
    props = {p.get("name"): p.get("value") for p in ET.parse(full_set / "junit.xml").iter("property")}
    assert props["gradoracle.run_id"] == run_id
    assert verify_report_set(full_set) is None
    # negative control: a file changed after the set was written is caught
    (full_set / "report.md").write_text("# edited\n", encoding="utf-8")
    problem = verify_report_set(full_set)
    assert problem and "report.md" in problem


def test_a_set_with_fewer_formats_replaces_the_whole_previous_set(full_set: Path) -> None:
    args = ["--adapter", "numpy", "--identity", "elementwise-relu", "--dtype", "float64", "--examples", "2"]
    (full_set / "notes.txt").write_text("mine", encoding="utf-8")
    assert in_process("report", *args, "--format", "json", "--out", str(full_set)) == 0
    assert sorted(set_snapshot(full_set)) == ["notes.txt", "report-set.json", "report.json"]


def test_disk_full_while_writing_keeps_the_previous_set(
    full_set: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    import gradoracle.reporting.reportset as reportset

    before = set_snapshot(full_set)
    real = reportset._write_synced
    calls = {"n": 0}

    def fill_disk(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(reportset, "_write_synced", fill_disk)
    args = ["--adapter", "numpy", "--identity", "elementwise-relu", "--dtype", "float64", "--examples", "2"]
    capsys.readouterr()
    assert in_process("report", *args, "--seed", "7", "--out", str(full_set)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "No space left on device" in err and "unchanged" in err
    assert set_snapshot(full_set) == before
    assert not list(full_set.glob(".gradoracle-staging-*"))


def test_ctrl_c_during_the_switch_waits_for_it(full_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    import gradoracle.reporting.reportset as reportset
    from gradoracle.reporting import load_report, write_reports

    results, probes, meta = load_report(full_set)
    real = os.replace
    calls = {"n": 0}

    def interrupted_replace(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # twice: a double Ctrl-C in the middle of the switch
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        real(src, dst)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set from the main thread")
    monkeypatch.setattr(reportset.os, "replace", interrupted_replace)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            write_reports(results, probes, full_set, meta=meta)
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(reportset.os, "replace", real)
    assert reportset.verify_report_set(full_set) is None
    run_id = reportset.read_manifest(full_set)["run_id"]  # type: ignore[index]
    assert json.loads((full_set / "report.json").read_text(encoding="utf-8"))["run_id"] == run_id
    assert run_id != meta["run_id"]  # the new set, complete


KILL_MID_SWITCH = """
import json, os, signal, sys
import gradoracle.reporting.reportset as reportset
from gradoracle.reporting import load_report, write_reports

out = sys.argv[1]
results, probes, meta = load_report(out)
real = os.replace
calls = {"n": 0}

def killed(src, dst):
    calls["n"] += 1
    if calls["n"] == 3:  # two files of the new set are in place, two of the old one remain
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)

reportset.os.replace = killed
write_reports(results, probes, out, meta=meta)
"""


def test_sigkill_mid_switch_is_detected_and_finished_by_the_next_reader(full_set: Path) -> None:
    from gradoracle.reporting import load_report
    from gradoracle.reporting.reportset import read_manifest, verify_report_set

    old_id = read_manifest(full_set)["run_id"]  # type: ignore[index]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_MID_SWITCH, str(full_set)], capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    problem = verify_report_set(full_set)
    assert problem and "being switched in" in problem  # a reader is told, not given a mix
    load_report(full_set)  # the next reader (or writer) finishes the switch
    assert verify_report_set(full_set) is None
    new_id = read_manifest(full_set)["run_id"]  # type: ignore[index]
    assert new_id != old_id
    assert json.loads((full_set / "report.json").read_text(encoding="utf-8"))["run_id"] == new_id
    assert f"run {new_id}" in (full_set / "report.md").read_text(encoding="utf-8").replace("\\", "")
    assert not list(full_set.glob(".gradoracle-staging-*"))


def test_a_second_run_on_the_same_out_is_refused_with_a_clear_message(full_set: Path) -> None:
    from gradoracle.reporting.reportset import report_dir_lock

    before = set_snapshot(full_set)
    args = ["report", "--adapter", "numpy", "--identity", "elementwise-relu", "--examples", "2"]
    with report_dir_lock(full_set):  # another run is writing here
        proc = gradoracle(*args, "--out", str(full_set))
        merged = gradoracle("merge", str(full_set), "--out", str(full_set))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = " ".join(proc.stderr.split())
    assert "another gradoracle run is writing" in text and f"pid {os.getpid()}" in text and "--out" in text
    assert merged.returncode == 2 and "another gradoracle run" in merged.stderr
    assert set_snapshot(full_set) == before
    # negative control: once the lock is free, the same command runs
    assert gradoracle(*args, "--out", str(full_set)).returncode == 0


def test_plugin_messages_and_report_are_clean_for_hostile_adapter_text(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = ["--gradoracle-adapter", "broken_adapters:HostileTextAdapter", "--gradoracle-identity"]
    args += ["elementwise-relu", "--gradoracle-dtype", "float64", "--gradoracle-examples", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "--gradoracle-report", "out"],
        capture_output=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    output = proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8")  # strict: no lone surrogate
    assert proc.returncode == 1, output[-3000:]
    assert unsafe_chars(output) == []
    assert "characters cut; the original was" in output and "RuntimeError" in output
    for name in REPORT_FILES:
        raw = (tmp_path / "out" / name).read_bytes()
        assert len(raw) < 512 * 1024 and unsafe_chars(raw.decode("utf-8")) == [], name
    jsonschema.validate(json.loads((tmp_path / "out" / "report.json").read_bytes()), load_schema())


def test_ctrl_c_while_rendering_keeps_the_previous_set_and_exits_130(
    full_set: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gradoracle.reporting.markdown as markdown

    before = set_snapshot(full_set)

    def interrupted(document: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(markdown, "render_markdown", interrupted)
    args = ["--adapter", "numpy", "--identity", "elementwise-relu", "--dtype", "float64", "--examples", "2"]
    capsys.readouterr()
    assert in_process("report", *args, "--seed", "3", "--out", str(full_set)) == 130
    assert "no report set was left half written" in " ".join(capsys.readouterr().err.split())
    assert set_snapshot(full_set) == before
    assert not list(full_set.glob(".gradoracle-staging-*"))


def test_selftest_correct_adapter_whose_available_raises_exits_2() -> None:
    proc = gradoracle(
        "selftest",
        "--correct-adapter",
        "broken_adapters:AvailableRaisesAdapter",
        "--mutant",
        "relu-mask-missing",
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "available() raised OSError: libfrobnicate.so" in " ".join(proc.stderr.split())


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, "no 'schema_version'"),
        (999, "'schema_version' is 999 (int), not a version string"),
        ("7.0", "report schema 7.0 cannot be read by this gradoracle"),
    ],
)
def test_a_report_with_an_unreadable_schema_version_says_which_it_is(version: Any, expected: str) -> None:
    from gradoracle.reporting import validate_document
    from gradoracle.reporting.json_report import ReportFormatError

    doc: dict[str, Any] = {"results": []}
    if version is not None:
        doc["schema_version"] = version
    with pytest.raises(ReportFormatError, match=re.escape(expected)):
        validate_document(doc, "r.json")
