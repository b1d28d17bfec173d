"""``python -m benchmarks``: every issue-13 figure against a raw baseline, in one run."""

from benchmarks.run import main

main()
