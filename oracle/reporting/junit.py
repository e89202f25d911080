"""``junit.xml``: one test case per identity x adapter x dtype, for CI dashboards.

Layout (the JUnit dialect Jenkins, GitLab and GitHub test reporters read)::

    <testsuites name="gradoracle" tests= failures= errors= skipped= time=>
      <testsuite name="gradoracle.<adapter>.<dtype>" ...>
        <properties> seed, examples, versions </properties>
        <testcase classname="gradoracle.<adapter>.<dtype>" name="<identity>-<adapter>-<dtype>" time=>
          fail     -> <failure message=... type="<fault>">full diagnostic and repro</failure>
          error    -> <error message=... type="<fault>">...</error>
          skip     -> <skipped message=.../>
          xfail    -> <skipped type="expected-deviation" message="known deviation: reason"/>
          not-run  -> <skipped type="not-run" message="not run: interrupted"/>

Characters XML 1.0 cannot hold (ANSI escapes, other control characters) are replaced.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: Any) -> str:
    """``text`` with the characters XML 1.0 forbids replaced by U+FFFD."""
    return _INVALID_XML.sub("\ufffd", str(text))


def _first_line(text: str) -> str:
    return xml_text(text.strip().splitlines()[0] if text.strip() else "")


def _time(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return "0.000"


def render_junit(document: Mapping[str, Any]) -> bytes:
    """The JUnit XML of a document, UTF-8 encoded with an XML declaration."""
    results = document["results"]
    env = document.get("environment") or {}
    suites: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        mode = str(r.get("mode") or "vjp")
        suffix = "" if mode == "vjp" else f".{mode}"
        suites.setdefault(f"gradoracle.{r['adapter']}.{r['dtype']}{suffix}", []).append(r)

    def counts(records: list[Mapping[str, Any]]) -> dict[str, str]:
        return {
            "tests": str(len(records)),
            "failures": str(sum(r["verdict"] == "fail" for r in records)),
            "errors": str(sum(r["verdict"] == "error" for r in records)),
            "skipped": str(sum(r["verdict"] in ("skip", "xfail", "not-run") for r in records)),
            "time": _time(sum(float(r.get("duration_s") or 0.0) for r in records)),
        }

    root = ET.Element("testsuites", {"name": "gradoracle", **counts(list(results))})
    for name, records in suites.items():
        suite = ET.SubElement(root, "testsuite", {"name": xml_text(name), **counts(records)})
        props = ET.SubElement(suite, "properties")
        prop_values = {
            "gradoracle.run_id": document.get("run_id"),
            "seed": env.get("seed"),
            "examples": (env.get("hypothesis") or {}).get("max_examples"),
            **{f"version.{k}": v for k, v in (env.get("packages") or {}).items() if v},
        }
        for key, value in prop_values.items():
            ET.SubElement(props, "property", {"name": key, "value": xml_text(value)})
        for r in records:
            case = ET.SubElement(
                suite,
                "testcase",
                {"classname": xml_text(name), "name": xml_text(r["id"]), "time": _time(r.get("duration_s"))},
            )
            verdict = r["verdict"]
            message = str(r.get("message") or "")
            fault = str(r.get("fault") or "none")
            if verdict in ("fail", "error"):
                tag = "failure" if verdict == "fail" else "error"
                text = message + (
                    f"\n\nrepro:\n{r['repro']}" if r.get("repro") and r["repro"] not in message else ""
                )
                elem = ET.SubElement(case, tag, {"message": _first_line(message) or verdict, "type": fault})
                elem.text = xml_text(text)
            elif verdict == "xfail":
                dev = r.get("deviation") or {}
                reason = f"known deviation: {dev.get('reason', '')}" + (
                    f" ({dev['link']})" if dev.get("link") else ""
                )
                elem = ET.SubElement(
                    case, "skipped", {"type": "expected-deviation", "message": xml_text(reason)}
                )
                elem.text = xml_text(message)
            elif verdict == "skip":
                ET.SubElement(case, "skipped", {"message": xml_text(message or "skipped")})
            elif verdict == "not-run":
                ET.SubElement(case, "skipped", {"type": "not-run", "message": xml_text(message or "not run")})
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"
