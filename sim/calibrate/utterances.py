"""Synthetic shopper utterances for the fuzzy-routing stage, and ``normalize``.

Picture: a shopper means one of the canonical support questions (``where is
my order``) but types ``Wher is my ordr #48291??``.  :func:`make_utterances`
produces such texts from the canonical list, each labelled with the index of
the question it came from (or ``-1`` for off-topic text that matches nothing),
so a router can be scored against the truth.

Generation of one utterance (all randomness from the caller's
``numpy.random.Generator``; no global state):

1. with probability ``unmatched_share`` the utterance is off-topic: 3 to 8
   words drawn from :data:`OFF_TOPIC_WORDS`, a small separate word list
   (weather, recipes, football, ...; only a few function words are shared
   with the support questions); its label is ``-1``.  Otherwise a canonical index
   ``c`` is drawn (uniformly, or by ``weights``) and the text starts as
   ``questions[c]``.
2. typos: every character position ``i`` independently gets an error with
   probability ``typo_rate``; the error is one of insert (a letter before
   ``s[i]``), delete ``s[i]``, substitute ``s[i]`` (by a QWERTY neighbour),
   transpose ``s[i]`` with ``s[i+1]`` -- each with probability 1/4.  A word of
   ``L`` characters therefore carries ``Binomial(L, typo_rate)`` errors, so the
   expected edit distance to the canonical is about ``typo_rate * L``
   (a transposition costs 2 Levenshtein edits, an insert/delete/substitute 1).
3. with probability ``order_number_share`` an order number (5 digits, e.g.
   ``48291``) is added in one of the forms ``... order #48291``,
   ``... (order 48291)``, ``order #48291: ...``, ``... #48291``, or right after
   the word ``order`` when the question contains it (``where is my order
   #48291``).
4. with probability ``noise_share`` case and punctuation noise: capitalised
   first letter / ALL CAPS / random letter case, a trailing ``?``, ``??``,
   ``!``, ``...`` or ``?!``, an inserted comma, doubled spaces.

:func:`normalize` is what the router applies before matching (and what a
cache without routing would use as its key).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Placeholder that :func:`normalize` puts where an order number was.
ORDER_PLACEHOLDER = "<order>"

#: Off-topic words.  Mostly vocabulary no store support question uses; a few
#: function words (is, the, what, how, why, me, please) are shared on purpose,
#: so that off-topic texts are not trivially far from every question.
OFF_TOPIC_WORDS: tuple[str, ...] = (
    "weather",
    "tomorrow",
    "football",
    "score",
    "recipe",
    "pasta",
    "poem",
    "about",
    "cats",
    "dogs",
    "capital",
    "france",
    "movie",
    "tonight",
    "tell",
    "joke",
    "write",
    "song",
    "lyrics",
    "homework",
    "math",
    "translate",
    "spanish",
    "meaning",
    "life",
    "president",
    "election",
    "bitcoin",
    "horoscope",
    "dinner",
    "ideas",
    "vacation",
    "beach",
    "mountains",
    "guitar",
    "chords",
    "learn",
    "python",
    "code",
    "dragon",
    "story",
    "painting",
    "museum",
    "train",
    "schedule",
    "berlin",
    "sunset",
    "planets",
    "moon",
    "distance",
    "galaxy",
    "pizza",
    "dough",
    "yoga",
    "workout",
    "marathon",
    "chess",
    "opening",
    "garden",
    "tomatoes",
    "why",
    "sky",
    "blue",
    "is",
    "the",
    "a",
    "what",
    "how",
    "me",
    "please",
    "good",
)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _qwerty_neighbours() -> dict[str, str]:
    """Letters next to each letter on a QWERTY keyboard (same row left/right,
    and the row above/below at the same and next column)."""
    pos = {ch: (r, c) for r, row in enumerate(_QWERTY_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in pos.items():
        near = []
        for r2, c2 in ((r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)):
            if 0 <= r2 < len(_QWERTY_ROWS) and 0 <= c2 < len(_QWERTY_ROWS[r2]):
                near.append(_QWERTY_ROWS[r2][c2])
        out[ch] = "".join(near)
    return out


_NEIGHBOURS = _qwerty_neighbours()


@dataclass(frozen=True)
class Utterance:
    """One generated shopper text.

    ``canonical`` is the index into the question list it was made from, or
    ``-1`` for off-topic text that should match nothing.  ``typos`` is the
    number of typo operations applied (an upper bound on the edit distance
    they add, counting a transposition as 2), ``order_number`` the number
    inserted (or ``None``) and ``noisy`` whether case/punctuation noise was
    applied.
    """

    text: str
    canonical: int
    typos: int = 0
    order_number: str | None = None
    noisy: bool = False


# --------------------------------------------------------------------------
# normalisation

# An order number: 4+ digits, optionally announced by '#', 'no', 'nr', 'num',
# 'number' (with optional '.' and ':'), e.g. "#48291", "no. 48291",
# "number: 48291", "48291".  The word "order" itself is kept.
_ORDER_RE = re.compile(r"(?:#\s*|\b(?:no|nr|num|number)\.?\s*:?\s*)?(?<![\w])\d{4,}(?![\w])")
_SENTINEL = "\x00"
_NOT_WORD = re.compile(r"[^a-z0-9\x00 ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str, placeholder: str = ORDER_PLACEHOLDER) -> str:
    """Canonical form of a shopper text, applied before matching.

    Steps, in this order:

    1. Unicode NFKC and lowercase (``"ＷＨＥＲＥ"`` -> ``"where"``).
    2. Order numbers -> ``placeholder``: 4 or more digits standing alone,
       optionally preceded by ``#``, ``no``, ``nr``, ``num`` or ``number``
       (with optional ``.``/``:``), e.g. ``#48291``, ``no. 48291``,
       ``number: 48291``.  The word ``order`` before it is kept, so
       ``"where is my order #48291"`` -> ``"where is my order <order>"``.
       With ``placeholder=""`` the number disappears entirely -- that is what
       :func:`edit_distance.route` matches on, since the number is a slot of
       the question, not part of it.
    3. Apostrophes are deleted (``what's`` -> ``whats``); every other
       character outside ``[a-z0-9 ]`` becomes a space.
    4. Runs of whitespace collapse to one space; leading/trailing space goes.

    The canonical questions are already in this form (``normalize(q) == q``).
    Without routing, a cache keyed on ``normalize(text)`` still sees one key
    per distinct typo variant; with routing it sees the canonical question.
    """
    s = unicodedata.normalize("NFKC", text).lower()
    s = _ORDER_RE.sub(f" {_SENTINEL} ", s)
    s = s.replace("'", "").replace("\u2019", "")
    s = _NOT_WORD.sub(" ", s)
    s = _SPACES.sub(" ", s).strip()
    if placeholder:
        return s.replace(_SENTINEL, placeholder)
    return _SPACES.sub(" ", s.replace(_SENTINEL, "")).strip()


# --------------------------------------------------------------------------
# generation


def add_typos(text: str, rate: float, rng: np.random.Generator) -> tuple[str, int]:
    """Apply per-character typos at ``rate``; return ``(new_text, n_operations)``.

    Each position ``i`` of ``text`` independently gets, with probability
    ``rate``, one of (each 1/4): insert a random letter before ``text[i]``,
    delete ``text[i]``, substitute ``text[i]`` (QWERTY neighbour for letters,
    random letter otherwise), transpose ``text[i]`` and ``text[i+1]``
    (positions consumed by a transposition are not hit again).  Expected
    number of operations: ``rate * len(text)``.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"typo_rate must be in [0, 1], got {rate}")
    out: list[str] = []
    ops = 0
    n = len(text)
    hits = rng.random(n) < rate
    kinds = rng.integers(0, 4, size=n)
    i = 0
    while i < n:
        ch = text[i]
        if not hits[i]:
            out.append(ch)
            i += 1
            continue
        kind = int(kinds[i])
        if kind == 3 and i + 1 >= n:
            kind = 2  # nothing to transpose with at the end: substitute instead
        ops += 1
        if kind == 0:  # insert
            out.append(_LETTERS[int(rng.integers(26))])
            out.append(ch)
            i += 1
        elif kind == 1:  # delete
            i += 1
        elif kind == 2:  # substitute
            pool = _NEIGHBOURS.get(ch, _LETTERS)
            new = pool[int(rng.integers(len(pool)))]
            if new == ch:
                new = _LETTERS[(_LETTERS.index(ch) + 1) % 26] if ch in _LETTERS else "x"
            out.append(new)
            i += 1
        else:  # transpose
            out.append(text[i + 1])
            out.append(ch)
            i += 2
    return "".join(out), ops


