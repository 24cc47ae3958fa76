"""Finding a model's class from a name a person wrote: a folder name, a ``watch:`` key.

One set of rules for every place that takes a class name (:mod:`models.evaluate` folders, the events
sink's ``watch``, ``vigil config check``). A reference matches a class when it is

* the class's full name or any of its comma-separated synonyms, compared case-insensitively with
  ``_`` read as a space (``Egyptian_cat``, ``motor_scooter``, ``tabby`` for ``tabby, tabby cat``);
* its index, alone or before its name (``287``, ``287_Egyptian_cat``), the index of the model's
  output as ``vigil models info`` and every result record give it;
* its WordNet id (``n02124075``) when the model's classes are the ImageNet-1k classes (with or without a
  background class 0).

A name that is one class's full name is that class, even where it is also a synonym inside another
class's name (``missile``, not ``projectile, missile``). A name that two classes share in full (ImageNet
has two ``crane`` classes, the bird and the machine), or only as synonyms, matches both;
:meth:`ClassNames.explain` says which index forms tell them apart. A name that matches nothing gets the
nearest class names as suggestions.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

_INDEXED = re.compile(r"(\d+)(?: (.+))?")
_WORDNET_ID = re.compile(r"n\d{8}")


def normalize(name: str) -> str:
    """``"Egyptian_cat "`` -> ``"egyptian cat"``: lower case, ``_`` as space, single spaces."""
    return " ".join(name.replace("_", " ").lower().split())


@cache
def synonyms(name: str) -> tuple[str, ...]:
    """The normalised comma-separated parts of a class name (``"tabby, tabby cat"`` -> both)."""
    return tuple(s for s in (normalize(part) for part in name.split(",")) if s)


def is_wordnet_id(text: str) -> bool:
    """``n02124075``: an ``n`` and eight digits."""
    return _WORDNET_ID.fullmatch(normalize(text)) is not None


def names_class(key: str, name: str) -> bool:
    """Whether normalised ``key`` is class ``name`` in full or one of its synonyms."""
    return key == normalize(name) or key in synonyms(name)


@dataclass(frozen=True)
class ClassRef:
    """A reference to a class that needs no class list: a name or synonym, an index, or both.

    What the events sink's ``watch`` keys become, matched against each result's labels (which carry
    index and name). WordNet ids need the model's class list: :meth:`ClassNames.find` takes them.
    """

    text: str
    index: int | None
    key: str | None  # normalised name; None for a bare index

    @classmethod
    def parse(cls, text: str) -> ClassRef:
        key = normalize(text)
        indexed = _INDEXED.fullmatch(key)
        if indexed is not None:
            return cls(text, int(indexed.group(1)), indexed.group(2))
        return cls(text, None, key)

    def matches(self, index: int, name: str) -> bool:
        if self.index is not None and index != self.index:
            return False
        return self.key is None or names_class(self.key, name)


@cache
def imagenet_wordnet() -> tuple[tuple[str, str], ...]:
    """ImageNet-1k in index order: (WordNet id, synonyms) for each of the 1000 classes."""
    text = resources.files("pipeline.core").joinpath("data/imagenet_1000_wordnet.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((wnid, lemma) for wnid, lemma in rows)


def _wordnet_index(names: Sequence[str]) -> dict[str, int]:
    """WordNet id -> model index when ``names`` are the ImageNet-1k classes (at least 99% agree), else {}."""
    offset = 1 if len(names) == 1001 and normalize(names[0]) == "background" else 0
    if len(names) - offset != 1000:
        return {}
    table = imagenet_wordnet()
    agree = sum(bool(set(synonyms(names[i + offset])) & set(synonyms(lemma))) for i, (_, lemma) in enumerate(table))
    return {wnid: i + offset for i, (wnid, _) in enumerate(table)} if agree >= 990 else {}


class ClassNames:
    """A model's class names (index i is output i), searchable by any of the forms above."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._by_name: dict[str, set[int]] = {}
        self._by_full_name: dict[str, set[int]] = {}
        for i, name in enumerate(self.names):
            self._by_full_name.setdefault(normalize(name), set()).add(i)
            for key in {normalize(name), *synonyms(name)}:
                self._by_name.setdefault(key, set()).add(i)
        self._wordnet = _wordnet_index(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def find(self, ref: str) -> tuple[int, ...]:
        """Every class ``ref`` matches, lowest index first: none, one, or several (an ambiguous name)."""
        if is_wordnet_id(ref):
            index = self._wordnet.get(normalize(ref))
            return (index,) if index is not None else ()
        parsed = ClassRef.parse(ref)
        if parsed.index is not None:
            ok = parsed.index < len(self.names) and parsed.matches(parsed.index, self.names[parsed.index])
            return (parsed.index,) if ok else ()
        exact = self._by_full_name.get(parsed.key or "", set())
        if len(exact) == 1:  # one class is called exactly this: it wins over synonyms inside other classes' names
            return tuple(exact)
        return tuple(sorted(self._by_name.get(parsed.key or "", ())))

    def index_form(self, index: int) -> str:
        """The unambiguous way to write class ``index``: ``518_crane``."""
        first = self.names[index].split(",")[0].strip()
        return f"{index}_{'_'.join(first.split())}" if first else str(index)

    def nearest(self, ref: str, n: int = 3) -> list[str]:
        """Up to ``n`` class names closest to ``ref`` (by spelling), as the model names them."""
        keys = difflib.get_close_matches(normalize(ref), list(self._by_name), n=n, cutoff=0.6)
        return list(dict.fromkeys(self.names[min(self._by_name[k])] for k in keys))

    def explain(self, ref: str, *, wordnet: bool = True) -> str:
        """Why ``ref`` does not name exactly one class, and what to write instead ("" when it does);
        ``wordnet=False`` where WordNet ids are not taken."""
        found = self.find(ref)
        if len(found) == 1:
            return ""
        if found:
            forms = ", ".join(f"{self.index_form(i)} ({self.names[i]!r})" for i in found)
            wordnet_ids = {i: w for w, i in self._wordnet.items()}
            ids = " or the WordNet ids " + ", ".join(wordnet_ids[i] for i in found) \
                if wordnet and all(i in wordnet_ids for i in found) else ""
            return f"{ref!r} names {len(found)} classes of the model: write {forms}{ids}"
        near = self.nearest(ref)
        hint = f"; nearest: {', '.join(repr(n) for n in near)}" if near else ""
        return f"{ref!r} is not a class of the model ({len(self.names)} classes){hint}"
