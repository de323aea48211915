"""The documentation's generated sections (command set, error codes, register map) match the
tables the gateware is built from: ``mxe docs --check`` on every Markdown file that has them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "programming.md"


def _check(*paths):
    return subprocess.run([sys.executable, "-m", "mxe.cli", "docs", "--check",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)


def _with_generated_sections():
    return [path for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
            if "<!-- generated: " in path.read_text()]


def test_generated_sections_are_current():
    paths = _with_generated_sections()
    assert GUIDE in paths
    result = _check(*paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_programming_guide_holds_every_section():
    from mxe.cmd_docs import DEFAULT_FILES, sections
    text = GUIDE.read_text()
    for name in sections():
        assert f"<!-- generated: {name} -->" in text
    assert DEFAULT_FILES == ("docs/programming.md",)


def test_check_detects_a_stale_section(tmp_path):
    stale = tmp_path / "programming.md"
    text = GUIDE.read_text()
    assert "| LOAD | opcode |" in text
    stale.write_text(text.replace("| LOAD | opcode |", "| LOAD | opcodes |", 1))
    result = _check(GUIDE, stale)
    assert result.returncode == 1
    assert f"{stale} is out of date" in result.stdout
    assert f"{GUIDE} is up to date" in result.stdout


def test_regenerate_restores_a_stale_section(tmp_path):
    stale = tmp_path / "programming.md"
    stale.write_text(GUIDE.read_text().replace("| 0x000 | ID |", "| 0x000 | IDENT |", 1))
    result = subprocess.run([sys.executable, "-m", "mxe.cli", "docs", str(stale)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stale.read_text() == GUIDE.read_text()
