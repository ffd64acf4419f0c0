"""Does a folder hold what a device call can give back, and what the window must? (dry-run.sh, or the
files that came back from a call.)

The device tool brings back at most 8 files from $OUT, 16 MiB each and 64 MiB together, none more than 2
folders down, every file and folder named in letters, digits, '.', '_' and '-'; a link or anything other
than a plain file does not come back. The window must leave window.log, window.json, jobs.log and the
archive sweep-<profile>.tar.gz, which must open, hold its manifest and a run.json of each run asked for.
Prints the listing with sizes and one line per problem; exit status 1 if there is one.

    python3 scripts/device/check_out.py /tmp/out --profile smoke --runs smoke/rnn-spn-d1/seed0
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from pathlib import Path

MAX_FILES, MAX_FILE, MAX_TOTAL, MAX_DEPTH = 8, 16 * 2**20, 64 * 2**20, 2
NAME = re.compile(r"[A-Za-z0-9._-]+")
EXPECTED = ("window.log", "window.json", "jobs.log")


def limit_problems(out: Path) -> tuple[list[str], list[str]]:
    """(listing lines, problems) of everything under `out` against the device tool's limits."""
    entries = sorted(out.rglob("*"))
    files = [p for p in entries if p.is_file() and not p.is_symlink()]
    listing = [f"{p.stat().st_size:>10}  {p.relative_to(out)}" for p in files]
    problems = [f"{p.relative_to(out)}: not a plain file (a link or special file does not come back)"
                for p in entries if p.is_symlink() or not (p.is_file() or p.is_dir())]
    problems += [f"{p.relative_to(out)}: name {part!r} has characters other than letters, digits, '.', '_', '-'"
                 for p in entries for part in p.relative_to(out).parts[-1:] if not NAME.fullmatch(part)]
    problems += [f"{p.relative_to(out)}: {len(p.relative_to(out).parts) - 1} folders down, more than {MAX_DEPTH}"
                 for p in files if len(p.relative_to(out).parts) - 1 > MAX_DEPTH]
    problems += [f"{p.relative_to(out)}: {p.stat().st_size} bytes, over {MAX_FILE}" for p in files
                 if p.stat().st_size > MAX_FILE]
    total = sum(p.stat().st_size for p in files)
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, more than {MAX_FILES}")
    if total > MAX_TOTAL:
        problems.append(f"{total} bytes in all, over {MAX_TOTAL}")
    listing.append(f"{total:>10}  in {len(files)} files")
    return listing, problems


def window_problems(out: Path, profile: str, runs: list[str]) -> list[str]:
    """What the window must have left: its logs, its report, an archive that opens with each run's record."""
    problems = [f"{name}: missing" for name in EXPECTED if not (out / name).is_file()]
    archive = out / f"sweep-{profile}.tar.gz"
    if not archive.is_file():
        return problems + [f"{archive.name}: missing"]
    try:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
            manifest = json.load(tar.extractfile("manifest.json")) if "manifest.json" in names else None
    except (tarfile.TarError, OSError, json.JSONDecodeError) as err:
        return problems + [f"{archive.name}: does not open ({err})"]
    if manifest is None or not {"limit", "weights", "checkpoints", "left_out"} <= set(manifest):
        problems.append(f"{archive.name}: no valid manifest.json")
    problems += [f"{archive.name}: no results/{run}/run.json" for run in runs if f"results/{run}/run.json" not in names]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--runs", nargs="*", default=[], metavar="PROFILE/ROW/seedK",
                        help="runs whose record the archive must hold")
    args = parser.parse_args(argv)
    listing, problems = limit_problems(args.out)
    problems += window_problems(args.out, args.profile, args.runs)
    print(f"{args.out}:\n" + "\n".join(listing))
    for problem in problems:
        print(f"check_out: {problem}")
    print("check_out: " + ("within the limits of a device call, all present" if not problems
                           else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
