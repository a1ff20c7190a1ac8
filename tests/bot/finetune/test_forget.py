"""/forget after a member's texts were trained into a version: the answer names the version, the
admins see it in /finetune status, and the deleted texts are nowhere in clear any more."""

from __future__ import annotations

from pathlib import Path

from bot import actions
from bot.finetune.messages import status_text
from bot.store.finetune import DONE, digest
from tests.bot.finetune.test_manager import CHANNEL, GUILD, env  # noqa: F401 (the bench's fixture)
from tests.helpers import contributed_texts

MEMBER = 77


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` (the database, its WAL, the state folder) holding one of ``needles``."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.name}: {n[:20]!r}" for n in needles if n in data]
    return found


async def test_forget_names_the_versions_that_learned_from_the_texts_and_tells_the_admins(env):  # noqa: F811
    manager = await env.open()
    mine = contributed_texts(seed=3)
    for text in mine:
        await env.store.add_contribution(GUILD, CHANNEL, MEMBER, "tale", text, "modal")
    await env.contribute(contributed_texts(n=2, seed=4))  # the admin's own two, which stay
    outcome = await manager.wait(await manager.start("tale", "discord:30", minutes=2))
    assert outcome.state == DONE and outcome.version == 1, outcome.error
    provenance = await env.fstore.provenance("tale", 1)
    assert [p.user_id for p in provenance].count(MEMBER) == 8 and len(provenance) == 10
    assert {p.digest for p in provenance} >= {digest(t) for t in mine}
    assert "Forgotten" not in await status_text(manager)

    answer = (await actions.forget(env.store, GUILD, MEMBER)).text
    assert answer.startswith("Deleted 8 contributions of yours from this server.")
    assert "the tale model, version 1 (served now), learned from 8 of your texts" in answer
    assert "An admin has been told" in answer
    status = await status_text(manager)
    assert ("Forgotten texts: tale v1 (served) learned from 8 texts that 1 member deleted with /forget; the newest "
            "version that never saw them is the base checkpoint (`/rollback tale 0`).") in status
    again = (await actions.forget(env.store, GUILD, MEMBER)).text  # still honest the second time
    assert "You have no contributions stored" in again and "version 1 (served now), learned from 8" in again

    # Nothing in the database or the state folder holds the forgotten texts any more.
    needles = [t.encode() for t in mine] + [t[:48].encode() for t in mine]
    assert files_holding(env.tmp, needles) == []
    assert files_holding(env.tmp, [contributed_texts(n=2, seed=4)[0][:48].encode()])  # the scan does find text

    await manager.rollback("tale", 0)
    assert "(served)" not in await status_text(manager)  # v1 is still on disk, so still listed
