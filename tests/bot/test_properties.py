"""Property-based checks (hypothesis) over the store, the action layer and the reply layer.

Whatever arrives (any Unicode: lone surrogates, controls, bidirectional overrides, emoji, texts of
10,000+ characters; any number: NaN, infinities, huge, negative; values of the wrong type), no
exception but a :class:`~bot.core.refusals.Refusal` escapes, the database accepts the next write, what is
stored is clean, and what would be posted is within Discord's limit and safe. The example counts are
bounded so the whole module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import math
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Limits
from bot.core import answers
from bot.core.refusals import Refusal
from bot.core.render import render_reply
from bot.core.replies import make_request
from bot.core.sanitise import BIDI_CONTROLS, clean_text, quote
from bot.discord_app.interactions import postable
from bot.discord_app.options import BadOption, check_options
from bot.discord_limits import MESSAGE_CHARS
from bot.store import Store, StoreError, open_store
from corpora.registry import CORPORA

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPECIAL = st.sampled_from([
    "\x00", "\x1b[31m", "\u202e", "\u2066", "\u2069", "\ud800", "\udcff", "\ud83d\ude00", "\U0001f409", "\r\n",
    "\u200d", "\ufeff", "@everyone", "@here", "<@123>", "<@&4>", "<#5>", "[click](https://e.example)",
    "https://e.example/x", "`", "**", "> ", "# ", "\n",
])
CHARS = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs", "Cc", "Cf"]))
SHORT_TEXT = st.lists(st.one_of(st.text(CHARS, max_size=8), SPECIAL), max_size=40).map("".join)
PIECE = st.lists(SPECIAL | st.text(CHARS, min_size=1, max_size=5), min_size=1, max_size=6).map("".join)
LONG_TEXT = st.builds(lambda piece, n: piece * n, PIECE, st.integers(300, 1500))  # up to ~10-20k characters
TEXT = st.one_of(SHORT_TEXT, SHORT_TEXT, LONG_TEXT)
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80),
                    st.sampled_from([0, 2, 2.0000001, -0.0, 1e308, -1e-308]))
WRONG = st.one_of(st.none(), st.booleans(), TEXT, st.lists(st.integers(), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
SNOWFLAKE = st.integers(0, 2**63 - 1)
SQLITE_INT = range(-(2**63), 2**63)


def assert_clean(text: str) -> None:
    """No character the sanitiser removes: controls (but newline and tab), lone surrogates, bidi controls."""
    bad = [c for c in text if c in BIDI_CONTROLS or (unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t")]
    assert not bad, f"unsafe characters {bad!r} in {text[:200]!r}"
    text.encode("utf-8")


def assert_postable(text: str) -> None:
    """Within Discord's limit and clean."""
    assert 0 < len(text) <= MESSAGE_CHARS
    assert_clean(text)


def assert_no_mentions(text: str) -> None:
    """No mention that even looks like a ping (Discord is told to ping nobody anyway)."""
    for raw in ("@everyone", "@here", "<@1", "<@&4", "<#5"):
        assert raw not in text, f"{raw!r} in {text[:200]!r}"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture
def loop_and_store(tmp_path: Path):
    """One event loop and one database for all of a test's examples, so every example follows the last."""
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(tmp_path / "prop.db", busy_timeout_s=5))
    try:
        yield loop, store
    finally:
        loop.run_until_complete(store.close())
        loop.close()


async def _act(store: Store, action: str, guild: int, user: int, corpus: object, text: object, value: object) -> str:
    limits = Limits(max_contribution_chars=20_000)
    if action == "contribute":
        return (await answers.contribute(store, guild, 7, user, corpus, text, "modal", limits)).text
    if action == "temp":
        return (await answers.temp(store, guild, user, value)).text
    if action == "optout":
        return (await answers.optout(store, guild, user, undo=bool(value))).text
    if action == "listen":
        return (await answers.listen(store, guild, 7, corpus)).text
    return (await answers.forget(store, guild, user)).text


