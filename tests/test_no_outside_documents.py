"""Nothing in the repository cites a design document the repository does not hold."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITATION = "DESIGN " + "§"  # split, so this file does not cite it


def test_no_file_cites_design_sections() -> None:
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    citing = [
        name
        for name in tracked
        if name
        and (REPO / name).is_file()
        and CITATION in (REPO / name).read_text(encoding="utf-8", errors="replace")
    ]
    assert citing == []
