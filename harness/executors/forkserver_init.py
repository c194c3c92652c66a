"""Imported only by the fork server (``local.PRELOAD``): it dies with ``bench`` (see ``lifeline``)."""
from harness.executors.lifeline import die_with_parent

die_with_parent()
