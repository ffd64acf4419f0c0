"""What travels to the device machine with a `run` call, and the binary results set aside meanwhile.

A call takes the working tree, at most 64 MiB of it: the files git tracks, the untracked ones it does not
ignore, a shared/ folder in the checkout, and the ignored paths named in `carry` (.carry/ with MNIST's
17 MB, .whl/). The binary results grow with every run (a resume pack resume.pt beside each run in
progress, ~20 MB for a d = 2 row; weights.safetensors beside each finished one) and the window needs none
of them: it trains rows that have no record here. `aside` moves them into .aside/ (ignored through
.git/info/exclude, never carried) and `restore` puts them back, never over a newer file.

    python3 scripts/device/travel.py size --carry .carry .whl    # what would travel; exit 1 over 64 MiB
    python3 scripts/device/travel.py size --without-aside        # ... once `aside` has run (read only)
    python3 scripts/device/travel.py aside                       # before the call (prepare.sh)
    python3 scripts/device/travel.py restore                     # after it, before `rstn unpack`
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 2**20  # bytes: the working tree a device call takes
ASIDE = ".aside"
BINARY_RESULTS = ("resume.pt", "weights.safetensors")  # file names under results/ set aside for a call


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def travelling_files(root: Path, carry: list[str]) -> list[Path]:
    """The files a call takes from `root` (paths relative to it): tracked and untracked-not-ignored files
    that exist, shared/ if the checkout has one, and every file under the carried paths."""
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    files = {Path(p) for p in listed if p and os.path.lexists(root / p)}
    for folder in ["shared", *carry]:
        base = root / folder
        if base.is_file() or base.is_symlink():
            files.add(Path(folder))
        elif base.is_dir():
            files |= {p.relative_to(root) for p in base.rglob("*") if p.is_file() or p.is_symlink()}
    return sorted(files)


def is_binary_result(path: Path) -> bool:
    """A file that `aside` moves: results/**/resume.pt or results/**/weights.safetensors."""
    return path.parts[:1] == ("results",) and path.name in BINARY_RESULTS


def size_report(root: Path, carry: list[str], without_aside: bool, also: list[Path]) -> tuple[int, str]:
    """(bytes, a few lines: the total against the limit and the largest files)."""
    files = [p for p in travelling_files(root, carry) if not (without_aside and is_binary_result(p))]
    sizes = [(os.lstat(root / p).st_size, str(p)) for p in files]
    sizes += [(os.stat(p).st_size, f"{p} (counted as carried)") for p in also]
    total = sum(s for s, _ in sizes)
    verdict = "within" if total <= LIMIT else "OVER"
    lines = [f"travel: {len(sizes)} files, {total / 2**20:.1f} MiB: {verdict} the call's {LIMIT // 2**20} MiB"
             + (" (binary results set aside)" if without_aside else "")]
    lines += [f"  {s / 2**20:7.1f} MiB  {name}" for s, name in sorted(sizes, reverse=True)[:5]]
    return total, "\n".join(lines)


def ensure_excluded(root: Path, entry: str) -> None:
    """`entry` (e.g. '/.aside/') as a line of the repository's info/exclude: ignored, so it never travels."""
    exclude = root / git(root, "rev-parse", "--git-path", "info/exclude").strip()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if entry not in lines:
        with open(exclude, "a") as f:
            f.write(("\n" if lines and not exclude.read_text().endswith("\n") else "") + entry + "\n")


def aside(root: Path) -> list[str]:
    """Move the binary results into .aside/ (same relative paths); returns one line per file moved."""
    ensure_excluded(root, f"/{ASIDE}/")
    moved = []
    for path in travelling_files(root, []):
        if not is_binary_result(path):
            continue
        target = root / ASIDE / path
        if target.exists():
            raise SystemExit(f"travel: {target} is already set aside (an earlier call not restored): run "
                             f"`python3 scripts/device/travel.py restore` first")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / path, target)
        moved.append(f"set aside {path} ({target.stat().st_size / 2**20:.1f} MiB)")
    return moved


def restore(root: Path) -> list[str]:
    """Move everything in .aside/ back; a file that exists again and is newer is kept, and the older copy
    stays in .aside/ (said so). Returns one line per file."""
    base = root / ASIDE
    if not base.is_dir():
        return []
    lines = []
    for kept in sorted(p for p in base.rglob("*") if p.is_file()):
        path = root / kept.relative_to(base)
        if path.exists() and path.stat().st_mtime > kept.stat().st_mtime:
            lines.append(f"kept the newer {path.relative_to(root)}; the older copy stays at {kept.relative_to(root)}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(kept, path)
        lines.append(f"restored {path.relative_to(root)}")
    for folder in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True) + [base]:
        if not any(folder.iterdir()):
            folder.rmdir()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("size", "aside", "restore"))
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--carry", nargs="*", default=[".carry", ".whl"], help="size: the run's carry paths")
    parser.add_argument("--without-aside", action="store_true", help="size: as if `aside` had run")
    parser.add_argument("--also", nargs="*", type=Path, default=[], help="size: files to count as carried too")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.action == "size":
        total, text = size_report(root, args.carry, args.without_aside, args.also)
        print(text)
        return 0 if total <= LIMIT else 1
    lines = aside(root) if args.action == "aside" else restore(root)
    print("\n".join(lines) or f"travel: nothing to {args.action}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
