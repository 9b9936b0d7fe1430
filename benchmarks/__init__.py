"""Benchmarks of mmsearch: every case measures both sides in one run and reports the ratio."""
