"""RpcError rendering (RFC 6241 Appendix A) and prefix rewriting of error-paths."""

from __future__ import annotations

import pytest
from lxml import etree

from server.errors import RpcError, combine, with_request_prefixes

M = "urn:mipha:yang:mipha-home-agent"


def test_rpc_error_xml_exact():
    err = RpcError(
        "data-missing",
        "missing",
        app_tag="instance-required",
        path="/mipha:virtual-routers",
        path_nsmap={"mipha": M},
        info=(("bad-element", "x"),),
    )
    assert etree.tostring(err.to_xml()).decode() == (
        '<rpc-error xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><error-type>application</error-type>'
        "<error-tag>data-missing</error-tag><error-severity>error</error-severity>"
        "<error-app-tag>instance-required</error-app-tag>"
        f'<error-path xmlns:mipha="{M}">/mipha:virtual-routers</error-path>'
        '<error-message xml:lang="en">missing</error-message>'
        "<error-info><bad-element>x</bad-element></error-info></rpc-error>"
    )


def test_unknown_tag_or_type_refused():
    with pytest.raises(ValueError):
        RpcError("no-such-tag")
    with pytest.raises(ValueError):
        RpcError("in-use", type="bogus")


def test_reprefix_outside_quotes_only():
    err = combine(
        [
            RpcError(
                "invalid-value",
                "x",
                path="/mipha:a[mipha:k='2001:db8::1']/mipha:b",
                path_nsmap={"mipha": M},
                info=(("non-unique", "/mipha:a[mipha:k='x:y']"),),
            ),
            RpcError("in-use", "y"),
        ]
    )
    out = with_request_prefixes(err, {M: "h"}).all()
    assert out[0].path == "/h:a[h:k='2001:db8::1']/h:b"
    assert out[0].path_nsmap == {"h": M}
    assert out[0].info == (("non-unique", "/h:a[h:k='x:y']"),)
    assert [e.tag for e in out] == ["invalid-value", "in-use"]
