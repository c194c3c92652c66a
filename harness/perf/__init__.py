"""``bench perf``: training-step speed against the frozen floor, and the CI speed gate.

timing (measure and tabulate), counters (hardware instruction counts), opprofile (untimed per-op
breakdown), baseline (the committed baseline files), verdict (the regression rule), command (the
CLI's body: setup, check, re-measure, repeat).
"""
