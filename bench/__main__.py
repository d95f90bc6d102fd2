"""Run every benchmark: python -m bench."""

from __future__ import annotations

from . import ping, run


def main() -> None:
    ping.main()
    run.main()


if __name__ == "__main__":
    main()
