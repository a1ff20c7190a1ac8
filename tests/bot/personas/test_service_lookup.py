"""What the /persona cog and /say need of the persona service beyond creating and deleting: finding a
persona's key in this server only, and naming the admin who started its training."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.core.refusals import Refusal
from bot.jobs.manager import Queued
from bot.personas.service import NOT_IN_DM, PersonaService
from bot.personas.settings import PersonaSettings
from bot.personas.uploads import File
from bot.store import open_store
from bot.store.personas import PersonaStore, Upload
from corpora.voices import drop_persona, is_voice
from tests.helpers import contributed_texts

A, B, CHANNEL, ADMIN = 11, 22, 5, 7


class Manager(SimpleNamespace):
    """Just what creating needs of the fine-tuning manager: its settings, and a queue that records."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(settings=SimpleNamespace(min_chars=2000, state_dir=state_dir), submitted=[])

    async def submit(self, corpus, started_by, minutes, guild_id, channel_id, force) -> Queued:
        self.submitted.append((corpus, started_by, minutes, guild_id, channel_id, force))
        return Queued(1, corpus, 0)


@pytest.fixture
async def service(tmp_path):
    store = await open_store(tmp_path / "bot.db")
    yield PersonaService(store, Manager(tmp_path / "state"), PersonaSettings())  # type: ignore[arg-type]
    for key in (f"g{A}-rules", f"g{B}-rules"):
        drop_persona(key)
    await store.close()


async def test_a_persona_made_elsewhere_is_found_by_its_server_and_registered_here(service) -> None:
    await PersonaStore(service.store).create(A, "rules", "faq", ADMIN, CHANNEL, [Upload("r.md", "How to join.")],
                                             "modal")
    assert not is_voice(f"g{A}-rules")  # made through another process: not registered in this one
    assert await service.key_for(A, " Rules ") == f"g{A}-rules"
    assert is_voice(f"g{A}-rules")
    with pytest.raises(Refusal) as other:
        await service.key_for(B, "rules")
    with pytest.raises(Refusal) as unknown:
        await service.key_for(B, "nosuch")
    assert other.value.message == unknown.value.message.replace("nosuch", "rules")
    with pytest.raises(Refusal) as forged:
        await service.key_for(B, f"g{A}-rules")
    assert forged.value.message == unknown.value.message.replace("nosuch", f"g{A}-rules")
    with pytest.raises(Refusal, match=NOT_IN_DM):
        await service.key_for(None, "rules")


async def test_the_training_names_who_started_it(service) -> None:
    text = "\n\n".join(contributed_texts()).encode()
    created = await service.create(A, "rules", "faq", [File("r.md", text)], ADMIN, CHANNEL,
                                   started_by=f"discord:{ADMIN}")
    assert service.finetune.submitted == [(f"g{A}-rules", f"discord:{ADMIN}", None, A, CHANNEL, False)]
    assert "Its training is queued (job 1, 0 ahead of it)" in created.message()
    await service.create(B, "rules", "story", [File("r.md", text)], ADMIN, CHANNEL)
    assert service.finetune.submitted[-1][1] == str(ADMIN)  # the default, as before
