"""The template sentences of the paper's probing experiment (``docs/text.md``): cartesian products of word lists,
the label the product of the words' signs, i.e. the sentiment of the one label adjective, whose position varies.

Every word but the label adjective has sign +1 (the distractors ``nice.``/``dreadful.`` of the city clause too), so
``y`` is the label adjective's sign. ``""`` in a list is the empty choice (the optional colour, adverb).
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

ADJECTIVE = "adjective"  # the slot of the label adjective (J0) in every template

# ----- the word lists (docs/text.md lists them) ------------------------------------------------------------------
CITY = [("The city is", 1)]
CITY_SIZE = [("nice.", 1), ("dreadful.", 1), ("clean.", 1), ("dirty.", 1)]  # distractors: their sign is not the label
QUESTION = [("Hello, how are you?", 1)]
GREETING = [("Good evening,", 1)]
VERB = [("is", 1)]
TRAIN_FILLERS = dict(pronoun=[("my", 1), ("his", 1), ("her", 1), ("our", 1)],
                     colour=[("", 1), ("blue", 1), ("orange", 1), ("beige", 1), ("green", 1), ("red", 1)],
                     animal=[("dog", 1), ("owl", 1), ("cow", 1)],
                     adverb=[("", 1), ("very", 1), ("extremely", 1)],
                     size=[("tiny", 1), ("giant", 1)])
TEST_FILLERS = dict(pronoun=[("their", 1), ("your", 1)],
                    colour=[("purple", 1), ("gray", 1)],
                    animal=[("cat", 1), ("eagle", 1), ("goat", 1)],
                    adverb=[("", 1), ("especially", 1)],
                    size=[("big", 1), ("little", 1), ("mini", 1), ("enormous", 1)])
ADJECTIVES = [("nice", 1), ("mean", -1), ("cute", 1), ("dreadful", -1), ("aggressive", -1), ("delightful", 1)]
OOD_ADJECTIVES = [("lovely", 1), ("nasty", -1), ("charming", 1), ("foul", -1)]


def _order_a(f: dict, adjectives: list, head: list) -> list:
    """``<head> <pronoun> <colour> <animal> is <adverb> <adjective>``: the adjective last."""
    return [*head, ("pronoun", f["pronoun"]), ("colour", f["colour"]), ("animal", f["animal"]), ("verb", VERB),
            ("adverb", f["adverb"]), (ADJECTIVE, adjectives)]


def _order_b(f: dict, adjectives: list, head: list) -> list:
    """``<head> <pronoun> <colour> <adjective> <animal> is <adverb> <size>``: the adjective before the noun."""
    return [*head, ("pronoun", f["pronoun"]), ("colour", f["colour"]), (ADJECTIVE, adjectives), ("animal", f["animal"]),
            ("verb", VERB), ("adverb", f["adverb"]), ("size", f["size"])]


_CITY_HEAD = [("city", CITY), ("city_size", CITY_SIZE)]
_GREETING_HEAD = [*_CITY_HEAD, ("greeting", GREETING)]
_QUESTION_HEAD = [("question", QUESTION), ("greeting", GREETING)]

# split -> its templates (each a list of (slot, words)); train in two word orders, the others change one thing each
TEMPLATES = {
    "train": [_order_a(TRAIN_FILLERS, ADJECTIVES, _CITY_HEAD), _order_b(TRAIN_FILLERS, ADJECTIVES, _CITY_HEAD)],
    "test": [_order_a(TEST_FILLERS, ADJECTIVES, _CITY_HEAD), _order_b(TEST_FILLERS, ADJECTIVES, _CITY_HEAD)],
    "ood_tokens": [_order_a(TEST_FILLERS, OOD_ADJECTIVES, _GREETING_HEAD),
                   _order_b(TEST_FILLERS, OOD_ADJECTIVES, _GREETING_HEAD)],
    "ood_structure": [_order_a(TEST_FILLERS, ADJECTIVES, _QUESTION_HEAD)],
    "ood_both": [_order_a(TEST_FILLERS, OOD_ADJECTIVES, _QUESTION_HEAD)],
}
SPLITS = tuple(TEMPLATES)
SPLIT_TITLES = {"train": "train", "test": "test", "ood_tokens": "OOD tokens", "ood_structure": "OOD structure",
                "ood_both": "OOD structure + tokens"}


@dataclass(frozen=True)
class Sentences:
    """Sentences of every split, concatenated: ``text`` (N,), label ``y`` in {-1, +1} (N,), the character span
    ``[start, end)`` of the label adjective (N, 2), and ``split`` (N,) naming each sentence's split."""

    text: list
    y: np.ndarray
    adjective_span: np.ndarray
    split: np.ndarray

    def __len__(self) -> int:
        return len(self.text)

    def index(self, split: str) -> np.ndarray:
        """The rows of one split."""
        return np.flatnonzero(self.split == split)

    def digest(self) -> str:
        """SHA-256 of the sentences and their labels: the sentence half of the hidden-state cache key."""
        h = hashlib.sha256()
        for s, y, sp in zip(self.text, self.y.tolist(), self.split.tolist()):
            h.update(f"{sp}\t{y}\t{s}\n".encode())
        return h.hexdigest()


def expand(template: list) -> tuple[list, list, list]:
    """The cartesian product of a template's word lists: sentences (words joined by one space, empty words dropped),
    labels (the product of the words' signs) and the label adjective's character span."""
    texts, labels, spans = [], [], []
    slots = [slot for slot, _ in template]
    for choice in itertools.product(*(words for _, words in template)):
        parts, pos, span = [], 0, None
        for slot, (word, _) in zip(slots, choice):
            if not word:
                continue
            start = pos + (1 if parts else 0)
            if slot == ADJECTIVE:
                span = (start, start + len(word))
            parts.append(word)
            pos = start + len(word)
        texts.append(" ".join(parts))
        labels.append(int(np.prod([sign for _, sign in choice])))
        spans.append(span)
    return texts, labels, spans


def build(splits: tuple = SPLITS) -> Sentences:
    """All sentences of ``splits`` (default: every split, train first)."""
    text, y, spans, names = [], [], [], []
    for split in splits:
        for template in TEMPLATES[split]:
            t, lab, sp = expand(template)
            text += t
            y += lab
            spans += sp
            names += [split] * len(t)
    return Sentences(text, np.asarray(y, np.int8), np.asarray(spans, np.int64), np.asarray(names))