def _order_number(rng: np.random.Generator) -> str:
    return str(int(rng.integers(10_000, 100_000)))


def add_order_number(text: str, number: str, rng: np.random.Generator) -> str:
    """Put ``number`` into ``text`` in one of five forms (uniform among those
    that apply): appended ``" order #N"``, appended ``" (order N)"``,
    prefixed ``"order #N: "``, appended ``" #N"``, or ``"#N"`` right after the
    first word ``order`` of the text (only when the text contains it)."""
    forms = ["append_order_hash", "append_paren", "prefix", "append_hash"]
    words = text.split(" ")
    if "order" in words:
        forms.append("after_order")
    form = forms[int(rng.integers(len(forms)))]
    if form == "append_order_hash":
        return f"{text} order #{number}"
    if form == "append_paren":
        return f"{text} (order {number})"
    if form == "prefix":
        return f"order #{number}: {text}"
    if form == "append_hash":
        return f"{text} #{number}"
    k = words.index("order")
    return " ".join([*words[: k + 1], f"#{number}", *words[k + 1 :]])


def add_noise(text: str, rng: np.random.Generator) -> str:
    """Case and punctuation noise (nothing :func:`normalize` does not undo):
    one case style (unchanged / capitalised / ALL CAPS / each letter upper
    with prob. 0.15), then a trailing mark (none, ``?``, ``??``, ``!``,
    ``...``, ``?!``), then with prob. 0.3 a comma after a random word and with
    prob. 0.2 a doubled space."""
    case = int(rng.integers(4))
    if case == 1:
        text = text[:1].upper() + text[1:]
    elif case == 2:
        text = text.upper()
    elif case == 3:
        up = rng.random(len(text)) < 0.15
        text = "".join(c.upper() if u else c for c, u in zip(text, up))
    words = text.split(" ")
    if len(words) > 2 and rng.random() < 0.3:
        k = int(rng.integers(len(words) - 1))
        words[k] = words[k] + ","
    if len(words) > 2 and rng.random() < 0.2:
        k = int(rng.integers(len(words) - 1))
        words[k] = words[k] + " "
    text = " ".join(words)
    marks = ("", "?", "??", "!", "...", "?!")
    return text + marks[int(rng.integers(len(marks)))]


