"""<get> of running + provider state: the configuration is cut down by the filter before state is
merged (no copy of all running), with exactly the RFC 6241 §6 result of filtering the whole merge;
and raw pre-serialised state spliced into the reply (server/operational.py's contract)."""

from __future__ import annotations

import copy

import pytest
from lxml import etree
from nc_harness import NS, Harness

from server.filters import SubtreeFilter
from server.operational import RAW_PREFIX, StateRequest, raw_placeholder
from server.statedata import merge_state
from server.tree import Forest
from server.xmlns import NC_NS, WD_NS

M = NS["m"]
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"

RUNNING = f"""<virtual-routers xmlns="{M}">
<virtual-router><name>default</name><router-id>10.0.0.1</router-id>
 <home-agent><address>10.0.0.1</address></home-agent>
 <address-pool><name>p1</name><range><start>10.0.9.1</start><end>10.0.9.9</end></range></address-pool>
 <mobile-node><name>a</name><home-address>10.0.0.5</home-address>
  <security-association><spi>300</spi><key>{KEY}</key></security-association></mobile-node>
 <mobile-node><name>b</name><home-address>10.0.0.6</home-address></mobile-node>
</virtual-router>
<virtual-router><name>blue</name><router-id>10.1.0.1</router-id>
 <home-agent><address>10.1.0.1</address><udp-port>4434</udp-port></home-agent>
 <mobile-node><name>a</name><home-address>10.1.0.5</home-address></mobile-node>
</virtual-router></virtual-routers>"""


def binding(home: str, coa: str) -> str:
    return (
        f'<binding xmlns="{M}"><home-address>{home}</home-address><care-of-address>{coa}</care-of-address>'
        "<lifetime-granted>600</lifetime-granted></binding>"
    )


STATE = {
    "default": [binding("10.0.0.5", "192.0.2.1"), binding("10.0.0.6", "192.0.2.2")],
    "blue": [binding("10.1.0.5", "192.0.2.1")],
}


def as_raw(router: str, bindings: list[str]) -> bytes | list[bytes]:
    if router == "default":
        return [b.encode() for b in bindings]
    return "".join(bindings).encode()


def state_xml(raw: StateRequest | None = None) -> etree._Element:
    """Both routers' bindings and tunnels, default's pool usage; with `raw`, bindings as raw bytes."""
    parts = [f'<virtual-routers xmlns="{M}">']
    for name, bindings in STATE.items():
        if raw is not None:  # one router's as one bytes object, the other's as parts (a page each)
            raw.raw[f"b-{name}"] = as_raw(name, bindings)
            inner = raw_placeholder(f"b-{name}")
        else:
            inner = "".join(bindings)
        parts.append(f"<virtual-router><name>{name}</name><home-agent><bindings>{inner}</bindings>")
        parts.append("<tunnels><tunnel><care-of-address>192.0.2.1</care-of-address></tunnel></tunnels>")
        parts.append("</home-agent>")
        if name == "default":
            parts.append(
                "<address-pool><name>p1</name><size>9</size><in-use>0</in-use><free>9</free></address-pool>"
            )
        parts.append("</virtual-router>")
    parts.append("</virtual-routers>")
    return etree.fromstring("".join(parts))


class TreeProvider:
    """State as an lxml tree (the server filters it)."""

    roots = frozenset({(M, "virtual-routers")})

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        return [state_xml()]


def running() -> Forest:
    return Forest([etree.fromstring(RUNNING, etree.XMLParser(remove_blank_text=True))])


@pytest.fixture
def h():
    harness = Harness(providers=[TreeProvider()])
    harness.core.ds.running = running()
    yield harness
    harness.close()


def canon(roots) -> list[bytes]:
    return [etree.tostring(copy.deepcopy(r), method="c14n") for r in roots]


def reference(h: Harness, flt: str | None, wd: str = "explicit") -> list[bytes]:
    """RFC 6241 §6 on the whole merge: running copied whole, state merged, then the filter."""
    data, _ = merge_state(h.core.schema, h.core.ds.running.copy(), [state_xml()])
    data = data.copy()
    if wd != "explicit":
        h.core.wd.apply(data, wd)
    if flt is not None:
        f = etree.fromstring(f'<filter xmlns="{NC_NS}" type="subtree">{flt}</filter>')
        data = SubtreeFilter(f, h.core.schema).apply(data)
    return canon(r for r in data if r.tag.startswith(f"{{{M}}}"))


