"""The object API of one site: PUT/GET/HEAD, ranges, versions, and every bad input named by field."""

from __future__ import annotations

import os
import re

import pytest

from tests.manager.conftest import sha


@pytest.fixture
def site(make_sites):
    return make_sites(1)[0]


def test_put_streams_a_new_version_each_time_and_get_returns_the_latest(site):
    first, second = os.urandom(3 << 20), b"second"
    assert site.put("a/b.txt", first)["version"] == 1
    assert site.put("a/b.txt", second) == {"key": "a/b.txt", "size": 6, "sha256": sha(second), "version": 2}
    resp = site.client.get("/v1/objects/a/b.txt")
    assert resp.content == second and resp.headers["etag"] == f'"{sha(second)}"'


def test_head_gives_size_and_sha256_without_a_body(site):
    body = b"x" * 1000
    site.put("k", body)
    resp = site.client.head("/v1/objects/k")
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-length"] == "1000" and resp.headers["x-object-sha256"] == sha(body)


@pytest.mark.parametrize(("header", "status", "want"), [
    ("bytes=0-9", 206, slice(0, 10)),
    ("bytes=990-", 206, slice(990, 1000)),
    ("bytes=-5", 206, slice(995, 1000)),
    ("bytes=500-5000", 206, slice(500, 1000)),
])
def test_range_requests_return_the_asked_bytes(site, header, status, want):
    body = os.urandom(1000)
    site.put("k", body)
    resp = site.client.get("/v1/objects/k", headers={"range": header})
    assert resp.status_code == status and resp.content == body[want]
    assert resp.headers["content-range"] == f"bytes {want.start}-{want.stop - 1}/1000"


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-0"])
def test_unsatisfiable_or_unsupported_ranges_get_416_naming_range(site, header):
    site.put("k", b"z" * 1000)
    resp = site.client.get("/v1/objects/k", headers={"range": header})
    assert resp.status_code == 416 and resp.json()["error"]["field"] == "range"


@pytest.mark.parametrize("key", ["a/%2E%2E/b", "%2E%2E/etc/passwd", "a//b", "a/%2E/b", "semi;colon", "sp%20ace",
                                 "trailing/"])
def test_path_tricks_and_bad_characters_in_keys_are_refused_naming_key(site, key):
    resp = site.client.put(f"/v1/objects/{key}", content=b"x")
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "key"


def test_overlong_key_is_refused(site):
    resp = site.client.put("/v1/objects/" + "k" * 2000, content=b"x")
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "key"


def test_unknown_key_is_404_naming_key(site):
    for method in ("GET", "HEAD"):
        resp = site.client.request(method, "/v1/objects/missing")
        assert resp.status_code == 404
    assert site.client.get("/v1/objects/missing").json()["error"]["field"] == "key"
    resp = site.client.post("/v1/transfers", json={"key": "missing", "to": "manager-0"})
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "key"


def test_transfer_to_unknown_peer_or_to_itself_is_refused_naming_to(make_sites):
    a, _ = make_sites(2)
    a.put("k", b"x")
    for to in ("manager-9", "elsewhere", "manager-0"):
        resp = a.client.post("/v1/transfers", json={"key": "k", "to": to})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "to", resp.text


def test_malformed_transfer_requests_name_the_field(site):
    assert site.client.post("/v1/transfers", json={"key": "k"}).json()["error"]["field"] == "to"
    assert site.client.post("/v1/transfers", json={"key": "k", "to": "m", "x": 1}).json()["error"]["field"] == "x"
    resp = site.client.get("/v1/transfers/../../etc")
    assert resp.status_code in (404, 422)
    resp = site.client.get("/v1/transfers/nothex")
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "transfer_id"
    resp = site.client.get("/v1/transfers/" + "0" * 32)
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "transfer_id"


def test_links_list_each_peer(make_sites):
    a, _, _ = make_sites(3)
    body = a.client.get("/v1/links").json()
    assert body["site"] == "manager-0"
    assert [link["peer"] for link in body["links"]] == ["manager-1", "manager-2"]


def test_writes_need_the_bearer_token_and_reads_do_not(make_sites, tmp_path):
    from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file

    token_file = ensure_token_file(tmp_path / "secrets" / "http-token")
    site = make_sites(1, token_file=token_file)[0]
    good = bearer_header(client_token(token_file))
    writes = [("PUT", "/v1/objects/k", {"content": b"x"}),
              ("POST", "/v1/transfers", {"json": {"key": "k", "to": "manager-1"}}),
              ("POST", "/v1/transactions", {"json": {"payload": "eA==", "cluster": "tpbft", "idempotency_key": "a"}}),
              ("POST", "/v1/allocations", {"json": {}}),
              ("DELETE", "/v1/allocations/a", {})]
    for method, path, body in writes:
        for headers in ({}, {"authorization": "Bearer wrong-token-wrong-token"}):
            resp = site.client.request(method, path, headers=headers, **body)
            assert resp.status_code == 401, (method, path, resp.text)
            assert resp.json()["error"]["field"] == "authorization"
    assert site.client.put("/v1/objects/k", content=b"x", headers=good).status_code == 200
    assert site.client.get("/v1/objects/k").content == b"x"
    assert site.client.head("/v1/objects/k").status_code == 200
    assert site.client.get("/v1/links").status_code == 200


@pytest.mark.parametrize("key", ["a", "a/b.c", ".hidden", "..x", "...", "a~b/c-d_e", "x" * 1024])
def test_keys_the_store_takes_match_the_openapi_key_pattern(site, key):
    schema = site.client.get("/openapi.json").json()
    [param] = schema["paths"]["/v1/objects/{key}"]["put"]["parameters"]
    assert re.fullmatch(param["schema"]["pattern"].strip("^$"), key) and len(key) <= param["schema"]["maxLength"]
    assert site.client.put(f"/v1/objects/{key}", content=b"v").status_code == 200


@pytest.mark.parametrize("key", [".", "..", "a/..", "a/./b", "a//b", "a b", "é"])
def test_keys_the_store_refuses_are_outside_the_openapi_key_pattern(site, key):
    schema = site.client.get("/openapi.json").json()
    [param] = schema["paths"]["/v1/objects/{key}"]["put"]["parameters"]
    assert not re.fullmatch(param["schema"]["pattern"].strip("^$"), key)


def test_transfer_schema_lists_this_sites_peers_and_the_known_codecs(make_sites):
    from dwcp.compression.codecs import KEYS

    a, _, _ = make_sites(3)
    body = a.client.get("/openapi.json").json()["components"]["schemas"]["TransferRequest"]["properties"]
    assert body["to"]["enum"] == ["manager-1", "manager-2"]  # never the site itself
    assert [c for c in body["codec"]["enum"] if c is not None] == list(KEYS)


def test_get_and_head_of_an_object_are_separate_documented_operations(site):
    paths = site.client.get("/openapi.json").json()["paths"]["/v1/objects/{key}"]
    assert paths["get"]["operationId"] != paths["head"]["operationId"]
    for method in ("get", "head"):
        responses = paths[method]["responses"]
        assert "application/octet-stream" in responses["200"]["content"]
        assert {"206", "404", "416"} <= set(responses)
