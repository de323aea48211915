"""README.md's generated sections (command set, error codes, register map) match the tables
the gateware is built from."""

import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_generated_sections_are_current():
    result = subprocess.run([sys.executable, "-m", "mxe.cli", "docs", "--check", str(README)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_a_stale_section(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text().replace("| LOAD | opcode |", "| LOAD | opcodes |", 1))
    result = subprocess.run([sys.executable, "-m", "mxe.cli", "docs", "--check", str(stale)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "out of date" in result.stdout
