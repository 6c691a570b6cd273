"""The [media] section: safe defaults, and one-line errors for bad values."""

from __future__ import annotations

import pytest

from gateway.settings import ConfigError, load_settings
from tests.conftest import TEST_CONFIG


def settings_with(tmp_path, extra: str):
    (tmp_path / "gateway.toml").write_text(TEST_CONFIG + extra)
    return load_settings(tmp_path, environ={})


def test_media_limits_default_to_safe_values(tmp_path):
    media = settings_with(tmp_path, "").config.media

    assert (media.max_file_bytes, media.max_message_bytes) == (5 * 1024 * 1024, 10 * 1024 * 1024)
    assert (media.max_redirects, media.connect_timeout_s, media.read_timeout_s) == (3, 5, 30)
    assert {"image/svg+xml", "text/html", "image/*"}.isdisjoint(media.allowed_content_types)


@pytest.mark.parametrize(
    "extra, message",
    [
        ('\n[media]\nallowed_content_types = ["jpeg"]\n',
         "media.allowed_content_types: Value error, 'jpeg' is not a content type "
         "(write e.g. 'image/jpeg' or 'image/*')"),
        ("\n[media]\nmax_redirects = 50\n", "media.max_redirects: Input should be less than or equal to 10"),
        ("\n[media]\nmax_file_bytes = 0\n", "media.max_file_bytes: Input should be greater than 0"),
        ("\n[media]\nmax_bytes = 5\n", "media.max_bytes: Extra inputs are not permitted"),
    ],
)
def test_a_bad_media_setting_is_named_in_one_line(tmp_path, extra, message):
    with pytest.raises(ConfigError) as raised:
        settings_with(tmp_path, extra)

    assert str(raised.value) == f"{tmp_path / 'gateway.toml'}: {message}"
