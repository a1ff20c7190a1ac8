"""The non-generating commands as a person sees them: settings, contributions, forget, opt-out, admin."""

from __future__ import annotations

import pytest

from bot.config import Limits
from bot.core import answers
from bot.core.engines import ModelInfo
from bot.core.refusals import Refusal
from bot.store import open_store
from corpora.registry import CORPORA

LIMITS = Limits(max_contribution_chars=100)
G, OTHER_G, CH, U, OTHER_U = 1, 2, 10, 100, 200


@pytest.fixture
async def store(tmp_path):
    s = await open_store(tmp_path / "bot.db")
    yield s
    await s.close()


async def test_temp_shows_sets_persists_and_resets(tmp_path):
    path = tmp_path / "bot.db"
    async with await open_store(path) as s:
        shown = await answers.temp(s, G, U)
        assert "no default temperature" in shown.text and shown.ephemeral
        assert f"faq {CORPORA['faq'].default_temperature:g}" in shown.text
        assert (await answers.temp(s, G, U, 0.5)).text == "Your default temperature in this server is now 0.5."
    async with await open_store(path) as s:
        assert "is 0.5" in (await answers.temp(s, G, U)).text
        assert "no default" in (await answers.temp(s, OTHER_G, U)).text  # per server
        assert "no default" in (await answers.temp(s, G, OTHER_U)).text  # per person
        assert "cleared" in (await answers.temp(s, G, U, reset=True)).text
        assert await s.get_temperature(G, U) is None


async def test_an_out_of_range_temperature_is_explained_and_not_stored(store):
    await answers.temp(store, G, U, 0.7)
    with pytest.raises(Refusal, match="from 0 to 2"):
        await answers.temp(store, G, U, 2.5)
    assert await store.get_temperature(G, U) == 0.7


async def test_a_contribution_is_stored_with_who_where_and_when(store):
    answer = await answers.contribute(store, G, CH, U, "faq", "  Masks are required indoors.  ", "modal", LIMITS)
    assert "Thank you" in answer.text and "**faq**" in answer.text and answer.ephemeral
    (c,) = await store.contributions()
    assert (c.guild_id, c.channel_id, c.user_id, c.corpus, c.text, c.source) == (
        G,
        CH,
        U,
        "faq",
        "Masks are required indoors.",
        "modal",
    )
    assert f"#{c.id}" in answer.text and c.created


@pytest.mark.parametrize(
    ("corpus", "text", "message"),
    [
        ("faq", "   ", "no text to save"),
        ("faq", "x" * 101, "101 characters; the limit is 100"),
        ("poems", "hello", "no corpus called `poems`"),
        ("tale", "\U0001f600\U0001f431", "plain letters"),
    ],
)
async def test_bad_contributions_are_explained_and_nothing_is_stored(store, corpus, text, message):
    with pytest.raises(Refusal, match=message):
        await answers.contribute(store, G, CH, U, corpus, text, "modal", LIMITS)
    assert await store.contributions() == []


async def test_forget_deletes_only_the_callers_contributions_in_this_server(store):
    for guild, user in [(G, U), (G, U), (G, OTHER_U), (OTHER_G, U)]:
        await answers.contribute(store, guild, CH, user, "tale", "Once there was a tree.", "modal", LIMITS)
    assert (await answers.forget(store, G, U)).text == "Deleted 2 contributions of yours from this server."
    left = {(c.guild_id, c.user_id) for c in await store.contributions()}
    assert left == {(G, OTHER_U), (OTHER_G, U)}
    assert "nothing to delete" in (await answers.forget(store, G, U)).text
    assert (await answers.forget(store, OTHER_G, U)).text == "Deleted 1 contribution of yours from this server."


async def test_optout_is_recorded_mentions_forget_and_can_be_undone(store):
    await answers.contribute(store, G, CH, U, "tale", "Once there was a tree.", "modal", LIMITS)
    answer = await answers.optout(store, G, U)
    assert answer.text.startswith("Done:") and "1 contribution stored here" in answer.text and "/forget" in answer.text
    assert await store.is_opted_out(G, U)
    assert (await answers.optout(store, G, U)).text.startswith("You were already opted out")
    assert (await answers.optout(store, G, U, undo=True)).text.startswith("You're opted back in")
    assert not await store.is_opted_out(G, U)


