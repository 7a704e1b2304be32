"""Review of #12 (the report through the alert spool): a prepared message row in the spool
beside alert rows — separate messages, max_age, channels removed by a reload, restart."""

from __future__ import annotations

import asyncio
import dataclasses

from test_alert_queue import Recorder, _queue, _until, finding

from sshmonitord import config
from sshmonitord.events import Severity
from sshmonitord.notify.alert import Alert, DeliveryError, Message, make_id


def _report(n: int = 1) -> Message:
    return Message(
        subject=f"report {n}", text="t", html="<p>h</p>", alerts=[], host="web1",
        id=make_id("report/1", "web1", float(n), 2.0),
    )  # fmt: skip


async def _rows(q) -> int:
    row = await q.store.run(lambda c: c.execute("SELECT COUNT(*) FROM alert_spool").fetchone())
    return int(row[0])


def test_a_report_and_a_critical_due_at_once_go_as_two_messages(tmp_path):
    async def go():
        rec = Recorder()
        q = await _queue(tmp_path, [rec], digest_window=config.Duration(0.0))
        await q._spool([Alert.from_finding(finding(sev=Severity.CRITICAL), "web1", None)])
        await q.spool_message(_report(), ["rec"])
        assert await _until(lambda: len(rec.messages) >= 2)
        await asyncio.sleep(0.2)
        kinds = sorted((m.subject.startswith("report"), len(m.alerts)) for m in rec.messages)
        assert kinds == [(False, 1), (True, 0)]
        assert await _rows(q) == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_pinned_failed_digest_and_a_report_stay_separate(tmp_path):
    async def go():
        rec = Recorder(fail=[DeliveryError("down", permanent=False)])
        q = await _queue(
            tmp_path, [rec], digest_window=config.Duration(0.0),
            retry_initial=config.Duration(0.3), retry_max=config.Duration(0.3),
        )  # fmt: skip
        await q.submit([finding()])
        assert await _until(lambda: q.stats["delivery_failures"] == 1)
        await q.spool_message(_report(), ["rec"])
        assert await _until(lambda: len(rec.messages) >= 2)
        await asyncio.sleep(0.2)
        assert sorted(len(m.alerts) for m in rec.messages) == [0, 1]
        assert [m.id for m in rec.messages if not m.alerts] == [_report().id]
        assert await _rows(q) == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_report_undelivered_past_max_age_is_dropped_and_counted(tmp_path):
    async def go():
        rec = Recorder(fail=[DeliveryError("down", permanent=False)] * 100)
        q = await _queue(
            tmp_path, [rec], max_age=config.Duration(0.5),
            retry_initial=config.Duration(0.1), retry_max=config.Duration(0.2),
        )  # fmt: skip
        await q.spool_message(_report(), ["rec"])
        assert await _until(lambda: q.stats["dropped_too_old"] == 1, 5)
        assert await _rows(q) == 0 and q.healthy()
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_report_for_a_channel_removed_by_reload_is_deleted(tmp_path):
    async def go():
        rec = Recorder(fail=[DeliveryError("down", permanent=False)] * 100)
        q = await _queue(tmp_path, [rec], retry_initial=config.Duration(30))
        await q.spool_message(_report(), ["rec"])
        assert await _until(lambda: q.stats["delivery_failures"] == 1)
        new = dataclasses.replace(config.Config(), notify=q.cfg)
        q.apply_config(new, [Recorder(name="other")])
        deadline = asyncio.get_running_loop().time() + 5
        while await _rows(q) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert await _rows(q) == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_a_report_pending_at_stop_goes_out_after_restart_with_its_id(tmp_path):
    async def go():
        rec = Recorder(fail=[DeliveryError("down", permanent=False)])
        q = await _queue(
            tmp_path, [rec], retry_initial=config.Duration(30), retry_max=config.Duration(60)
        )
        await q.spool_message(_report(), ["rec"])
        assert await _until(lambda: q.stats["delivery_failures"] == 1)
        await q.stop()
        q.store.close()
        rec2 = Recorder()
        q = await _queue(tmp_path, [rec2])
        assert await _until(lambda: rec2.messages)
        assert [m.id for m in rec2.messages] == [_report().id]
        assert await _rows(q) == 0
        await q.stop()
        q.store.close()

    asyncio.run(go())


def test_reload_hands_both_notify_stages_the_new_channels_and_a_broken_one_keeps_them(tmp_path):
    from sshmonitord import daemon

    log = tmp_path / "auth.log"
    log.write_text("")
    cfg_path = tmp_path / "sshmonitor.yaml"

    def write(channel: str, time: str, extra: str = "") -> None:
        cfg_path.write_text(
            f"control: {{socket: {tmp_path / 'control.sock'}}}\n"
            f"sources: {{mode: file, files: [{log}]}}\n"
            "response: {backend: none}\n"
            "notify:\n"
            f"  report: {{enabled: true, time: '{time}'}}\n"
            f"  channels: [{{type: webhook, name: {channel}, url: 'http://127.0.0.1:9/x'}}]\n"
            + extra
        )

    write("first", "07:00")
    cfg = config.load_config(str(cfg_path))

    async def main() -> None:
        d = daemon.Daemon(cfg, state_dir=str(tmp_path / "state"), dry_run=True)
        await d._open()
        try:
            assert d.alerts is not None and d.report is not None
            write("second", "08:30")
            assert await d.reload()
            assert list(d.alerts.channels) == ["second"]
            assert d.report.channels == list(d.alerts.channels.values())
            assert d.report.queue is d.alerts and d.report.settings.time == "08:30"
            kept = list(d.alerts.channels.values())
            write("third", "09:00", "response: [broken\n")
            assert not await d.reload()
            assert d.last_reload_error
            assert list(d.alerts.channels.values()) == kept and d.report.channels == kept
            assert d.report.settings.time == "08:30"
            assert d.report.healthy() and d.alerts.healthy()
        finally:
            await d._shutdown()

    asyncio.run(main())
