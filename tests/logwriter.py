"""A stand-in for rsyslog in rotation tests: appends numbered lines at a steady rate.

Usage: python logwriter.py PATH COUNT RATE REPORT
Opens PATH with O_APPEND (as rsyslog does) and reopens it on SIGHUP (logrotate's postrotate),
so between the rename and the HUP lines still land in the old inode. Writes REPORT (JSON) at
the end: how many lines were written and which ones landed at offset 0 of a file.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

path, count, rate, report = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
reopen = False


def on_hup(_sig: int, _frm: object) -> None:
    global reopen
    reopen = True


signal.signal(signal.SIGHUP, on_hup)
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
first_lines: list[int] = []
start = time.monotonic()
for n in range(1, count + 1):
    if reopen:
        reopen = False
        os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    data = f"Nov 24 22:00:00 testhost sshd[4242]: seq={n:07d} padding-{'x' * (n % 50)}\n"
    os.write(fd, data.encode())
    if os.fstat(fd).st_size == len(data):
        first_lines.append(n)
    target = start + n / rate
    delay = target - time.monotonic()
    if delay > 0:
        time.sleep(delay)
os.close(fd)
with open(report, "w") as fh:
    json.dump({"written": count, "first_lines": first_lines}, fh)
