"""Run every benchmark: python -m bench."""

from __future__ import annotations

from . import ping


def main() -> None:
    ping.main()


if __name__ == "__main__":
    main()