def off_topic_text(rng: np.random.Generator, words: Sequence[str] = OFF_TOPIC_WORDS) -> str:
    """3 to 8 words drawn with replacement from ``words``, space-joined."""
    k = int(rng.integers(3, 9))
    idx = rng.integers(len(words), size=k)
    return " ".join(words[int(i)] for i in idx)


def make_utterances(
    questions: Sequence[str],
    n: int,
    rng: np.random.Generator,
    typo_rate: float = 0.03,
    order_number_share: float = 0.3,
    noise_share: float = 0.3,
    unmatched_share: float = 0.1,
    weights: Sequence[float] | np.ndarray | None = None,
) -> list[Utterance]:
    """``n`` labelled shopper utterances made from ``questions``.

    Per utterance: off-topic (label ``-1``) with probability
    ``unmatched_share``; else canonical index ``c ~ weights`` (uniform when
    ``None``; normalised to sum 1), text ``questions[c]`` with typos at
    ``typo_rate`` per character, an order number with probability
    ``order_number_share`` and case/punctuation noise with probability
    ``noise_share`` (see the module docstring).  Off-topic texts get the
    same typo/order/noise treatment, so they cannot be told apart by form.
    Deterministic for a given generator state.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not questions:
        raise ValueError("questions must not be empty")
    for name, v in (
        ("order_number_share", order_number_share),
        ("noise_share", noise_share),
        ("unmatched_share", unmatched_share),
    ):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    p: np.ndarray | None = None
    if weights is not None:
        p = np.asarray(weights, dtype=float)
        if p.shape != (len(questions),) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError("weights must be non-negative, one per question, with a positive sum")
        p = p / p.sum()
    out: list[Utterance] = []
    for _ in range(n):
        if rng.random() < unmatched_share:
            c = -1
            base = off_topic_text(rng)
        else:
            c = int(rng.choice(len(questions), p=p)) if p is not None else int(rng.integers(len(questions)))
            base = questions[c]
        text, ops = add_typos(base, typo_rate, rng)
        number = None
        if rng.random() < order_number_share:
            number = _order_number(rng)
            text = add_order_number(text, number, rng)
        noisy = bool(rng.random() < noise_share)
        if noisy:
            text = add_noise(text, rng)
        out.append(Utterance(text=text, canonical=c, typos=ops, order_number=number, noisy=noisy))
    return out


def load_questions(path: str) -> list[str]:
    """Non-empty lines of ``path``, stripped, in file order."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]
