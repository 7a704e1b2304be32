"""Config loading: defaults, the shipped file, and exact error messages for bad input."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from pathlib import Path

import pytest

from sshmonitord import config
from sshmonitord.cli import main

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "etc" / "sshmonitor.yaml"


def test_empty_file_is_valid_and_all_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("")
    cfg = config.load_config(p)
    assert cfg == dataclasses.replace(config.Config(), path=str(p))
    assert cfg.sources.start_at == "end"
    assert cfg.notify.throttle == 3600


def test_shipped_config_is_valid_and_equals_the_defaults():
    cfg = config.load_config(SHIPPED)
    assert cfg.warnings == ()
    assert dataclasses.replace(cfg, path=None) == config.Config()


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _keys(hints[f.name], prefix + f.name + ".")
    return out


def test_shipped_config_mentions_every_key_with_a_comment():
    text = SHIPPED.read_text()
    keys = _keys(config.Config)
    for ch in config.CHANNEL_TYPES.values():
        keys += _keys(ch, "notify.channels[].")
    missing = []
    for key in keys:
        leaf = key.rsplit(".", 1)[-1]
        if not re.search(rf"(^[\s#]*(- )?|[{{,] *){re.escape(leaf)}(_file)?:", text, re.M):
            missing.append(key)
    assert not missing, f"keys absent from etc/sshmonitor.yaml: {missing}"


def test_check_config_cli_ok_and_error(tmp_path, capsys):
    assert main(["check-config", str(SHIPPED)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text("log:\n  levle: debug\n")
    assert main(["check-config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}: log.levle: unknown key (did you mean 'level'?)")


BAD = [
    # (yaml, expected message lines; {F} is the file name)
    (
        "sources: {start_at: middle}",
        "{F}: sources.start_at: expected one of end, beginning, got 'middle' (a string)",
    ),
    (
        "sources: {max_line_length: big}",
        "{F}: sources.max_line_length: expected an integer, got 'big' (a string)",
    ),
    (
        "sources: {max_line_length: true}",
        "{F}: sources.max_line_length: expected an integer, got True (a boolean)",
    ),
    (
        "sources: {timezone: Mars/Olympus}",
        "{F}: sources.timezone: unknown time zone 'Mars/Olympus' (an IANA name like "
        "Europe/Berlin, or local)",
    ),
    (
        "notify: {report: {time: '25:00'}}",
        "{F}: notify.report.time: expected a time of day HH:MM (e.g. 07:00), got '25:00' (a string)",
    ),
    ("sources: {files: 7}", "{F}: sources.files[0]: expected a string, got 7 (an integer)"),
    ("sources: {journal: []}", "{F}: sources.journal: expected a mapping, got [] (a list)"),
    (
        "response: {enabled: 'yes please'}",
        "{F}: response.enabled: expected true or false, got 'yes please' (a string)",
    ),
    (
        "sources: {poll_interval: -2s}",
        "{F}: sources.poll_interval: must not be negative, got '-2s' (a string)",
    ),
    ("notify: {throttle: -5}", "{F}: notify.throttle: must not be negative, got -5 (an integer)"),
    (
        "notify: {throttle: soon}",
        "{F}: notify.throttle: expected a duration like 30s, 10m, 1h or a number of seconds, "
        "got 'soon' (a string)",
    ),
    (
        "store: {retention_days: 0}",
        "{F}: store.retention_days: expected a value between 1 and 36500, got 0 (an integer)",
    ),
    (
        "log: {format: xml}",
        "{F}: log.format: expected one of auto, console, json, journal, got 'xml' (a string)",
    ),
    (
        "log: {level: warn}",
        "{F}: log.level: expected one of debug, info, warning, error, got 'warn' (a string) "
        "(did you mean 'warning'?)",
    ),
    (
        "sorces: {}",
        "{F}: sorces: unknown key (did you mean 'sources'?); valid keys here: allowlist, control, "
        "detection, fleet, log, metrics, notify, response, sessions, sources, store",
    ),
    (
        "detection: {ipv6_prefx: 48}",
        "{F}: detection.ipv6_prefx: unknown key (did you mean 'ipv6_prefix'?); "
        "valid keys here: failure_weights, ipv6_prefix, max_keys, rules",
    ),
    (
        "allowlist:\n  - 10.0.0.300",
        "{F}: allowlist[0]: expected an IP address or network, got '10.0.0.300' (a string)",
    ),
    (
        "allowlist:\n  - 10.1.2.3/8",
        "{F}: allowlist[0]: '10.1.2.3/8' has host bits set (did you mean 10.0.0.0/8?)",
    ),
    (
        "allowlist:\n  - example.org",
        "{F}: allowlist[0]: expected an IP address or network, got 'example.org' (a string)",
    ),
    ("allowlist: 5", "{F}: allowlist[0]: expected an IP address or network, got 5 (an integer)"),
    (
        "notify:\n  channels:\n    - type: log\n"
        "    - {type: smtp, port: abc, sender: a@b, to: [c@d]}",
        "{F}: notify.channels[1].port: expected an integer, got 'abc' (a string)",
    ),
    (
        "notify:\n  channels:\n    - {type: smtp, port: 70000, sender: a@b, to: [c@d]}",
        "{F}: notify.channels[0].port: expected a value between 1 and 65535, "
        "got 70000 (an integer)",
    ),
    (
        "notify:\n  channels:\n    - {type: smpt}",
        "{F}: notify.channels[0].type: expected one of forwardemail, smtp, sendmail, webhook, log, "
        "got 'smpt' (a string) (did you mean 'smtp'?)",
    ),
    (
        "notify:\n  channels:\n    - {host: x}",
        "{F}: notify.channels[0].type: expected one of forwardemail, smtp, sendmail, webhook, log, "
        "got nothing (null)",
    ),
    (
        "notify:\n  channels:\n    - {type: webhook}",
        "{F}: notify.channels[0].url: is required for this webhook channel",
    ),
    (
        "notify:\n  channels:\n    - {type: forwardemail, sender: a@b, to: [c@d]}",
        "{F}: notify.channels[0].api_key: is required for this forwardemail channel "
        "(or api_key_file)",
    ),
    (
        "notify:\n  channels:\n    - {type: forwardemail, api_key_file: /nonexistent/key, "
        "sender: a@b, to: [c@d]}",
        "{F}: notify.channels[0].api_key_file: cannot read secret file '/nonexistent/key': "
        "No such file or directory",
    ),
    (
        "notify:\n  channels:\n    - {type: forwardemail, api_key: '${SSHMON_TEST_UNSET}', "
        "sender: a@b, to: [c@d]}",
        "{F}: notify.channels[0].api_key: environment variable SSHMON_TEST_UNSET is not set",
    ),
    (
        "notify:\n  channels:\n    - {type: forwardemail, api_key: k, api_key_file: /x, "
        "sender: a@b, to: [c@d]}",
        "{F}: notify.channels[0].api_key: give either api_key or api_key_file, not both",
    ),
    (
        'notify:\n  channels:\n    - {type: smtp, sender: a@b, to: [c@d, "e\\nBcc: x@y"]}',
        "{F}: notify.channels[0].to[1]: must not contain control characters (line breaks, "
        "NUL, tabs...); got 'e\\nBcc: x@y' (a string)",
    ),
    (
        "notify:\n  channels:\n    - {type: sendmail, sender: '=?utf-8?q?a=40evil?=@b', "
        "to: [c@d]}",
        "{F}: notify.channels[0].sender: must not contain \"=?\" (an RFC 2047 encoded word, "
        "which mail readers decode); got '=?utf-8?q?a=40evil?=@b' (a string)",
    ),
    (
        "notify:\n  channels:\n    - {type: smtp, host: mail..example.org, sender: a@b, "
        "to: [c@d]}",
        "{F}: notify.channels[0].host: has an empty label (two dots in a row, or a leading "
        "dot); got 'mail..example.org' (a string)",
    ),
    (
        "log: {level: info}\nlog: {level: debug}",
        "{F}: line 2 column 1: invalid YAML: duplicate key 'log'",
    ),
    (
        "log: {level: [}",
        "{F}: line 1 column 15: invalid YAML: expected the node content, but found '}'",
    ),
    ("- just\n- a list", "{F}: (top level): expected a mapping, got ['just', 'a list'] (a list)"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1].split(": ")[1] for b in BAD])
def test_bad_config_exact_message(tmp_path, text, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text + "\n")
    with pytest.raises(config.ConfigError) as exc:
        config.load_config(p)
    assert str(exc.value) == expected.replace("{F}", str(p))


def test_every_problem_is_reported_at_once(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("log: {level: loud, format: xml}\nstore: {retention_days: x}\n")
    with pytest.raises(config.ConfigError) as exc:
        config.load_config(p)
    assert [pr.key for pr in exc.value.problems] == [
        "log.level",
        "log.format",
        "store.retention_days",
    ]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(config.ConfigError) as exc:
        config.load_config(p)
    assert str(exc.value) == f"{p}: cannot read: No such file or directory"


def test_secret_from_file_env_and_warning(tmp_path, monkeypatch):
    key = tmp_path / "fe.key"
    key.write_text("s3cret-key\n")
    os.chmod(key, 0o644)
    monkeypatch.setenv("SSHMON_TEST_TOKEN", "tok-123")
    p = tmp_path / "c.yaml"
    p.write_text(
        "notify:\n  channels:\n"
        "    - {type: forwardemail, api_key_file: fe.key, sender: a@b, to: c@d}\n"
        "    - {type: webhook, url: 'http://127.0.0.1:1/x', token: 'Bearer-${SSHMON_TEST_TOKEN}'}\n"
    )
    cfg = config.load_config(p)
    fe, wh = cfg.notify.channels
    assert fe.api_key == "s3cret-key"  # relative to the config file's directory
    assert fe.to == ("c@d",)  # a single address where a list is expected
    assert "s3cret" not in repr(fe)
    assert wh.token == "Bearer-tok-123"
    assert len(cfg.warnings) == 1
    assert "readable or writable by others (mode 0644); chmod 640 it" in cfg.warnings[0]
    os.chmod(key, 0o640)
    assert config.load_config(p).warnings == ()
    os.chmod(key, 0o660)
    assert len(config.load_config(p).warnings) == 1


def test_allowlist_normalises():
    cfg = config.parse_config(
        "allowlist:\n  - 192.0.2.7\n  - 2001:db8::/32\n  - ::ffff:10.0.0.0/104\n"
        "  - fe80::1%eth0\n"
    )
    assert cfg.allowlist == (
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fe80::1/128"),  # the zone id says nothing about who it is
    )


def test_ipv6_counting_prefix_must_fit_the_widest_ban():
    with pytest.raises(config.ConfigError) as exc:
        config.parse_config("detection: {ipv6_prefix: 40}\nresponse: {max_ban_prefix: {ipv6: 48}}")
    (line,) = exc.value.lines()[-1:]
    assert "detection.ipv6_prefix" in line and "/40" in line and "/48" in line
    assert config.parse_config("detection: {ipv6_prefix: 48}\nresponse: {max_ban_prefix: {ipv6: 48}}")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        ("45", 45.0),
    ],
)
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "1h junk", "h1", None, True, [1]])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        config.parse_duration(text)


def test_report_time_unquoted_yaml_sexagesimal():
    # PyYAML reads an unquoted 23:30 as 1410 (base 60): we take it as the time it was.
    cfg = config.parse_config("notify: {report: {time: 23:30}}")
    assert cfg.notify.report.time == "23:30"
