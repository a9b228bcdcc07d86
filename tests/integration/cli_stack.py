"""The embedded stack as a user runs it: the `shopvec` command in a process of its own, on a
home and ports of the test's own, and the process-group check that `down` left nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shopvec.settings import Settings
from shopvec.stack import free_port

__all__ = ["CliStack", "group_members"]


@dataclass
class CliStack:
    env: dict[str, str]
    settings: Settings
    """What the command's processes read: the same home and ports."""

    @classmethod
    def at(cls, home: Path) -> CliStack:
        kafka_port, milvus_port, http_port = free_port(), free_port(), free_port()
        compat_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPVEC_")}
        env.update(
            {
                "SHOPVEC_STACK__HOME": str(home),
                "SHOPVEC_STACK__KAFKA_PORT": str(kafka_port),
                "SHOPVEC_STACK__MILVUS_PORT": str(milvus_port),
                "SHOPVEC_STACK__KAFKA_COMPAT_PORT": str(compat_port),
                "SHOPVEC_HTTP__PORT": str(http_port),
                # A killed consumer's partitions go to its successor once its session expires.
                "SHOPVEC_KAFKA__SESSION_TIMEOUT_MS": "6000",
            }
        )
        settings = Settings.model_validate(
            {
                "stack": {
                    "home": home,
                    "kafka_port": kafka_port,
                    "milvus_port": milvus_port,
                    "kafka_compat_port": compat_port,
                },
                "http": {"port": http_port},
            }
        )
        return cls(env, settings)

    def run(self, *args: str, timeout_s: float = 300) -> str:
        """`shopvec ARGS`; its standard output, once it exited 0."""
        done = subprocess.run(
            [sys.executable, "-m", "shopvec.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert done.returncode == 0, f"shopvec {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members
