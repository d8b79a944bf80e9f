"""The CMS registry: which CMS types exist, and which one a run uses for its connection."""

import pytest

from cms_operators import registry
from cms_operators.backend import CmsBackend, CmsConfigError
from provisioning.rules import AccountRules


def test_every_cms_type_has_rules_a_hook_and_a_backend_made_without_network():
    for name, kind in registry.cms_types().items():
        assert kind.name == name and isinstance(kind.rules, AccountRules)
        assert kind.hook().conn_type == name  # the CMS type is its Airflow connection type
        assert isinstance(kind.backend("cms_nowhere"), CmsBackend)


def test_a_connection_of_a_cms_type_picks_that_cms():
    assert registry.for_connection("wordpress", None, "cms_default").name == "wordpress"
    assert registry.for_connection("WordPress", "wordpress", "cms_default").name == "wordpress"


@pytest.mark.parametrize("conn_type", ["http", "https", None, ""])
def test_a_generic_connection_leaves_it_to_cms_type_and_then_wordpress(conn_type):
    assert registry.for_connection(conn_type, None, "cms_default").name == "wordpress"
    assert registry.for_connection(conn_type, " WordPress ", "cms_default").name == "wordpress"


def test_cms_type_must_agree_with_the_connection_type(monkeypatch):
    wordpress = registry.get("wordpress")
    fake = registry.CmsType(name="drupal", label="Drupal", rules=wordpress.rules, hook_class="x.Hook",
                            backend_class="x.Backend")
    monkeypatch.setattr(registry, "cms_types", lambda: {"wordpress": wordpress, "drupal": fake})
    with pytest.raises(CmsConfigError, match="cms_type: drupal.*'cms_main' is of type wordpress"):
        registry.for_connection("wordpress", "drupal", "cms_main")


def test_a_connection_type_that_names_no_cms_is_refused_naming_the_types():
    with pytest.raises(CmsConfigError, match="'cms_main' is of type 'postgres'.*wordpress"):
        registry.for_connection("postgres", None, "cms_main")


def test_an_unknown_cms_type_names_the_supported_ones():
    with pytest.raises(CmsConfigError, match="'typo3' is not supported.*wordpress"):
        registry.get("typo3")


def test_an_ssh_connection_carries_backdrop():
    assert registry.generic_connection_types() == ("http", "https", "ssh")
    assert registry.for_connection("ssh", None, "cms_default").name == "backdrop"
    assert registry.for_connection("ssh", "backdrop", "cms_default").name == "backdrop"
    assert registry.for_connection("backdrop", None, "cms_default").name == "backdrop"
    assert registry.for_connection("http", None, "cms_default").name == "wordpress"


def test_a_cms_refuses_a_generic_connection_type_it_cannot_use():
    with pytest.raises(CmsConfigError, match="cms_type: backdrop, which cannot use connection 'cms_main' of type "
                                             "http: give the connection the type backdrop \\(or ssh\\)"):
        registry.for_connection("http", "backdrop", "cms_main")
    with pytest.raises(CmsConfigError, match="cms_type: wordpress, which cannot use connection 'cms_main' of type ssh"):
        registry.for_connection("ssh", "wordpress", "cms_main")


def test_a_generic_type_several_cms_types_take_needs_cms_type(monkeypatch):
    known = registry.cms_types()
    second = registry.CmsType(name="sshcms", label="Another", rules=known["backdrop"].rules, hook_class="x.Hook",
                              backend_class="x.Backend", generic_connection_types=("ssh",))
    monkeypatch.setattr(registry, "cms_types", lambda: {**known, "sshcms": second})
    with pytest.raises(CmsConfigError, match="several CMS types use \\(backdrop, sshcms\\): set cms_type"):
        registry.for_connection("ssh", None, "cms_main")
    assert registry.for_connection("ssh", "sshcms", "cms_main").name == "sshcms"
