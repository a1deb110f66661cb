"""Synthetic Vietnamese citizens, for the embedded national database, sample dossiers and training.

The one generator behind the embedded national database's population (``db.synthetic_citizens``), the
sample dossiers (:mod:`pipeline.training.samples`) and the training documents
(:mod:`pipeline.training.synth`). Nobody here is real.

Names and places come from ``pipeline/data/citizen_pools.yaml``. The 12-digit personal ID agrees with the
citizen: province code of birth registration (3) · century and gender (1: 0/1 for the 1900s, 2/3 for the
2000s, odd for women) · year of birth (2) · serial (6). A citizen is a pure function of the state of the
random generator passed in; the draws are, in order: gender, number of middle names, surname, middle
names, given name, birth date, place, ID serial, house number, street.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from importlib.resources import files
from typing import Any

import yaml

from pipeline.core.errors import ConfigurationError

GENDERS = ("Nam", "Nữ")
POOLS_FILE = "citizen_pools.yaml"


@dataclass(frozen=True)
class Place:
    """A commune, with the province code that starts the ID of a citizen registered there."""

    code: str
    province: str
    district: str
    commune: str


@dataclass(frozen=True)
class Pools:
    surnames: tuple[str, ...]
    middle: Mapping[str, tuple[str, ...]]
    given: Mapping[str, tuple[str, ...]]
    middle_name_counts: tuple[int, ...]
    places: tuple[Place, ...]
    streets: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticCitizen:
    full_name: str
    gender: str
    birth: date
    id_number: str
    place: Place  # of birth registration and of residence
    street: str  # "Số 12, đường Lê Lợi"

    @property
    def date_of_birth(self) -> str:
        return self.birth.strftime("%d/%m/%Y")

    @property
    def origin(self) -> str:
        """Commune, district, province (quê quán)."""
        return f"{self.place.commune}, {self.place.district}, {self.place.province}"

    @property
    def address(self) -> str:
        """Permanent residence (nơi thường trú): the street, then the place."""
        return f"{self.street}, {self.origin}"


def _names(spec: Any, key: str) -> tuple[str, ...]:
    if not isinstance(spec, list) or not spec or not all(isinstance(s, str) and s.strip() for s in spec):
        raise ValueError(f"{key} must be a non-empty list of names")
    return tuple(spec)


def parse_pools(spec: Any) -> Pools:
    """Pools from the YAML document's data; ValueError saying which entry is wrong."""
    if not isinstance(spec, dict):
        raise ValueError("the pools file must be a mapping")
    by_gender: dict[str, dict[str, tuple[str, ...]]] = {}
    for key in ("middle", "given"):
        if not isinstance(spec.get(key), dict) or set(spec[key]) != set(GENDERS):
            raise ValueError(f"{key} must have exactly the genders {', '.join(GENDERS)}")
        by_gender[key] = {g: _names(spec[key][g], f"{key}.{g}") for g in GENDERS}
    smallest = min(len(names) for names in by_gender["middle"].values())
    counts = spec.get("middle_name_counts")
    if not (isinstance(counts, list) and counts and all(isinstance(n, int) and 1 <= n <= smallest for n in counts)):
        raise ValueError("middle_name_counts must list counts from 1 to the size of the smallest middle pool")
    places = []
    for entry in spec.get("places") or []:
        if not (isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, str) for x in entry)):
            raise ValueError(f"a place is [province code, province, district, commune], not {entry!r}")
        if not (len(entry[0]) == 3 and entry[0].isascii() and entry[0].isdigit()):
            raise ValueError(f"a province code has 3 digits, not {entry[0]!r}")
        places.append(Place(*entry))
    if not places:
        raise ValueError("places must not be empty")
    return Pools(
        surnames=_names(spec.get("surnames"), "surnames"),
        middle=by_gender["middle"],
        given=by_gender["given"],
        middle_name_counts=tuple(counts),
        places=tuple(places),
        streets=_names(spec.get("streets"), "streets"),
    )


@lru_cache(maxsize=1)
def pools() -> Pools:
    """The bundled pools (``pipeline/data/citizen_pools.yaml``)."""
    try:
        return parse_pools(yaml.safe_load((files("pipeline") / "data" / POOLS_FILE).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValueError) as err:
        raise ConfigurationError(
            f"pipeline/data/{POOLS_FILE}: {err}", "Tệp dữ liệu công dân mẫu bị hỏng hoặc thiếu."
        ) from err


def personal_id(province_code: str, gender: str, birth: date, serial: int) -> str:
    """The 12-digit personal ID of a citizen born on ``birth`` and registered in that province."""
    century_gender = 2 * ((birth.year - 1900) // 100) + GENDERS.index(gender)
    return f"{province_code}{century_gender}{birth.year % 100:02d}{serial:06d}"


def synthetic_citizen(rng: random.Random, *, born: tuple[int, int] = (1940, 2004)) -> SyntheticCitizen:
    """A citizen born from 1 January of ``born[0]`` over ``born[1] - born[0]`` years of 365 days."""
    first, last = born
    if not 1900 <= first < last <= 2100:
        raise ValueError(f"birth years must run forwards within 1900-2100, not {born}")
    p = pools()
    gender = rng.choice(GENDERS)
    n_middle = rng.choice(p.middle_name_counts)
    name = " ".join([rng.choice(p.surnames), *rng.sample(p.middle[gender], n_middle), rng.choice(p.given[gender])])
    birth = date(first, 1, 1) + timedelta(days=rng.randrange(0, 365 * (last - first)))
    place = rng.choice(p.places)
    id_number = personal_id(place.code, gender, birth, rng.randrange(0, 10**6))
    street = f"Số {rng.randrange(1, 300)}, đường {rng.choice(p.streets)}"
    return SyntheticCitizen(full_name=name, gender=gender, birth=birth, id_number=id_number, place=place, street=street)


def distinct_citizens(
    rng: random.Random, count: int, *, born: tuple[int, int], taken: Iterable[str] = ()
) -> list[SyntheticCitizen]:
    """``count`` citizens whose IDs differ from each other and from ``taken`` (a redrawn ID is skipped)."""
    seen = set(taken)
    people: list[SyntheticCitizen] = []
    for _ in range(100 * (count + 1)):  # IDs collide rarely (10⁶ serials a place and year): never loop forever
        if len(people) == count:
            break
        person = synthetic_citizen(rng, born=born)
        if person.id_number not in seen:
            seen.add(person.id_number)
            people.append(person)
    if len(people) < count:
        raise ValueError(f"could not draw {count} citizens with distinct IDs")
    return people
