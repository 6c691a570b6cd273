"""Opt-out, opt-in and help keywords: only a whole message that is exactly one keyword counts."""

from __future__ import annotations

import pytest

from gateway.routing.keywords import HELP, OPT_IN, OPT_OUT, classify_keyword


@pytest.mark.parametrize(
    "body, meaning",
    [
        # Opting out: the carriers' and CTIA's words
        ("STOP", OPT_OUT),
        ("STOPALL", OPT_OUT),
        ("UNSUBSCRIBE", OPT_OUT),
        ("CANCEL", OPT_OUT),
        ("END", OPT_OUT),
        ("QUIT", OPT_OUT),
        ("OPTOUT", OPT_OUT),
        ("REVOKE", OPT_OUT),
        # Opting back in
        ("START", OPT_IN),
        ("YES", OPT_IN),
        ("UNSTOP", OPT_IN),
        # Asking for help: noted, changes nothing
        ("HELP", HELP),
        ("INFO", HELP),
        # Case and surrounding space do not matter
        ("stop", OPT_OUT),
        ("Stop", OPT_OUT),
        ("sToPaLl", OPT_OUT),
        ("  stop  ", OPT_OUT),
        ("\tSTOP\n", OPT_OUT),
        ("unstop", OPT_IN),
        (" yes ", OPT_IN),
        ("help\n", HELP),
        # Anything else is an ordinary message
        ("please stop", None),
        ("stop texting me", None),
        ("STOP.", None),
        ("STOP!", None),
        ("S T O P", None),
        ("STOPP", None),
        ("OPT OUT", None),
        ("yes please", None),
        ("HELP me", None),
        ("", None),
        ("   ", None),
        ("Msg", None),
    ],
)
def test_a_message_is_a_keyword_only_when_it_is_exactly_one(body, meaning):
    assert classify_keyword(body) == meaning


def test_a_missing_body_is_an_ordinary_message():
    assert classify_keyword(None) is None
