"""Grounding: does the passage a FAQ answer quotes answer the question? The served index, measured.

Two question sets on the FAQ corpus: the paraphrases (:mod:`corpora.paraphrases`), worded
without the answer's distinctive words, and the FAQ's own short headings asked as questions,
where the words match by construction (BM25's home ground, so fusing must not lose there).
hit@1 counts a question when the first passage the index returns answers it; that is the
passage the bot primes with and quotes. Each index is built once and timed per question.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from corpora.paraphrases import FAQ_PARAPHRASES, MASK_QUESTION, Paraphrase
from corpora.passages import PassageIndex
from corpora.registry import CorpusMissing, load_corpus

HEADING_MAX_WORDS = 8  # a first line this short reads as a question's heading (as in tests/corpora/test_passages.py)


def heading_questions(index: PassageIndex) -> list[tuple[str, int]]:
    """The FAQ's own short headings, each with the index of the passage it heads."""
    out = []
    for p in index.passages:
        first = p.text.split("\n")[0]
        if "\n" in p.text and len(first.split()) <= HEADING_MAX_WORDS:
            out.append((first, p.index))
    return out


def _quoted(index: PassageIndex, question: str) -> tuple[str | None, float]:
    """The passage the bot would quote for ``question`` (None: none), and the search's seconds."""
    start = time.perf_counter()
    hits = index.search(question, 1)
    return (hits[0].passage.text if hits else None), time.perf_counter() - start


def score(index: PassageIndex, paraphrases: tuple[Paraphrase, ...] = FAQ_PARAPHRASES) -> dict:
    """hit@1 of one index on the paraphrases, the headings and the mask question, with the questions it missed."""
    seconds: list[float] = []
    missed: list[dict] = []
    hits = 0
    for q in paraphrases:
        text, took = _quoted(index, q.question)
        seconds.append(took)
        if text is not None and q.answered_by(text):
            hits += 1
        else:
            missed.append({"question": q.question, "quoted": (text or "")[:120]})
    headings = heading_questions(index)
    heading_hits = 0
    for question, target in headings:
        found = index.search(question, 1)
        heading_hits += bool(found) and found[0].passage.index == target
    mask, _ = _quoted(index, MASK_QUESTION.question)
    return {
        "paraphrase_hits": hits, "paraphrases": len(paraphrases), "paraphrase_hit_at_1": hits / len(paraphrases),
        "heading_hits": heading_hits, "headings": len(headings),
        "heading_hit_at_1": heading_hits / len(headings) if headings else None,
        "mask_question_answered": mask is not None and MASK_QUESTION.answered_by(mask),
        "mask_question_quoted": (mask or "")[:120],
        "ms_per_search": 1000 * sum(seconds) / len(seconds),
        "missed": missed,
    }


def measure(say: Callable[[str], None] = print) -> dict:
    """The FAQ's passage index (what the bot builds), scored in this run; a note instead if the corpus is missing."""
    try:
        text = load_corpus("faq").text
    except CorpusMissing as exc:
        return {"skipped": f"the faq corpus is not on this machine: {exc}"}
    say("grounding: bm25")
    start = time.perf_counter()
    index = PassageIndex.from_text(text)
    build = time.perf_counter() - start
    return {"bm25": {"passages": len(index), "build_s": build, **score(index)}}


def report_lines(results: dict) -> list[str]:
    """The grounding table for bench.md: hit@1 of the served index against the target."""
    g = results.get("grounding")
    if not g:
        return []
    lines = ["", "## Grounding", ""]
    if "skipped" in g:
        return [*lines, f"Skipped: {g['skipped']}."]
    target = results.get("targets", {}).get("grounding_hit_at_1")
    r = g["bm25"]
    met = "" if target is None else (" (met)" if r["paraphrase_hit_at_1"] >= target else " (missed)")
    lines += [f"Which FAQ passage a question quotes, on {r['passages']} passages: hit@1 is the share of questions "
              "whose first passage answers them. Paraphrases avoid the answer's distinctive words "
              "(corpora/paraphrases.py); headings are the FAQ's own, asked as they stand"
              + (f". Target: paraphrase hit@1 at least {target:.0%}." if target is not None else "."), "",
              "| index | paraphrase hit@1 | heading hit@1 | mask question | ms per search | build s |",
              "|---|---|---|---|---|---|",
              f"| BM25 (served) | {r['paraphrase_hits']}/{r['paraphrases']} ({r['paraphrase_hit_at_1']:.0%}){met} | "
              f"{r['heading_hits']}/{r['headings']} | {'answered' if r['mask_question_answered'] else 'missed'}"
              f" | {r['ms_per_search']:.2f} | {r['build_s']:.2f} |"]
    return lines
