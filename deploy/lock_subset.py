"""Prints requirements-lock.txt without the packages named (shell patterns), or only the pins of
those packages with --only and --pins. The image uses it to install torch and torchvision from
another index (the PyTorch CPU build) and everything else from the lock with its hashes.

    python deploy/lock_subset.py requirements-lock.txt 'torch' 'torchvision' 'nvidia-*' > rest.txt
    python deploy/lock_subset.py --only --pins requirements-lock.txt torch torchvision
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(text: str) -> list[tuple[str | None, list[str]]]:
    """The lock as (package name or None, lines): a pin with its hash and comment lines."""
    out: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            out.append((_canonical(match.group(1)), [line]))
        else:
            out[-1][1].append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="store_true", help="keep the named packages instead")
    parser.add_argument("--pins", action="store_true", help="only name==version, no hashes")
    parser.add_argument("lock")
    parser.add_argument("patterns", nargs="+")
    args = parser.parse_args(argv)
    patterns = [_canonical(p) for p in args.patterns]
    with open(args.lock, encoding="utf-8") as f:
        text = f.read()
    for name, lines in blocks(text):
        if name is None:
            if not args.pins and not args.only:
                print("\n".join(lines))
            continue
        named = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if named != args.only:
            continue
        print(lines[0].split()[0] if args.pins else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
