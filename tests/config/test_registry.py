import pytest

from rftbench.errors import DuplicateNameError, RftbenchError, UnknownNameError
from rftbench.registry import Registry, load_plugin_file


def test_unknown_name_lists_known_names_and_close_match():
    reg = Registry("widget")
    reg.add("linear", object())
    reg.add("cosine", object())
    with pytest.raises(UnknownNameError) as ei:
        reg.get("linaer")
    msg = str(ei.value)
    assert "'linaer'" in msg and "Did you mean 'linear'" in msg and "cosine, linear" in msg


def test_duplicate_registration_names_both_sources():
    reg = Registry("widget")
    reg.add("a", object(), source="first.py")
    with pytest.raises(DuplicateNameError, match="first.py.*second.py"):
        reg.add("a", object(), source="second.py")


def test_plugin_file_missing_and_broken(tmp_path):
    with pytest.raises(RftbenchError, match="does not exist"):
        load_plugin_file(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n")
    with pytest.raises(RftbenchError, match="boom"):
        load_plugin_file(bad)