async def test_listen_and_unlisten_are_announced_publicly(store):
    answer = await answers.listen(store, G, CH, "novel")
    assert not answer.ephemeral and "**novel**" in answer.text and "/optout" in answer.text
    assert "already" in (await answers.listen(store, G, CH, "novel")).text
    assert "instead of novel" in (await answers.listen(store, G, CH, "tale")).text
    with pytest.raises(Refusal, match="no corpus called"):
        await answers.listen(store, G, CH, "poems")
    stopped = await answers.unlisten(store, G, CH)
    assert not stopped.ephemeral and "**tale**" in stopped.text
    assert "was not collecting" in (await answers.unlisten(store, G, CH)).text


def test_model_text_says_what_each_corpus_runs():
    info = {
        "tale": ModelInfo("tale", "/x/tale.safetensors", "abc123def456", 1.234567, 3_300_000, "cuda", 0.5),
        "faq": ModelInfo("faq", "/x/faq.safetensors", "0123456789ab", None, 1000, "cpu", 0.1, parent="/run.st"),
    }
    text = answers.model_text(info)
    assert "**tale**" in text and "`abc123def456`" in text and "1.235 bits/char" in text
    assert "3,300,000 parameters" in text and "on cuda" in text
    assert "not measured" in text and "(fine-tuned)" in text
    assert "**novel**: not loaded" in text


def test_help_lists_every_corpus_command():
    for chat in (False, True):
        text = answers.help_text(chat)
        for name in CORPORA:
            assert f"/{name} " in text
        assert "/temp" in text and "/forget" in text and "/optout" in text
    assert "--temperature" in answers.help_text(chat=True)
    assert "/listen" in answers.help_text(chat=False)


def test_each_command_in_a_help_text_is_listed_under_its_name_and_chat_answers_what_its_help_lists():
    for command in answers.COMMANDS:
        for line in (command.help, command.chat_help):
            assert line is None or line.startswith(f"/{command.name}")
        if command.chat_help:
            assert command.chat is not None
    assert set(answers.COMMANDS_BY_NAME) == {c.name for c in answers.COMMANDS}
    assert not set(answers.COMMANDS_BY_NAME) & set(CORPORA)  # a corpus's name generates


def test_admins_are_configured_ids_or_manage_server():
    assert answers.may_administer(5, False, frozenset({5}))
    assert answers.may_administer(6, True, frozenset())
    assert not answers.may_administer(6, False, frozenset({5}))


@pytest.fixture
def personas():
    """Personas of two servers registered in this process, dropped afterwards."""
    from corpora.voices import add_persona, drop_persona, persona_corpus

    made = [persona_corpus(G, "rules", "faq"), persona_corpus(OTHER_G, "lore", "story")]
    for corpus in made:
        add_persona(corpus)
    yield
    for corpus in made:
        drop_persona(corpus.name)


async def test_channel_takes_this_servers_persona_by_name_and_stores_its_key(store, personas):
    from bot.core.conversation import speakers
    from bot.store.conversation import ConversationStore

    served = speakers(G, ["tale", "faq", "novel"])
    answer = await answers.channel(store, G, CH, U, served, persona="rules")
    assert "I speak as **rules**" in answer.text and not answer.ephemeral
    assert (await ConversationStore(store).channel(G, CH)).persona == f"g{G}-rules"
    for name in ("lore", f"g{OTHER_G}-lore"):  # another server's persona, by its name or its key
        with pytest.raises(Refusal) as refused:
            await answers.channel(store, G, CH, U, served, persona=name)
        assert refused.value.message == (f"I don't serve `{name}` here; I serve tale, faq, novel and this server's "
                                         "personas rules.")
    assert (await ConversationStore(store).channel(G, CH)).persona == f"g{G}-rules"


def test_help_gives_admins_the_persona_bounds():
    from bot.personas.settings import PersonaSettings

    plain = answers.help_text()
    assert "/say persona prompt" in plain and "/persona list" in plain and "Personas on this bot" not in plain
    bounds = answers.help_text(persona_bounds=PersonaSettings(max_per_server=3).lines())
    assert "Personas on this bot (admins): at most 3 personas per server, " in bounds
    assert "/say" not in answers.help_text(chat=True)  # Discord only
