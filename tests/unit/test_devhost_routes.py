"""Route templates and route selection of the dev host's HTTP trigger."""
from __future__ import annotations

import pytest

from devhost.functions import FunctionSpec
from devhost.httpserver import HttpRoute, Router
from devhost.routes import RouteTemplate, RouteTemplateError, is_reserved


@pytest.mark.parametrize("template, path, expected", [
    ("operations/{id}", "/operations/abc", {"id": "abc"}),
    ("operations/{id}", "/Operations/ABC", {"id": "ABC"}),  # literals ignore case, values keep it
    ("operations/{id}", "/operations/a%20b%2Fc", {"id": "a b/c"}),
    ("operations/{id}", "/operations/abc/", {"id": "abc"}),
    ("operations/{id}", "/operations", None),
    ("operations/{id}", "/operations/a/b", None),
    ("records", "/records", {}),
    ("records", "/records/x", None),
    ("/records/", "/records", {}),
    ("records/{id?}", "/records", {}),
    ("records/{id?}", "/records/7", {"id": "7"}),
    ("records/{id=first}", "/records", {"id": "first"}),
    ("a/{x}/{y?}", "/a/1", {"x": "1"}),
    ("a/{x}/{y?}", "/a/1/2", {"x": "1", "y": "2"}),
    ("files/{*path}", "/files/a/b/c.txt", {"path": "a/b/c.txt"}),
    ("files/{**path}", "/files", {}),
    ("files/{name}.{ext}", "/files/report.final.pdf", {"name": "report.final", "ext": "pdf"}),
    ("files/{name}.{ext?}", "/files/readme", {"name": "readme"}),
    ("v{version}/items", "/v2/items", {"version": "2"}),
    ("", "", {}),
    ("", "/", {}),
    ("lit{{eral}}", "/lit{eral}", {}),
])
def test_template_matching(template, path, expected):
    assert RouteTemplate(template).match(path) == expected


@pytest.mark.parametrize("template, good, bad", [
    ("n/{id:int}", "-12", "12x"),
    ("n/{id:int}", "2147483647", "2147483648"),
    ("n/{id:long}", "2147483648", "9223372036854775808"),
    ("n/{id:bool}", "True", "yes"),
    ("n/{id:guid}", "0f8fad5b-d9cb-469f-a165-70867728950e", "not-a-guid"),
    ("n/{id:alpha}", "abcXYZ", "abc1"),
    ("n/{id:double}", "1.5e3", "1.5.3"),
    ("n/{id:datetime}", "2024-01-02T03:04:05", "yesterday"),
    ("n/{id:min(10)}", "10", "9"),
    ("n/{id:max(10)}", "10", "11"),
    ("n/{id:range(1,5)}", "5", "6"),
    ("n/{id:minlength(3)}", "abc", "ab"),
    ("n/{id:maxlength(3)}", "abc", "abcd"),
    ("n/{id:length(2)}", "ab", "abc"),
    ("n/{id:length(2,3)}", "abc", "a"),
    ("n/{id:regex(^\\d{{3}}$)}", "123", "1234"),
    ("n/{id:int:min(1)}", "1", "0"),
    ("n/{id:int?}", "5", "five"),
])
def test_constraints(template, good, bad):
    t = RouteTemplate(template)
    assert t.match(f"/n/{good}") == {"id": good}
    assert t.match(f"/n/{bad}") is None


@pytest.mark.parametrize("template, fragment", [
    ("a/{id", "unclosed"),
    ("a/id}", "unmatched"),
    ("a/{id:nope}", "unknown route constraint"),
    ("a/{id:min(x)}", "integer argument"),
    ("a/{*rest}/b", "catch-all must be the last"),
    ("a/{id?}/b", "only the last parameters may be optional"),
    ("a/{id}/{ID}", "appears twice"),
    ("a/{x}{y}", "literal between"),
    ("a//b", "empty segment"),
    ("a/{1bad}", "bad parameter name"),
])
def test_invalid_templates(template, fragment):
    with pytest.raises(RouteTemplateError, match=fragment):
        RouteTemplate(template)


def test_reserved_admin_routes():
    assert is_reserved("admin/recover")
    assert is_reserved("/Admin")
    assert is_reserved("administration/health")  # the host checks the prefix, not the segment
    assert not is_reserved("records/admin")


def _route(name: str, template: str, methods: tuple[str, ...] | None) -> HttpRoute:
    spec = FunctionSpec(name=name, trigger_type="httpTrigger", trigger_arg="req", user_function=lambda req: None)
    return HttpRoute(spec, RouteTemplate(template), frozenset(methods) if methods else None)


@pytest.fixture
def router() -> Router:
    return Router([
        _route("catch_all", "{*path}", ("GET",)),
        _route("by_id", "items/{id}", ("GET", "DELETE")),
        _route("by_number", "items/{id:int}", ("GET",)),
        _route("new_item", "items/new", ("GET",)),
        _route("create", "items", ("POST",)),
        _route("any_method", "anything", None),
    ], "api")


@pytest.mark.parametrize("method, path, function, values", [
    ("GET", "/api/items/new", "new_item", {}),
    ("GET", "/api/items/42", "by_number", {"id": "42"}),
    ("GET", "/api/items/forty-two", "by_id", {"id": "forty-two"}),
    ("DELETE", "/api/items/42", "by_id", {"id": "42"}),
    ("POST", "/API/Items", "create", {}),
    ("PATCH", "/api/anything", "any_method", {}),
    ("GET", "/api/elsewhere/deep", "catch_all", {"path": "elsewhere/deep"}),
])
def test_router_picks_the_most_specific_route(router, method, path, function, values):
    route, got = router.match(method, path)
    assert route.spec.name == function and got == values


def test_router_405_lists_allowed_methods(router):
    assert router.match("PUT", "/api/items/42") == (None, ["DELETE", "GET"])
    # The catch-all takes GET /api/items; a PUT there matches no route's methods.
    assert router.match("GET", "/api/items")[0].spec.name == "catch_all"
    assert router.match("PUT", "/api/items") == (None, ["GET", "POST"])


def test_router_404_outside_prefix_or_routes():
    r = Router([_route("x", "x", ("GET",))], "api")
    assert r.match("GET", "/x") is None
    assert r.match("GET", "/apix") is None
    assert r.match("GET", "/api/y") is None
    assert r.match("GET", "/api/x")[0].spec.name == "x"


def test_empty_route_prefix():
    r = Router([_route("x", "x", ("GET",))], "")
    assert r.match("GET", "/x")[0].spec.name == "x"
