"""Configuration: `config/gateway.toml` validated into settings, or one line that says why not."""

from __future__ import annotations

import pytest

from gateway.settings import ConfigError, load_config_file, load_settings

CARRIER = """
[[carriers]]
name = "twilio-main"
kind = "twilio"
account_sid = "AC00000000000000000000000000000000"
auth_token = "secret"
"""

TEAMS = """
[[teams]]
name = "service"

[[teams]]
name = "sales"
"""

SERVICE_DESK = """
[[business_numbers]]
number = "+1 555 234 5678"
name = "Service desk"
carrier = "twilio-main"
team = "service"
"""

GOOD = CARRIER + TEAMS + SERVICE_DESK


def business_number(number: str, **fields) -> str:
    values = {"name": "Line", "carrier": "twilio-main", "team": "sales", **fields}
    lines = "".join(f'{key} = "{value}"\n' for key, value in values.items())
    return f'\n[[business_numbers]]\nnumber = "{number}"\n{lines}'


@pytest.fixture
def write_config(tmp_path):
    def write(text: str):
        path = tmp_path / "gateway.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


BAD_CONFIGS = [
    ("unknown carrier reference", GOOD + business_number("+15552349000", carrier="twilio-backup"),
     "business_numbers[1].carrier: no carrier named 'twilio-backup'"),
    ("unknown team", GOOD + business_number("+15552349000", team="billing"),
     "business_numbers[1].team: no team named 'billing'"),
    # Written differently, the same number once normalised.
    ("duplicate number", GOOD + business_number("(555) 234-5678"),
     "business_numbers[1].number: '+15552345678' appears twice"),
    ("duplicate carrier name", GOOD + CARRIER,
     "carriers[1].name: 'twilio-main' appears twice"),
    ("duplicate team name", GOOD + '\n[[teams]]\nname = "sales"\n',
     "teams[2].name: 'sales' appears twice"),
    ("number too short", GOOD + business_number("+1 555"),
     "business_numbers[1].number: '+1 555' is not a possible phone number"),
    ("number that is words", GOOD + business_number("call us"),
     "business_numbers[1].number: 'call us' is a sender id, not a phone number or short code"),
    ("bad region", '[gateway]\ndefault_region = "XX"\n' + GOOD,
     "gateway.default_region: Value error, unknown region 'XX' (use a two-letter code such as 'US')"),
    ("missing ${ENV} with no default", GOOD.replace('"secret"', '"${TWILIO_AUTH_TOKEN}"'),
     "carriers[0].auth_token: environment variable TWILIO_AUTH_TOKEN is not set"),
    ("missing ${ENV} in a list of tables",
     GOOD + '\n[[notify.webhooks]]\nurl = "https://crm.example.com/hooks"\nsecret = "${CRM_SECRET}"\n',
     "notify.webhooks[0].secret: environment variable CRM_SECRET is not set"),
    ("bad TOML", GOOD + "\n[gateway\n",
     "not valid TOML: Expected ']' at the end of a table declaration (at line 20, column 9)"),
    ("unknown key in a section", '[gateway]\ncolour = "blue"\n' + GOOD,
     "gateway.colour: Extra inputs are not permitted"),
    ("unknown key in a list of tables", GOOD.replace('team = "service"', 'team = "service"\nteem = "x"'),
     "business_numbers[0].teem: Extra inputs are not permitted"),
    ("unknown section", "[gatewya]\n" + GOOD, "gatewya: Extra inputs are not permitted"),
    ("wrong type", '[gateway]\nconversation_expiry_hours = "soon"\n' + GOOD,
     "gateway.conversation_expiry_hours: Input should be a valid integer,"
     " unable to parse string as an integer"),
    ("wrong type in a list of tables",
     GOOD.replace('team = "service"', 'team = "service"\nmax_per_second = "fast"'),
     "business_numbers[0].max_per_second: Input should be a valid number,"
     " unable to parse string as a number"),
    ("out of range", '[gateway]\nconversation_expiry_hours = 0\n' + GOOD,
     "gateway.conversation_expiry_hours: Input should be greater than 0"),
    ("unsupported carrier kind", GOOD.replace('kind = "twilio"', 'kind = "plivo"'),
     "carriers[0].kind: Input should be 'twilio'"),
    ("missing required key", GOOD.replace('name = "Service desk"\n', ""),
     "business_numbers[0].name: Field required"),
]


