"""The project's own tooling, kept out of the wheel: the tiny test guests
(:mod:`scripts.tinyguest` and the shell scripts that build them), the documentation
generator (:mod:`scripts.docgen`), the demo, and the set-up scripts.

Run from the checkout: ``python -m scripts.demo``, ``python -m scripts.docgen``.
"""
