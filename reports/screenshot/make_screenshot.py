"""Make reports/report-screenshot.png: report.html as headless Chromium draws it without an emoji font.

Run from the repository root: ``.venv/bin/python reports/screenshot/make_screenshot.py``.  It writes a
small report with every verdict (numpy and torch, a partial adapter that skips, the broken adapters
of ``tests/broken_adapters.py``, one known deviation) into a temporary folder and photographs it with
``chromium --headless``.  Fails when an emoji font is installed (the point is to show the page
without one) or when chromium is missing (``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "reports" / "report-screenshot.png"


def main() -> int:
    fonts = subprocess.run(["fc-list"], capture_output=True, text=True, check=False).stdout
    if "emoji" in fonts.lower():
        print("an emoji font is installed; the screenshot must show the page without one", file=sys.stderr)
        return 1
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(HERE)])}
    with tempfile.TemporaryDirectory() as tmp:
        report = [sys.executable, "-m", "gradoracle", "report", "-q", "--out", tmp, "--format", "html"]
        report += ["--examples", "10", "--seed", "0", "--known-deviations", str(HERE / "deviations.toml")]
        for identity in ("elementwise-sigmoid", "matvec-weight-grad", "conv-input", "max-pool"):
            report += ["--identity", identity]
        for adapter in (
            "numpy",
            "torch",
            "demo_adapters:ElementwiseOnlyAdapter",
            "broken_adapters:WrongPixelMaxPoolAdapter",
            "broken_adapters:RaisingAdapter",
        ):
            report += ["--adapter", adapter]
        subprocess.run(report, env=env, check=False)
        page = Path(tmp) / "report.html"
        shot = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        shot += ["--window-size=1500,1700", f"--screenshot={OUT}", page.as_uri()]
        subprocess.run(shot, check=True, capture_output=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
