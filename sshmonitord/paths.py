"""Where things are: the config file, the state directory and the control socket.

One place for every command and for the daemon, so they cannot disagree. It sits low (it needs
only the config schema and the control module's socket rule): the CLI, the audit and report
commands and the daemon all import it, never each other, to find their files.
"""

from __future__ import annotations

import os

from . import config
from .control import resolve_socket

__all__ = ["load_for_cli", "resolve_socket", "resolve_state_dir"]


def load_for_cli(path: str | None) -> config.Config:
    """The config at ``path``; with no path, the default file, or built-in defaults if absent."""
    if path is None:
        if not os.path.exists(config.DEFAULT_CONFIG_PATH):
            return config.Config(
                warnings=(
                    f"{config.DEFAULT_CONFIG_PATH} does not exist; running on built-in defaults",
                )
            )
        path = config.DEFAULT_CONFIG_PATH
    return config.load_config(os.path.abspath(path))


def resolve_state_dir(cli_value: str | None, cfg: config.Config) -> str:
    """--state-dir, else systemd's STATE_DIRECTORY, else store.dir from the config."""
    if cli_value:
        return cli_value
    env = os.environ.get("STATE_DIRECTORY")
    if env and cfg.store.dir == config.DEFAULT_STATE_DIR:
        return env.split(":")[0]
    return cfg.store.dir
