"""Run every benchmark: python -m bench."""

from __future__ import annotations

from . import files, fleet, ping, run


def main() -> None:
    ping.main()
    fleet.main()
    files.main()
    run.main()


if __name__ == "__main__":
    main()
