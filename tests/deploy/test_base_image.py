"""The stand-in recipe's readings of the host: its Debian mirror and its pip settings."""

from __future__ import annotations

from tests.deploy.base_image import mirror_from, pip_conf_from

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_is_the_main_suite_of_a_deb822_file() -> None:
    assert mirror_from([(DEB822, True)]) == "http://mirror.example/debian"


def test_mirror_skips_security_disabled_source_and_non_main_entries() -> None:
    one_line = """\
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/k.gpg] https://third.example/apt stable contrib
deb [signed-by=/k.gpg] https://archive.example/debian bookworm main contrib  # the one
"""
    disabled = (
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n"
    )
    sources = [(one_line, False), (disabled, True)]
    assert mirror_from(sources) == "https://archive.example/debian"
    assert mirror_from([(disabled, True)]) is None
    assert mirror_from([("deb file:/srv/debian bookworm main\n", False)]) is None


def test_pip_conf_keeps_network_settings_and_drops_local_paths() -> None:
    listing = """\
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple https://mirror.example/simple'
global.find-links='/opt/wheels'
global.index-url='https://proxy.example/pypi/simple'
:env:.default-timeout='180'
:env:.trusted-host='proxy.example'
"""
    assert pip_conf_from(listing).splitlines() == [
        "[global]",
        "cert = /etc/ssl/certs/ca-certificates.crt",
        "index-url = https://proxy.example/pypi/simple",
        "extra-index-url = https://mirror.example/simple",
        "trusted-host = proxy.example",
        "timeout = 180",
    ]


def test_pip_conf_without_host_settings_only_trusts_the_system_bundle() -> None:
    assert pip_conf_from("") == "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
