"""Where a command finds things: its config, the state directory (with the database) and the
daemon's control socket, read off its command line.

The rules themselves are ``sshmonitord/paths.py``, shared with the daemon so the two cannot
disagree; this module only applies them to a command's ``--config``, ``--state-dir`` and
``--socket``. Every command of this package goes through it (``sshmonitor report``, in
notify/report/, calls paths.py the same way).
"""

from __future__ import annotations

import argparse
import os

from .. import config
from ..paths import load_for_cli, resolve_socket, resolve_state_dir
from .output import warn

CONFIG_HELP = f"config file (default: {config.DEFAULT_CONFIG_PATH})"


def config_arg(p: argparse.ArgumentParser, help: str = CONFIG_HELP) -> None:
    p.add_argument("--config", "-c", metavar="FILE", default=None, help=help)


def socket_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", metavar="PATH", help="control socket (default: from config)")


def load_config(args: argparse.Namespace) -> config.Config:
    """The config of ``--config``, else the default file, else built-in defaults; raises
    :class:`config.ConfigError`."""
    return load_for_cli(getattr(args, "config", None))


def state_dir_for(args: argparse.Namespace) -> str:
    """--state-dir, else $STATE_DIRECTORY, else the config's store.dir. The config is read
    only when needed: with --state-dir a broken config does not matter. Raises
    :class:`config.ConfigError`."""
    state_dir = getattr(args, "state_dir", None)
    if state_dir:
        return str(state_dir)
    return resolve_state_dir(None, load_config(args))


def db_path_for(args: argparse.Namespace) -> str:
    """``<state dir>/sshmonitor.db``; raises :class:`config.ConfigError`."""
    from ..store import db_path  # the store package (sqlite3, asyncio): only when asked

    return str(db_path(state_dir_for(args)))


def socket_for(args: argparse.Namespace) -> str:
    """The daemon's control socket: --socket, else the config's, else the default. A broken
    config must not stop ``status`` and ``reload``: that is exactly when reload is needed."""
    if getattr(args, "socket", None):
        return str(args.socket)
    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        sock = resolve_socket(_socket_leniently(exc.path))
        n = len(exc.problems)
        warn(
            f"{exc.path} is not a valid config ({n} problem{'s' if n != 1 else ''}; "
            f"sshmonitor check-config lists them); trying the control socket {sock}"
        )
        return sock
    return resolve_socket(cfg.control.socket)


def _socket_leniently(path: str) -> str | None:
    """``control.socket`` from a config file that does not validate, or None: the YAML may
    still parse, and nothing but this one key is looked at."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        value = doc["control"]["socket"]
    except Exception:  # unreadable, not YAML, no such key: the default it is
        return None
    if isinstance(value, str) and os.path.isabs(value) and "${" not in value:
        return value
    return None
