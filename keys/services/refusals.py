"""The one base class of the refusals services raise.

A refusal means: nothing changed, and ``str(e)`` is a complete sentence for the person who
asked (the page shows it as an error message). Views catch :class:`Refused`, never a list
of service exceptions (``keys.views.actions.run_action``). Faults (KMS unreachable, a bug)
are not refusals.
"""


class Refused(Exception):
    """A service refused the request; ``str()`` says why, in words for the page."""
