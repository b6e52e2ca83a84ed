"""The small closed world the synthetic tasks talk about: people and what is true of them.

Every relation is one sentence template plus one question template, and the answer is always a
span copied verbatim from the sentence. That keeps the tasks learnable by a tiny model while still
needing two skills: find the right sentence (name AND relation must match), then copy the answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES: tuple[str, ...] = (
    "Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jade", "Kai", "Lena",
    "Milo", "Nora", "Omar", "Pia", "Quin", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Xena",
    "Yara", "Zane", "Alba", "Bo", "Cleo", "Dev", "Edda", "Finn", "Gia", "Hugo", "Iris", "Jon",
    "Kira", "Leo", "Mara", "Ned", "Olga", "Paul", "Rita", "Saul", "Tess", "Ugo", "Vera", "Will",
)  # fmt: skip

CITIES: tuple[str, ...] = (
    "Paris", "Lima", "Oslo", "Cairo", "Tokyo", "Rome", "Berlin", "Madrid", "Dublin", "Quito",
    "Seoul", "Delhi", "Vienna", "Prague", "Lisbon", "Athens", "Nairobi", "Havana", "Hanoi",
    "Bogota", "Denver", "Boston", "Toronto", "Sydney", "Perth", "Porto", "Milan", "Zurich",
    "Warsaw", "Riga", "Kyoto", "Dakar",
)  # fmt: skip

COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white",
    "grey", "teal", "gold", "silver",
)  # fmt: skip

# Consonant-initial so "owns a X" / "works as a X" never needs "an".
OBJECTS: tuple[str, ...] = (
    "lamp", "kettle", "bicycle", "guitar", "camera", "piano", "violin", "tent", "kite", "sofa",
    "radio", "drum", "boat", "clock", "mirror", "rug", "teapot", "laptop", "scooter", "ladder",
    "candle", "basket", "wallet", "hammer", "saddle", "globe", "vase", "piano stool", "toaster",
    "telescope",
)  # fmt: skip

JOBS: tuple[str, ...] = (
    "baker", "nurse", "pilot", "teacher", "farmer", "doctor", "painter", "lawyer", "chef",
    "dentist", "tailor", "writer", "singer", "banker", "plumber", "judge", "cook", "guard",
    "sailor", "miner",
)  # fmt: skip


@dataclass(frozen=True)
class Relation:
    """One kind of fact: how it is said, how it is asked, and what values it takes."""

    name: str
    sentence: str  # format string with {person} and {value}
    question: str  # format string with {person}

    def sample_value(self, rng: random.Random) -> str:
        return _VALUE_SAMPLERS[self.name](rng)


_VALUE_SAMPLERS = {
    "city": lambda rng: rng.choice(CITIES),
    "colour": lambda rng: rng.choice(COLOURS),
    "age": lambda rng: str(rng.randint(5, 95)),
    "object": lambda rng: rng.choice(OBJECTS),
    "job": lambda rng: rng.choice(JOBS),
    "pets": lambda rng: str(rng.randint(2, 9)),
}

RELATIONS: tuple[Relation, ...] = (
    Relation("city", "{person} lives in {value}.", "Where does {person} live?"),
    Relation("colour", "{person}'s favourite colour is {value}.", "What is {person}'s favourite colour?"),
    Relation("age", "{person} is {value} years old.", "How old is {person}?"),
    Relation("object", "{person} owns a {value}.", "What does {person} own?"),
    Relation("job", "{person} works as a {value}.", "What is {person}'s job?"),
    Relation("pets", "{person} has {value} cats.", "How many cats does {person} have?"),
)

RELATIONS_BY_NAME: dict[str, Relation] = {r.name: r for r in RELATIONS}


@dataclass(frozen=True)
class Fact:
    person: str
    relation: Relation
    value: str

    @property
    def sentence(self) -> str:
        return self.relation.sentence.format(person=self.person, value=self.value)

    @property
    def question(self) -> str:
        return self.relation.question.format(person=self.person)


def random_fact(rng: random.Random, person: str | None = None, relation: Relation | None = None) -> Fact:
    person = person or rng.choice(NAMES)
    relation = relation or rng.choice(RELATIONS)
    return Fact(person, relation, relation.sample_value(rng))
