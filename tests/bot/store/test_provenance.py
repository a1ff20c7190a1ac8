"""Provenance: which contributions each version learned from, kept through later versions and past
/forget, on SQLite and on PostgreSQL (each test runs on both)."""

from __future__ import annotations

from bot.store import Carrier, open_store
from bot.store.jobs import FinetuneStore, Source, VersionRow, digest

GUILD, MEMBER, OTHER = 1_146_439_104_567_410_688, 987_654_321_098_765_432, 5


def version(n: int, parent: int | None) -> VersionRow:
    return VersionRow("tale", n, f"/versions/tale/v{n:04d}.safetensors", parent, "/base", None, "admin", 1, 1000,
                      100, {}, "2026-01-01T00:00:00Z", True, False)


async def sources(s: FinetuneStore) -> list[Source]:
    return (await s.training_contributions("tale"))[1]


async def test_each_version_keeps_its_parents_provenance_and_forget_leaves_it_for_the_answer(database):
    async with await open_store(database) as store:
        s = FinetuneStore(store)
        mine = [await store.add_contribution(GUILD, 2, MEMBER, "tale", f"my text {i}", "modal") for i in range(3)]
        await s.record_version(None, version(1, None), sources=await sources(s))
        theirs = await store.add_contribution(GUILD, 2, OTHER, "tale", "their text", "modal")
        await s.record_version(None, version(2, 1), sources=await sources(s))  # retrains on all four
        await s.record_version(None, version(3, 2), sources=[])  # e.g. an imported checkpoint

        v1, v3 = await s.provenance("tale", 1), await s.provenance("tale", 3)
        assert [p.contribution_id for p in v1] == mine
        assert [p.contribution_id for p in v3] == [*mine, theirs]  # inherited, once each
        assert v1[0] == Source(mine[0], GUILD, MEMBER, digest("my text 0"))
        assert len(v1[0].digest) == 64 and "my text" not in v1[0].digest
        assert await s.forgotten() == [] and await s.last_clean("tale") == 3

        assert await store.forget(GUILD, MEMBER) == 3
        assert await store.learned_from(GUILD, MEMBER) == [
            Carrier("tale", 1, False, 3), Carrier("tale", 2, False, 3), Carrier("tale", 3, True, 3)]
        assert await store.learned_from(GUILD, OTHER) == [Carrier("tale", 2, False, 1), Carrier("tale", 3, True, 1)]
        assert [(f.version, f.texts, f.members, f.served) for f in await s.forgotten("tale")] == [
            (1, 3, 1, False), (2, 3, 1, False), (3, 3, 1, True)]
        assert await s.last_clean("tale") == 0  # every version saw them: the base checkpoint never did
        await s.mark_pruned("tale", [1, 2])
        assert [c.version for c in await store.learned_from(GUILD, MEMBER)] == [3]  # a deleted file carries nothing
        assert await s.forgotten("faq") == []
