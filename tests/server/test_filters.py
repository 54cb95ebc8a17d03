"""Subtree filtering exactly per RFC 6241 §6 and :xpath filtering, on the real schema."""

from __future__ import annotations

import pytest
from lxml import etree

from server.filters import SubtreeFilter, xpath_filter
from server.schema import Schema
from server.tree import Forest
from server.validation import Validator

M = "urn:mipha:yang:mipha-home-agent"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"

DATA = f"""<virtual-routers xmlns="{M}"><virtual-router><name>default</name><router-id>10.0.0.1</router-id>
<mobile-node><name>a</name><nai>a@x</nai><home-address>10.0.0.5</home-address></mobile-node>
<mobile-node><name>b</name><nai>b@x</nai><home-address>10.0.0.6</home-address></mobile-node>
</virtual-router><virtual-router><name>blue</name><mobile-node><name>a</name><home-address>10.1.0.5</home-address></mobile-node></virtual-router></virtual-routers>"""


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(Validator().ctx)


def data() -> Forest:
    parser = etree.XMLParser(remove_blank_text=True)
    return Forest([etree.fromstring(DATA.replace("\n", ""), parser)])


def run(schema, flt: str) -> str:
    f = etree.fromstring(f'<filter xmlns="{NC}" type="subtree">{flt}</filter>')
    return "".join(etree.tostring(r).decode() for r in SubtreeFilter(f, schema).apply(data()))


def vrs(inner: str) -> str:
    return f'<virtual-routers xmlns="{M}">{inner}</virtual-routers>'


def test_empty_filter_selects_nothing(schema):
    assert run(schema, "") == ""


def test_selection_node_selects_subtree(schema):
    assert run(schema, vrs("")) == etree.tostring(data().to_data()[0]).decode()


def test_content_match_anded(schema):
    got = run(
        schema,
        vrs(
            "<virtual-router><mobile-node><name>a</name><home-address>10.0.0.6</home-address></mobile-node></virtual-router>"
        ),
    )
    assert got == ""
    got = run(
        schema,
        vrs(
            "<virtual-router><name>default</name><mobile-node><name>a</name><home-address>10.0.0.5</home-address></mobile-node></virtual-router>"
        ),
    )
    assert got == vrs(
        "<virtual-router><name>default</name><mobile-node><name>a</name><nai>a@x</nai><home-address>10.0.0.5</home-address></mobile-node></virtual-router>"
    )


def test_content_match_with_selection(schema):
    got = run(
        schema,
        vrs(
            "<virtual-router><name>default</name><mobile-node><name>b</name><nai/></mobile-node></virtual-router>"
        ),
    )
    assert got == vrs(
        "<virtual-router><name>default</name><mobile-node><name>b</name><nai>b@x</nai></mobile-node></virtual-router>"
    )


def test_keys_kept_for_containment_through_lists(schema):
    got = run(schema, vrs("<virtual-router><mobile-node><home-address/></mobile-node></virtual-router>"))
    assert got == vrs(
        "<virtual-router><name>default</name><mobile-node><name>a</name><home-address>10.0.0.5</home-address></mobile-node>"
        "<mobile-node><name>b</name><home-address>10.0.0.6</home-address></mobile-node></virtual-router>"
        "<virtual-router><name>blue</name><mobile-node><name>a</name><home-address>10.1.0.5</home-address></mobile-node></virtual-router>"
    )


def test_sibling_filters_are_ored(schema):
    got = run(
        schema,
        vrs(
            "<virtual-router><name>default</name><mobile-node><name>a</name><nai/></mobile-node><mobile-node><name>b</name><home-address/></mobile-node></virtual-router>"
        ),
    )
    assert got == vrs(
        "<virtual-router><name>default</name><mobile-node><name>a</name><nai>a@x</nai></mobile-node>"
        "<mobile-node><name>b</name><home-address>10.0.0.6</home-address></mobile-node></virtual-router>"
    )


def test_containment_without_match_is_omitted(schema):
    assert (
        run(
            schema, vrs("<virtual-router><name>blue</name><mobile-node><nai/></mobile-node></virtual-router>")
        )
        == ""
    )


def test_namespaces(schema):
    assert run(schema, '<virtual-routers xmlns="urn:other"/>') == ""
    # an element in the base namespace (no xmlns of its own) matches any namespace
    assert run(
        schema, "<virtual-routers><virtual-router><name>blue</name></virtual-router></virtual-routers>"
    ) == vrs(
        "<virtual-router><name>blue</name><mobile-node><name>a</name><home-address>10.1.0.5</home-address></mobile-node></virtual-router>"
    )


def test_xpath_with_request_prefixes(schema):
    got = xpath_filter(
        data(),
        "/x:virtual-routers/x:virtual-router[x:name='blue']/x:mobile-node/x:home-address",
        {"x": M},
        schema,
    )
    assert "".join(etree.tostring(r).decode() for r in got) == vrs(
        "<virtual-router><name>blue</name><mobile-node><name>a</name><home-address>10.1.0.5</home-address></mobile-node></virtual-router>"
    )
    assert len(xpath_filter(data(), "/y:virtual-routers", {"y": "urn:other"}, schema)) == 0


def test_xpath_syntax_error(schema):
    from server.errors import RpcError

    with pytest.raises(RpcError) as ei:
        xpath_filter(data(), "/x:virtual-routers[", {"x": M}, schema)
    assert ei.value.tag == "invalid-value"


@pytest.mark.parametrize(
    "flt",
    [
        "",
        vrs(""),
        vrs(
            "<virtual-router><mobile-node><name>a</name><home-address>10.0.0.5</home-address></mobile-node></virtual-router>"
        ),
        vrs(
            "<virtual-router><name>default</name><mobile-node><name>b</name><nai/></mobile-node></virtual-router>"
        ),
        vrs("<virtual-router><mobile-node><home-address/></mobile-node></virtual-router>"),
        vrs(
            "<virtual-router><name>default</name><mobile-node><name>a</name><nai/></mobile-node><mobile-node><name>b</name><home-address/></mobile-node></virtual-router>"
        ),
        vrs("<virtual-router><name>blue</name><mobile-node><nai/></mobile-node></virtual-router>"),
        vrs("<virtual-router><name/></virtual-router>"),
        vrs("<virtual-router><name>default</name></virtual-router>")
        + vrs("<virtual-router><router-id/></virtual-router>"),
        "<virtual-routers><virtual-router><name>blue</name></virtual-router></virtual-routers>",
    ],
)
def test_prune_in_place_equals_copying_filter(schema, flt):
    f = etree.fromstring(f'<filter xmlns="{NC}" type="subtree">{flt}</filter>')
    copied = [etree.tostring(r, method="c14n") for r in SubtreeFilter(f, schema).apply(data())]
    pruned = [etree.tostring(r, method="c14n") for r in SubtreeFilter(f, schema).prune(data())]
    assert pruned == copied
