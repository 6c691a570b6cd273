"""Opt-out and help keywords, as carriers and the CTIA handbook define them.

Only a whole message that is exactly one keyword counts ("stop" does; "please stop
texting me" does not), ignoring case and surrounding space.
"""

from __future__ import annotations

OPT_OUT = "opt_out"
OPT_IN = "opt_in"
HELP = "help"

KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"), OPT_OUT),
    **dict.fromkeys(("START", "YES", "UNSTOP"), OPT_IN),
    **dict.fromkeys(("HELP", "INFO"), HELP),
}


def classify_keyword(body: str) -> str | None:
    """OPT_OUT, OPT_IN, HELP, or None for an ordinary message."""
    return KEYWORDS.get((body or "").strip().upper())
