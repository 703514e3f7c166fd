"""Oracle benchmarks: enumerable-response tasks on real transformers, exact RLHF optimum.

See docs/oracle.md; entry point ``auxdpo oracle`` (:mod:`auxdpo.harness.oracle.cli`).
"""
