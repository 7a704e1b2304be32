"""sshmonitord: an SSH security monitor daemon."""

__version__ = "0.1.0"
