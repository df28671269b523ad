"""The static topology file and the VIM feed's consistency check."""

from __future__ import annotations

from pathlib import Path

import pytest

from opendoctor.core.model import Host, Server
from opendoctor.inspector.graph import RxGraph
from opendoctor.inspector.graph.feed import GraphFeed
from opendoctor.inspector.graph.topology_file import TopologyFileError, load, parse

GOOD = """
entities:
  - {type: switch, id: tor-1, name: top of rack 1, state: up}
  - {type: power_feed, id: pdu-a}
relations:
  - {source: "switch:tor-1", target: "host:compute1", label: connects}
  - {source: "power_feed:pdu-a", target: "switch:tor-1", label: powers}
  - {source: "switch:tor-1", target: "host:compute9", label: connects}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def test_entities_relations_and_placeholders(tmp_path: Path) -> None:
    graph = RxGraph()
    GraphFeed(graph).load([Host("compute1", "127.0.1.1")], [])
    loaded = load(graph, parse(write(tmp_path, GOOD)))
    assert (loaded.entities, loaded.relations) == (2, 3)
    # compute9 is in no source yet: a placeholder, and a warning that says so.
    [warning] = loaded.warnings
    assert "host:compute9" in warning
    placeholder = graph.get("host:compute9")
    assert placeholder is not None and placeholder.placeholder
    assert graph.get("switch:tor-1").state == "OK"  # type: ignore[union-attr]
    hosts = graph.neighbors("switch:tor-1", "connects", type="host")
    assert {h.id for h in hosts} == {"compute1", "compute9"}
    # When the VIM reports compute9, the placeholder becomes the real host.
    GraphFeed(graph).host(Host("compute9", "127.0.1.9"))
    assert graph.get("host:compute9").placeholder is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("entities: [{type: switch}]", "entities.0.id"),
        ("relations: [{source: tor-1, target: 'host:a', label: x}]", "relations.0.source"),
        ("entities:\n  - {type: switch, id: a\n", "line 3, column 1"),
        ("surprise: 1", "surprise"),
    ],
)
def test_bad_files_say_where(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(TopologyFileError, match=where.replace(".", r"\.")):
        parse(write(tmp_path, text))


def test_the_vim_snapshot_removes_what_the_vim_no_longer_has() -> None:
    graph = RxGraph()
    feed = GraphFeed(graph)
    hosts = [Host("compute1", "a"), Host("compute2", "b")]
    feed.load(hosts, [Server("s1", "vm1", "compute1", "p"), Server("s2", "vm2", "compute2", "p")])
    load(graph, parse_text("entities: [{type: switch, id: tor-1}]"))  # type: ignore[arg-type]
    removed = feed.load(hosts[:1], [Server("s1", "vm1", "compute1", "p")])
    assert removed == 2
    assert graph.get("host:compute2") is None and graph.get("server:s2") is None
    # What the file added is not the VIM's to remove.
    assert graph.get("switch:tor-1") is not None


def parse_text(text: str) -> object:
    import yaml

    from opendoctor.inspector.graph.topology_file import TopologyIn

    return TopologyIn.model_validate(yaml.safe_load(text))
