"""Imported first by every rule script (its own import section, before the standard library's):
from here until the job's session begins (``harness.rule_session``), an interrupt is one line and an
exit, not a traceback from whichever import it hit (torch's take seconds). See :mod:`interrupts`."""

from interrupts import quiet_start

quiet_start()
