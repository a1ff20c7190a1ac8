"""/finetune status in a server shows the built-in corpora's jobs and that server's personas, never another's."""

from __future__ import annotations

from bot.jobs.messages import seen_from, status_text
from tests.bot.jobs.test_manager import env  # noqa: F401 (the fixture)


async def test_status_shows_a_servers_own_queued_and_finished_persona_jobs_only(env):  # noqa: F811
    manager = await env.open()
    await manager.queue.put("g1-rules", "discord:5", 1, 10, 1.0, False)
    await manager.queue.put("g2-secret", "discord:6", 2, 20, 1.0, False)
    job_id = await manager.store.create_job("g2-hidden", "discord:6", {"minutes": 1}, 2, 20)
    await manager.store.finish_job(job_id, "failed", "something private to server 2")

    one = await status_text(manager, visible=seen_from(1))
    assert "Queued: rules (entry 1, 1 of 2 waiting" in one
    assert "secret" not in one and "hidden" not in one and "private" not in one
    two = await status_text(manager, visible=seen_from(2))
    assert "Queued: secret" in two and "rules" not in two
    everyone = await status_text(manager)  # the command line's operator sees every server's
    assert "rules" in everyone and "secret" in everyone
    await manager.queue.drop("g1-rules")
    await manager.queue.drop("g2-secret")
    idle = await status_text(manager, visible=seen_from(1))
    assert idle.startswith("No fine-tune is running or queued.") and "hidden" not in idle
