"""Synthetic citizens: one generator, its pools as data, IDs that agree with their holders."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest
import yaml

from pipeline.domain.extract import check_id
from pipeline.national.citizens import (
    GENDERS,
    SyntheticCitizen,
    distinct_citizens,
    parse_pools,
    personal_id,
    pools,
    synthetic_citizen,
)
from pipeline.training import samples, synth


def test_citizens_agree_with_their_ids_and_come_from_the_pools() -> None:
    rng = random.Random(1)
    people = [synthetic_citizen(rng, born=(1950, 2006)) for _ in range(400)]
    p = pools()
    for c in people:
        surname, *middle, given = c.full_name.split()
        assert surname in p.surnames and given in p.given[c.gender]
        assert len(middle) in p.middle_name_counts and set(middle) <= set(p.middle[c.gender])
        assert date(1950, 1, 1) <= c.birth < date(2006, 1, 1)
        assert c.place in p.places and c.id_number.startswith(c.place.code)
        assert check_id(c.id_number, c.date_of_birth, c.gender) == 1.0
        assert c.address == f"{c.street}, {c.place.commune}, {c.place.district}, {c.place.province}"
    assert {c.gender for c in people} == set(GENDERS)
    assert any(c.birth.year >= 2000 for c in people) and any(c.birth.year < 2000 for c in people)
    again = random.Random(1)
    assert [synthetic_citizen(again, born=(1950, 2006)) for _ in range(400)] == people


def test_personal_id_layout() -> None:
    assert personal_id("079", "Nữ", date(1982, 12, 7), 424604) == "079182424604"
    assert personal_id("001", "Nam", date(2003, 1, 5), 12) == "001203000012"
    assert personal_id("048", "Nữ", date(2010, 6, 1), 999999) == "048310999999"


def test_training_and_samples_draw_the_same_people() -> None:
    # synth and samples shape the generator's citizen for their templates; they draw nobody of their own.
    c = synthetic_citizen(random.Random(7))
    t = synth.person(random.Random(7))
    assert (t["name"], t["id"], t["dob"], t["gender"], t["address"]) == (
        c.full_name, c.id_number, c.date_of_birth, c.gender, c.address
    )
    s = samples._person(random.Random(7))
    c = synthetic_citizen(random.Random(7), born=(1960, 2002))
    assert (s["full_name"], s["id_number"], s["date_of_birth"], s["address"]) == (
        c.full_name, c.id_number, c.date_of_birth, c.address
    )


def test_distinct_citizens_skip_taken_ids_and_never_loop_forever() -> None:
    first = synthetic_citizen(random.Random(3), born=(1950, 2006))
    people = distinct_citizens(random.Random(3), 50, born=(1950, 2006), taken=[first.id_number])
    assert len({c.id_number for c in people}) == 50 and first.id_number not in {c.id_number for c in people}

    class Stuck(random.Random):
        """Draws the same citizen every time."""

        def random(self) -> float:
            return 0.0

        def getrandbits(self, k: int) -> int:
            return 0

    assert isinstance(synthetic_citizen(Stuck(), born=(1950, 2006)), SyntheticCitizen)
    with pytest.raises(ValueError, match="distinct IDs"):
        distinct_citizens(Stuck(), 2, born=(1950, 2006))


def test_birth_years_must_run_forwards() -> None:
    with pytest.raises(ValueError):
        synthetic_citizen(random.Random(0), born=(2000, 1990))


def _bundled() -> dict[str, Any]:
    from importlib.resources import files

    data: dict[str, Any] = yaml.safe_load((files("pipeline") / "data" / "citizen_pools.yaml").read_text("utf-8"))
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(surnames=[]), "surnames"),
        (lambda d: d["given"].pop("Nữ"), "given must have exactly the genders"),
        (lambda d: d["middle"].update(Nam=["Văn", ""]), "middle.Nam"),
        (lambda d: d.update(middle_name_counts=[1, 0]), "middle_name_counts"),
        (lambda d: d["places"].append(["79", "Thành phố Hồ Chí Minh", "Quận 3", "Phường 1"]), "3 digits"),
        (lambda d: d["places"].append(["079", "Quận 3"]), "a place is"),
        (lambda d: d.update(places=[]), "places"),
    ],
)
def test_broken_pools_say_what_is_wrong(change: Any, message: str) -> None:
    spec = _bundled()
    parse_pools(spec)
    change(spec)
    with pytest.raises(ValueError, match=message):
        parse_pools(spec)
