"""logserver's benchmark suite (issue 6). Not part of the runtime package.

Run it from the top of a checkout:

    python3 scripts/dev.py bench            # quick run (a few minutes)
    python3 scripts/dev.py bench --full     # the sizes the README reports
    python3 scripts/dev.py bench --full --with-10m   # adds the 10M-leaf read/scale runs

See bench/README.md for what each section measures and how.
"""
