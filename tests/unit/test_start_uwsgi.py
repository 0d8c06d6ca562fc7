"""scripts/start-uwsgi.py: the address uWSGI listens on, found by a network's subnet (Swarm)."""

import importlib.util

import pytest

from mediacms_stack.stack import config

_spec = importlib.util.spec_from_file_location(
    "start_uwsgi", config.ROOT / "scripts/start-uwsgi.py"
)
start_uwsgi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(start_uwsgi)


def test_the_address_in_the_subnet_is_chosen_among_the_interfaces():
    addresses = ["127.0.0.1", "10.0.7.12", "10.239.0.5", "172.18.0.3"]
    assert start_uwsgi.address_in("10.239.0.0/24", addresses) == "10.239.0.5"
    assert "127.0.0.1" in start_uwsgi.interface_addresses()  # read from this machine's


@pytest.mark.parametrize(("subnet", "said"), [
    ("10.240.0.0/24", "no address of this container is in 10.240.0.0/24 (it has 127.0.0.1"),
    ("10.239.0.5/24", "'10.239.0.5/24' is not a network"),
    ("app", "'app' is not a network"),
])  # fmt: skip
def test_a_subnet_without_our_address_or_not_a_network_stops_with_one_line(subnet, said):
    with pytest.raises(SystemExit) as stopped:
        start_uwsgi.address_in(subnet, ["127.0.0.1", "10.239.0.5"])
    assert said in str(stopped.value)