def got(h: Harness, flt: str, wd: str = "explicit") -> list[bytes]:
    extra = f'<with-defaults xmlns="{WD_NS}">{wd}</with-defaults>' if wd != "explicit" else ""
    d = h.client().data(f'<get><filter type="subtree">{flt}</filter>{extra}</get>')
    return canon(r for r in d if r.tag.startswith(f"{{{M}}}"))


def vrs(inner: str) -> str:
    return f'<virtual-routers xmlns="{M}">{inner}</virtual-routers>'


FILTERS = {
    "one binding by key": vrs(
        "<virtual-router><name>default</name><home-agent><bindings><binding><home-address>10.0.0.6</home-address>"
        "</binding></bindings></home-agent></virtual-router>"
    ),
    "all bindings": vrs("<virtual-router><home-agent><bindings/></home-agent></virtual-router>"),
    "config content match filters state": vrs(
        "<virtual-router><router-id>10.1.0.1</router-id><home-agent><bindings/></home-agent></virtual-router>"
    ),
    "state content match on a binding": vrs(
        "<virtual-router><home-agent><bindings><binding><care-of-address>192.0.2.1</care-of-address>"
        "<lifetime-granted/></binding></bindings></home-agent></virtual-router>"
    ),
    "state content match selects config of the entry": vrs(
        "<virtual-router><address-pool><in-use>0</in-use><range/></address-pool></virtual-router>"
    ),
    "state content match that fails": vrs(
        "<virtual-router><address-pool><in-use>7</in-use><range/></address-pool></virtual-router>"
    ),
    "config and state siblings": vrs(
        "<virtual-router><name>blue</name><mobile-node/><home-agent><tunnels/><address/></home-agent></virtual-router>"
    ),
    "whole tree": vrs(""),
    "only keys of routers": vrs("<virtual-router><name/></virtual-router>"),
    "OR of sibling filters": vrs(
        "<virtual-router><name>default</name><mobile-node><name>b</name></mobile-node></virtual-router>"
        "<virtual-router><name>default</name><home-agent><bindings><binding><home-address>10.0.0.5</home-address>"
        "</binding></bindings></home-agent></virtual-router>"
    ),
    "base namespace filter": "<virtual-routers><virtual-router><name>blue</name><home-agent><bindings/></home-agent>"
    "</virtual-router></virtual-routers>",
    "nothing matches": vrs(
        "<virtual-router><name>green</name><home-agent><bindings/></home-agent></virtual-router>"
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_get_equals_filtering_the_whole_merge(h, name):
    flt = FILTERS[name]
    want = reference(h, flt)
    assert got(h, flt) == want
    if name not in ("nothing matches", "state content match that fails"):
        assert want, "the case must select something"


@pytest.mark.parametrize("wd", ["report-all", "report-all-tagged", "trim"])
def test_with_defaults_sees_entries_the_config_alone_would_not_select(h, wd):
    # udp-port is absent from default's config: only with-defaults makes it (and its match) exist
    for flt in (
        vrs("<virtual-router><home-agent><udp-port/></home-agent></virtual-router>"),
        vrs("<virtual-router><home-agent><udp-port>434</udp-port><bindings/></home-agent></virtual-router>"),
        vrs(
            "<virtual-router><mobile-node><security-association><algorithm/></security-association></mobile-node></virtual-router>"
        ),
    ):
        assert got(h, flt, wd) == reference(h, flt, wd)
    if wd != "trim":
        d = etree.fromstring(got(h, FILTERS["all bindings"].replace("<bindings/>", "<udp-port/>"), wd)[0])
        assert [e.text for e in d.iter(f"{{{M}}}udp-port")] == ["434", "4434"]


def test_state_only_filter_copies_no_configured_mobile_node(h):
    """The configuration pre-filter of a state-only request keeps nothing of the 'mobile-node' lists."""
    f = etree.fromstring(f'<filter xmlns="{NC_NS}">{FILTERS["all bindings"]}</filter>')
    pre = SubtreeFilter(f, h.core.schema, superset=True).apply(h.core.ds.running)
    assert not [e for r in pre for e in r.iter(f"{{{M}}}mobile-node")]
    f = etree.fromstring(f'<filter xmlns="{NC_NS}">{FILTERS["one binding by key"]}</filter>')
    (pre,) = SubtreeFilter(f, h.core.schema, superset=True).apply(h.core.ds.running)
    # the router matched by its key: kept with the key alone, for the state merged below it
    assert [etree.QName(e).localname for e in pre.iter()] == ["virtual-routers", "virtual-router", "name"]
    # a content match on a state leaf cannot be decided on configuration: the entry is kept
    f = etree.fromstring(f'<filter xmlns="{NC_NS}">{FILTERS["state content match that fails"]}</filter>')
    (pre,) = SubtreeFilter(f, h.core.schema, superset=True).apply(h.core.ds.running)
    assert pre.findtext(f".//{{{M}}}range/{{{M}}}start") == "10.0.9.1"
    assert len(SubtreeFilter(f, h.core.schema).apply(h.core.ds.running)) == 0  # exact mode decides


def test_running_is_not_modified_by_get(h):
    before = canon(h.core.ds.running)
    for flt in FILTERS.values():
        got(h, flt)
    h.client().data("<get/>")
    assert canon(h.core.ds.running) == before


def test_nacm_key_hidden_and_not_probeable(h):
    c = h.client("joe", frozenset({"users"}))
    sa = vrs("<virtual-router><mobile-node><security-association/></mobile-node></virtual-router>")
    d = c.data(f'<get><filter type="subtree">{sa}</filter></get>')
    assert d.find(f".//{{{M}}}spi") is not None and d.find(f".//{{{M}}}key") is None
    probe = vrs(
        f"<virtual-router><mobile-node><security-association><key>{KEY}</key></security-association></mobile-node></virtual-router>"
    )
    assert len(c.data(f'<get><filter type="subtree">{probe}</filter></get>')) == 0


# -- raw pre-serialised state ---------------------------------------------------------------------------------
class RawProvider:
    """Bindings as raw bytes, filtered exactly by the provider for the home-address it is asked for."""

    roots = frozenset({(M, "virtual-routers")})

    def __init__(self) -> None:
        self.requests: list[StateRequest] = []

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        self.requests.append(request)
        top = state_xml(request)
        homes = (
            []
            if request.subtree is None
            else request.subtree.findall(f".//{{{M}}}binding/{{{M}}}home-address")
        )
        if homes:  # push-down: exactly the named binding
            want = homes[0].text.strip()
            for key in request.raw:
                keep = [b for b in STATE[key[2:]] if f"<home-address>{want}<" in b]
                request.raw[key] = as_raw(key[2:], keep)
        return [top]


@pytest.fixture
def hr():
    prov = RawProvider()
    harness = Harness(providers=[prov])
    harness.core.ds.running = running()
    harness.prov = prov
    yield harness
    harness.close()


def raw_get(h: Harness, flt: str | None, extra: str = "") -> etree._Element:
    f = "" if flt is None else f'<filter type="subtree">{flt}</filter>'
    return h.client().data(f"<get>{f}{extra}</get>")


def homes(d: etree._Element) -> list[str]:
    return [b.findtext(f"{{{M}}}home-address") for b in d.iter(f"{{{M}}}binding")]


def test_raw_bytes_spliced_with_their_namespace(hr):
    d = raw_get(hr, FILTERS["all bindings"])
    assert homes(d) == ["10.0.0.5", "10.0.0.6", "10.1.0.5"]
    for b in d.iter(f"{{{M}}}binding"):  # parsed by lxml in the module's namespace, below <bindings>
        assert b.getparent().tag == f"{{{M}}}bindings"
        assert b.findtext(f"{{{M}}}lifetime-granted") == "600"
    assert RAW_PREFIX.encode() not in etree.tostring(d)
    assert d.find(f".//{{{M}}}mobile-node") is None and d.find(f".//{{{M}}}tunnels") is None
    # no filter: everything, config and raw state together
    d = raw_get(hr, None)
    assert homes(d) == ["10.0.0.5", "10.0.0.6", "10.1.0.5"] and len(d.findall(f".//{{{M}}}mobile-node")) == 3


def test_raw_content_is_not_filtered_again(hr):
    """The provider's bytes are taken as exact: the server does not look below the placeholder."""
    d = raw_get(hr, FILTERS["one binding by key"])
    assert homes(d) == ["10.0.0.6"]
    # a filter asking for one leaf: this provider ignores it, and the server does not re-filter
    flt = vrs(
        "<virtual-router><name>blue</name><home-agent><bindings><binding><care-of-address/></binding></bindings></home-agent></virtual-router>"
    )
    (b,) = raw_get(hr, flt).iter(f"{{{M}}}binding")
    assert b.findtext(f"{{{M}}}lifetime-granted") == "600"


def test_raw_placeholder_kept_or_dropped_by_the_filter(hr):
    # containment through a placeholder the provider left empty: omitted, with its ancestors
    flt = FILTERS["one binding by key"].replace("10.0.0.6", "10.0.0.99")
    assert len(raw_get(hr, flt)) == 0
    # selection of a placeholder: kept, even empty
    hr.prov.get_state = lambda request: [_empty_bindings(request)]
    d = raw_get(
        hr, vrs("<virtual-router><name>blue</name><home-agent><bindings/></home-agent></virtual-router>")
    )
    (bindings,) = d.iter(f"{{{M}}}bindings")
    assert len(bindings) == 0 and not (bindings.text or "").strip()


def test_raw_parts_of_blanks_are_empty(hr):
    """Parts holding only whitespace are no content: a containment match through them is omitted."""

    def blanks(request):
        top = _empty_bindings(request)
        request.raw["e"] = [b"", b"  \n", b"\t"]
        return [top]

    hr.prov.get_state = blanks
    flt = vrs(
        "<virtual-router><name>blue</name><home-agent><bindings><binding/></bindings></home-agent></virtual-router>"
    )
    assert len(raw_get(hr, flt)) == 0


def _empty_bindings(request: StateRequest) -> etree._Element:
    request.raw["e"] = b""
    return etree.fromstring(
        f'<virtual-routers xmlns="{M}"><virtual-router><name>blue</name><home-agent><bindings>'
        f"{raw_placeholder('e')}</bindings></home-agent></virtual-router></virtual-routers>"
    )


def test_raw_dropped_when_the_filter_does_not_reach_it(hr):
    d = raw_get(hr, vrs("<virtual-router><home-agent><tunnels/></home-agent></virtual-router>"))
    assert d.find(f".//{{{M}}}tunnel") is not None and d.find(f".//{{{M}}}bindings") is None
    assert RAW_PREFIX.encode() not in etree.tostring(d)
    # a content match on a config leaf excludes a router: its raw bindings go with it
    assert homes(raw_get(hr, FILTERS["config content match filters state"])) == ["10.1.0.5"]
    d = raw_get(
        hr,
        vrs("<virtual-router><name>default</name><mobile-node><name>a</name></mobile-node></virtual-router>"),
    )
    assert homes(d) == [] and RAW_PREFIX.encode() not in etree.tostring(d)


def test_raw_token_in_configuration_is_never_spliced(hr):
    hr.core.ds.running = running()
    nai = etree.SubElement(hr.core.ds.running.find(f"{{{M}}}virtual-routers")[0][4], f"{{{M}}}nai")
    nai.text = raw_placeholder("b-default")
    d = raw_get(hr, None)
    assert d.findtext(f".//{{{M}}}mobile-node/{{{M}}}nai") == raw_placeholder("b-default")
    assert homes(d) == ["10.0.0.5", "10.0.0.6", "10.1.0.5"]


def test_raw_unknown_key_is_plain_text(hr):
    def unknown(request):
        request.raw["other"] = b"<x/>"
        return [
            etree.fromstring(
                f'<virtual-routers xmlns="{M}"><virtual-router><name>blue</name><home-agent><bindings>'
                f"{raw_placeholder('nope')}</bindings></home-agent></virtual-router></virtual-routers>"
            )
        ]

    hr.prov.get_state = unknown
    d = raw_get(hr, FILTERS["all bindings"])
    assert d.findtext(f".//{{{M}}}bindings") == raw_placeholder("nope")


def test_raw_with_xpath_get_data_and_max_depth(hr):
    d = hr.client().data(
        f"<get><filter type='xpath' xmlns:q='{M}' select='/q:virtual-routers/q:virtual-router/q:router-id'/></get>"
    )
    assert homes(d) == ["10.0.0.5", "10.0.0.6", "10.1.0.5"]  # the provider filtered with the XPath
    assert d.findtext(f".//{{{M}}}router-id") == "10.0.0.1"
    nmda = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
    get_data = (
        f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores">'
        "<datastore>ds:operational</datastore>%s</get-data>"
    )
    r = hr.client().rpc(get_data % f"<subtree-filter>{FILTERS['one binding by key']}</subtree-filter>")
    assert homes(r.find(f"{{{nmda}}}data")) == ["10.0.0.6"]
    r = hr.client().rpc(get_data % "<config-filter>false</config-filter>")
    data = r.find(f"{{{nmda}}}data")
    assert homes(data) == ["10.0.0.5", "10.0.0.6", "10.1.0.5"] and data.find(f".//{{{M}}}router-id") is None
    r = hr.client().rpc(get_data % "<max-depth>4</max-depth>")
    data = r.find(f"{{{nmda}}}data")
    assert len(data.findall(f".//{{{M}}}bindings")) == 2 and homes(data) == []
    assert RAW_PREFIX.encode() not in etree.tostring(r)