@pytest.mark.parametrize("label, text, problem", [pytest.param(*bad, id=bad[0]) for bad in BAD_CONFIGS])
def test_a_bad_config_is_one_line_naming_the_file_the_key_and_the_problem(write_config, label, text, problem):
    # Given a valid config spoiled in one place
    path = write_config(text)

    with pytest.raises(ConfigError) as error:
        load_config_file(path, environ={})

    assert str(error.value) == f"{path}: {problem}", label
    assert "\n" not in str(error.value)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path / "nowhere", environ={})

    assert str(error.value) == f"{tmp_path / 'nowhere'}: file not found"


@pytest.mark.parametrize(
    "written, environ, value",
    [
        ("${TOKEN}", {"TOKEN": "from-env"}, "from-env"),
        ("${TOKEN:-fallback}", {}, "fallback"),
        ("${TOKEN:-fallback}", {"TOKEN": "from-env"}, "from-env"),
        # As in the shell, ':-' also stands in for a variable that is set but empty.
        ("${TOKEN:-fallback}", {"TOKEN": ""}, "fallback"),
        ("${TOKEN:-}", {}, ""),
        ("${TOKEN}", {"TOKEN": ""}, ""),
        ("${PREFIX}-${TOKEN:-b}-tail", {"PREFIX": "a"}, "a-b-tail"),
        ("$TOKEN and {TOKEN}", {"TOKEN": "x"}, "$TOKEN and {TOKEN}"),   # only ${...} is a reference
        ("${TOKEN:-a:-b}", {}, "a:-b"),
    ],
)
def test_environment_references_are_expanded(write_config, written, environ, value):
    path = write_config(GOOD.replace('"secret"', f'"{written}"'))

    config = load_config_file(path, environ=environ)

    assert config.carriers[0].auth_token.get_secret_value() == value


@pytest.mark.parametrize(
    "region, written, e164",
    [
        ("US", "+1 555 234 9000", "+15552349000"),
        ("US", "(555) 234-9000", "+15552349000"),
        ("US", "15552349000", "+15552349000"),
        ("US", "555.234.9000", "+15552349000"),
        ("us", "555 234 9000", "+15552349000"),
        ("GB", "020 7946 0018", "+442079460018"),
        ("GB", "+1 555 234 9000", "+15552349000"),
        ("US", "384387", "384387"),   # a short code is kept as it is
    ],
)
def test_business_numbers_are_normalised_to_e164_in_the_default_region(write_config, region, written, e164):
    path = write_config(f'[gateway]\ndefault_region = "{region}"\n' + GOOD + business_number(written))
    settings = load_settings(path, environ={})

    assert [b.number for b in settings.config.business_numbers] == ["+15552345678", e164]
    assert settings.business_number(e164).name == "Line"
    assert settings.default_region == region.upper()


def test_the_environment_supplies_urls_and_paths(write_config):
    path = write_config(GOOD)
    environ = {"DATABASE_URL": "postgresql://db/gw", "REDIS_URL": "redis://r:6379/0",
               "PUBLIC_URL": "https://sms.example.com/", "MEDIA_DIR": "/srv/media"}

    settings = load_settings(path.parent, environ=environ)

    assert settings.config_path == path
    assert (settings.database_url, settings.redis_url) == ("postgresql://db/gw", "redis://r:6379/0")
    assert settings.public_url == "https://sms.example.com"   # signatures append the path to it
    assert str(settings.media_dir) == "/srv/media"


def test_gateway_config_names_the_directory_when_no_argument_does(write_config):
    path = write_config(GOOD)

    settings = load_settings(environ={"GATEWAY_CONFIG": str(path.parent)})

    assert settings.config_path == path
    assert settings.carrier_for_account("twilio", "AC00000000000000000000000000000000").name == "twilio-main"