def test_the_actions_and_the_store_take_anything_and_the_next_write_works(loop_and_store):
    loop, store = loop_and_store

    @EXAMPLES
    @given(
        action=st.sampled_from(["contribute", "temp", "optout", "listen", "forget"]),
        guild=st.one_of(SNOWFLAKE, st.none(), st.integers(-(2**80), 2**80)),
        user=st.one_of(SNOWFLAKE, st.integers(-(2**80), 2**80)),
        corpus=st.one_of(st.sampled_from(list(CORPORA)), TEXT, WRONG),
        text=st.one_of(TEXT, TEXT, WRONG),
        value=st.one_of(NUMBERS, WRONG),
    )
    def check(action, guild, user, corpus, text, value):
        async def run() -> None:
            try:
                said = await _act(store, action, guild, user, corpus, text, value)
            except Refusal as refusal:
                said = refusal.message
            except StoreError:  # only for ids SQLite cannot hold (Discord's never are)
                assert guild not in SQLITE_INT or user not in SQLITE_INT
                said = None
            if said is not None:
                assert_clean(said)  # what the person sees quotes nothing raw...
                assert_no_mentions(said)
                assert_postable(postable(said))  # ...and is posted within limits
            await store.set_temperature(1, 1, 0.5)  # the database takes the next write
            rows = await store.fetchall("SELECT text FROM contributions ORDER BY id DESC LIMIT 1")
            if rows:
                assert_clean(rows[0][0])
                assert clean_text(rows[0][0]) == (rows[0][0], 0)
            for (t,) in await store.fetchall("SELECT temperature FROM user_settings"):
                assert t is None or (math.isfinite(t) and 0 <= t <= 2)

        loop.run_until_complete(run())

    check()


def test_the_store_takes_any_text_and_id_and_stays_usable(loop_and_store):
    loop, store = loop_and_store

    @EXAMPLES
    @given(text=TEXT, guild=st.one_of(SNOWFLAKE, st.integers(-(2**80), 2**80)), corpus=TEXT)
    def check(text, guild, corpus):
        async def run() -> None:
            try:
                cid = await store.add_contribution(guild, 1, 2, corpus, text, "cli")
            except StoreError as exc:  # an id SQLite cannot hold, or a corpus name UTF-8 cannot (actions refuse both)
                assert guild not in SQLITE_INT or not _encodable(corpus)
                assert "\n" not in str(exc)
            else:
                (stored,) = await store.fetchone("SELECT text FROM contributions WHERE id = ?", (cid,))
                assert stored == clean_text(text)[0]
            await store.set_opt_out(1, 2, True)

        loop.run_until_complete(run())

    check()


@EXAMPLES
@given(
    corpus=st.sampled_from(list(CORPORA)),
    prompt=TEXT,
    temperature=st.one_of(st.none(), NUMBERS),
    user_default=st.one_of(st.none(), st.floats(0, 2)),
    length=st.one_of(st.none(), st.integers(-(10**12), 10**12)),
    continuation=st.one_of(TEXT, st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=2500)),
    finish=st.sampled_from([None, "stop", "length", "cancelled"]),
)
def test_a_request_is_checked_and_its_reply_is_safe_to_post(
    corpus, prompt, temperature, user_default, length, continuation, finish
):
    limits = Limits()
    try:
        request = make_request(corpus, prompt, limits, temperature=temperature, user_default=user_default,
                               length=length)
    except Refusal as refusal:
        assert_postable(postable(refusal.message))
        return
    assert math.isfinite(request.temperature) and 0 <= request.temperature <= 2
    assert 1 <= request.length <= limits.max_length
    text = render_reply(corpus, request.prompt, continuation, finish)
    assert_postable(text)
    assert_no_mentions(text)
    assert "](" not in text and "://" not in text, "a link would show in the bot's message"


@EXAMPLES
@given(text=st.one_of(TEXT, st.text(max_size=5000)))
def test_whatever_is_sent_is_postable_and_quotes_are_short(text):
    assert_postable(postable(text))
    quoted = quote(text)
    assert_clean(quoted)
    assert len(quoted) <= 60 and "](" not in quoted and "://" not in quoted and "@everyone" not in quoted


def _commands():
    from bot.discord_app.cogs.contributions import Contributions
    from bot.discord_app.cogs.general import General
    from bot.discord_app.cogs.generate import build_command

    return [build_command(None, "tale", Limits()), build_command(None, "faq", Limits()), General.temp,
            Contributions.contribute, Contributions.optout]


OPTION = st.fixed_dictionaries(
    {"name": st.sampled_from(["prompt", "question", "length", "temperature", "value", "reset", "corpus", "undo", "x"])},
    optional={"type": st.integers(0, 12), "value": st.one_of(NUMBERS, WRONG)},
)


@EXAMPLES
@given(index=st.integers(0, 4), options=st.one_of(st.lists(OPTION | WRONG, max_size=4), WRONG))
def test_any_options_either_fit_their_declaration_or_get_a_clear_refusal(index, options):
    command = _commands()[index]
    try:
        check_options(command, options)
    except BadOption as bad:
        assert_postable(bad.message)
        assert_no_mentions(bad.message)
        return
    params = {p.display_name: p for p in command.parameters}
    for option in options:
        param = params[option["name"]]
        assert option.get("type", param.type.value) == param.type.value
        if param.choices:
            assert option["value"] in [c.value for c in param.choices]
