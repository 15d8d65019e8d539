"""Benchmarks, run by hand or by `make bench`, never by `make test`.

Each module has a `main()` that runs its measurements, prints them and returns them as a dict.
"""
