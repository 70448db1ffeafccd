"""Reading a targets file (`targets.txt`, or a Citizen Lab CSV) into `Target`s; every error names
`file:line`. Parsing one line is the vocabulary's (`probe.vocabulary.targets`)."""

from __future__ import annotations

from pathlib import Path

from probe.vocabulary.targets import Target, TargetError, parse_csv, parse_lines


def load_targets(path: Path) -> list[Target]:
    """Read a targets file (plain or CSV, told apart by its header or `.csv` suffix)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TargetError(f"{name}: no such file") from None
    except UnicodeDecodeError as exc:
        raise TargetError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TargetError(f"{name}: cannot read: {exc.strerror}") from None
    lines = text.splitlines()
    is_csv = path.suffix.lower() == ".csv" or (lines and lines[0].lower().startswith("url,"))
    targets = parse_csv(lines, name) if is_csv else parse_lines(lines, name)
    if not targets:
        raise TargetError(f"{name}: no targets in the file")
    return targets
