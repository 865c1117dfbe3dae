"""Token auth and project isolation (contract section 6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import attrs
import jwt
import orjson
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import trio_sse
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient

SECRET = "test-secret-of-reasonable-length-0123456789"


def token(
    sub: str = "alice",
    *,
    projects: list[str] | None = None,
    publish: bool = False,
    admin: bool = False,
    expires_in: float = 3600,
    key: Any = SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    payload = {
        "sub": sub,
        "exp": int(time.time() + expires_in),
        "sse": {"projects": ["*"] if projects is None else projects, "publish": publish, "admin": admin},
        **claims,
    }
    return jwt.encode(payload, key, algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def open_stream_status(client: SSETestClient, **kwargs: Any) -> tuple[int | None, Any]:
    async with client.stream(**kwargs) as stream:
        if stream.status == 200:
            return 200, await stream.next_event()
        return stream.status, (stream.json, stream.headers)


@pytest.fixture
def auth_client(client_factory):  # type: ignore[no-untyped-def]
    return client_factory(jwt_secret=SECRET)


@pytest.mark.parametrize("way", ["header", "cookie", "query"])
async def test_a_valid_token_opens_a_stream_whichever_way_it_is_passed(auth_client, way: str) -> None:
    value = token()
    kwargs: dict[str, Any] = {
        "header": {"headers": bearer(value)},
        "cookie": {"headers": {"cookie": f"other=1; sse_token={value}"}},
        "query": {"query": {"access_token": value}},
    }[way]
    async with auth_client as (_, client):
        status, connected = await open_stream_status(client, **kwargs)
        assert status == 200
        assert connected.type == "connected"


@pytest.mark.parametrize(
    "case",
    ["missing", "expired", "bad_signature", "alg_none", "garbage", "not_bearer"],
)
async def test_bad_or_missing_tokens_get_401_json_with_www_authenticate(auth_client, case: str) -> None:
    headers = {
        "missing": {},
        "expired": bearer(token(expires_in=-10)),
        "bad_signature": bearer(token(key="another-secret-of-reasonable-length-000")),
        "alg_none": bearer(
            jwt.encode({"sub": "eve", "exp": int(time.time()) + 60, "sse": {"admin": True}}, None, algorithm="none")
        ),
        "garbage": bearer("not.a.jwt"),
        "not_bearer": {"authorization": f"Basic {token()}"},
    }[case]
    async with auth_client as (hub, client):
        status, (body, response_headers) = await open_stream_status(client, headers=headers)
        assert status == 401
        assert body["error"] == "invalid_token"
        assert response_headers["www-authenticate"].startswith("Bearer")
        publish = await client.post("/sse/publish", json={"event_type": "commit", "data": 1}, headers=headers)
        assert publish.status == 401
        assert hub.snapshot()["events_published"] == 0


async def test_wrong_audience_or_issuer_is_refused(client_factory) -> None:
    settings = {"jwt_secret": SECRET, "jwt_audience": "sse-hub", "jwt_issuer": "https://id.example"}
    async with client_factory(**settings) as (_, client):
        good = token(aud="sse-hub", iss="https://id.example")
        assert (await open_stream_status(client, headers=bearer(good)))[0] == 200
        for bad in (token(aud="other", iss="https://id.example"), token(aud="sse-hub", iss="https://evil"), token()):
            assert (await open_stream_status(client, headers=bearer(bad)))[0] == 401


def _write_key(tmp_path: Any, private: Any) -> str:
    path = tmp_path / "key.pem"
    path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(path)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_public_key_tokens_verify_and_algorithm_confusion_is_refused(client_factory, tmp_path, kind: str) -> None:
    if kind == "rsa":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algorithm = "RS256"
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        algorithm = "ES256"
    path = _write_key(tmp_path, private)
    async with client_factory(jwt_public_key=path) as (_, client):
        good = token(key=private, algorithm=algorithm)
        assert (await open_stream_status(client, headers=bearer(good)))[0] == 200
        # HS256 signed with the public key's PEM as the secret: the classic algorithm
        # confusion. PyJWT refuses to create such a token, so it is built by hand.
        pem = (tmp_path / "key.pem").read_bytes()

        def b64(data: bytes) -> bytes:
            return base64.urlsafe_b64encode(data).rstrip(b"=")

        header = b64(b'{"alg":"HS256","typ":"JWT"}')
        body = b64(b'{"sub":"eve","exp":%d,"sse":{"projects":["*"],"admin":true}}' % int(time.time() + 60))
        signature = b64(hmac.new(pem, header + b"." + body, hashlib.sha256).digest())
        confused = (header + b"." + body + b"." + signature).decode()
        assert (await open_stream_status(client, headers=bearer(confused)))[0] == 401


async def test_project_limited_token_only_opens_streams_of_its_projects(auth_client) -> None:
    limited = bearer(token(projects=["p1"]))
    async with auth_client as (_, client):
        assert (await open_stream_status(client, headers=limited))[0] == 403
        assert (await open_stream_status(client, headers=limited, query={"project": "p2"}))[0] == 403
        assert (await open_stream_status(client, headers=limited, query={"project": "p1"}))[0] == 200


async def test_project_limited_stream_never_receives_another_projects_events(auth_client) -> None:
    async with auth_client as (hub, client):
        async with client.stream(headers=bearer(token(projects=["p1"])), query={"project": "p1"}) as stream:
            await stream.next_event()
            published = []
            for n in range(30):
                project = ["p1", "p2", None][n % 3]
                published.append((await hub.publish("commit", {"n": n}, project_id=project), project))
            expected = [event_id for event_id, project in published if project in ("p1", None)]
            with trio.fail_after(5):
                received = [e.id for e in await stream.events(len(expected))]
            assert received == expected
            # Nothing else is on its way: a p2 event, then a p1 marker that must come next.
            await hub.publish("commit", {"n": "late"}, project_id="p2")
            marker = await hub.publish("commit", {"n": "marker"}, project_id="p1")
            with trio.fail_after(5):
                assert (await stream.next_event()).id == marker
            assert stream.pending() == []


async def test_publish_needs_the_publish_right_and_stays_within_the_tokens_projects(auth_client) -> None:
    async with auth_client as (hub, client):

        def commit(project: str | None) -> dict[str, Any]:
            return {"event_type": "commit", "data": 1, "project_id": project}

        reader = bearer(token(projects=["*"], publish=False))
        assert (await client.post("/sse/publish", json=commit(None), headers=reader)).status == 403
        writer = bearer(token(projects=["p1"], publish=True))
        assert (await client.post("/sse/publish", json=commit("p1"), headers=writer)).status == 202
        for project in ("p2", None):
            assert (await client.post("/sse/publish", json=commit(project), headers=writer)).status == 403
        batch = {"events": [commit("p1"), commit("p2")]}
        assert (await client.post("/sse/publish", json=batch, headers=writer)).status == 403
        assert hub.snapshot()["events_published"] == 1


async def test_subscribe_is_limited_to_the_owner_or_an_admin_and_to_allowed_projects(auth_client) -> None:
    alice = bearer(token("alice", projects=["p1"]))
    async with auth_client as (_, client):
        async with client.stream(headers=alice, query={"project": "p1"}) as stream:
            connection_id = (await stream.next_event()).data.split('"connection_id":"')[1].split('"')[0]
            body = {"connection_id": connection_id, "event_types": ["commit"]}
            mallory = bearer(token("mallory"))
            assert (await client.post("/sse/subscribe", json=body, headers=mallory)).status == 403
            assert (await client.post("/sse/subscribe", json=body, headers=alice)).status == 200
            admin = bearer(token("root", admin=True))
            assert (await client.post("/sse/subscribe", json=body, headers=admin)).status == 200
            for project in ("p2", None):
                moved = {**body, "project_id": project}
                assert (await client.post("/sse/subscribe", json=moved, headers=alice)).status == 403


async def test_connections_listing_and_prod_test_event_need_admin(client_factory) -> None:
    async with client_factory(jwt_secret=SECRET, test_event="admin") as (_, client):
        user, admin = bearer(token("u")), bearer(token("root", admin=True))
        assert (await client.get("/sse/connections", headers=user)).status == 403
        assert (await client.get("/sse/connections", headers=admin)).status == 200
        assert (await client.post("/sse/test-event", headers=user)).status == 403
        assert (await client.post("/sse/test-event", headers=admin)).status == 202


async def test_open_test_event_with_auth_on_needs_the_publish_right_and_stays_in_its_projects(
    client_factory,
) -> None:
    # "open" (the dev default) waives the admin right, not the publish right: otherwise any
    # valid token could forge events into every project through /sse/test-event.
    forged = {"event_type": "commit", "data": {"sha": "forged"}, "project_id": "p2"}
    async with client_factory(jwt_secret=SECRET, test_event="open") as (hub, client):
        watcher = bearer(token("watcher", projects=["p2"]))
        async with client.stream(query={"project": "p2", "types": "commit"}, headers=watcher) as stream:
            await stream.next_event()
            reader = bearer(token("reader"))  # every project, no publish right
            p1_publisher = bearer(token("bob", projects=["p1"], publish=True))
            for headers, body in [
                (reader, forged),
                (reader, None),
                (p1_publisher, forged),
                (p1_publisher, {**forged, "project_id": None}),  # a broadcast reaches p2 too
            ]:
                refused = await client.post("/sse/test-event", json=body, headers=headers)
                assert refused.status == 403 and refused.json()["error"] == "forbidden", refused.json()
            assert (await client.post("/sse/test-event", json=forged)).status == 401  # no token at all
            assert hub.snapshot()["events_published"] == 0
            own = await client.post("/sse/test-event", json={**forged, "project_id": "p1"}, headers=p1_publisher)
            assert own.status == 202
            publisher = bearer(token("carol", publish=True))
            allowed = await client.post("/sse/test-event", json=forged, headers=publisher)
            assert allowed.status == 202
            event = await stream.next_event()  # the p1 event never reached this p2 stream
            assert event.id == allowed.json()["id"] and json.loads(event.data) == {"sha": "forged"}


async def test_a_stream_ends_when_its_token_expires(autojump_clock) -> None:
    settings = Settings(jwt_secret=SECRET, heartbeat_interval=10)
    async with trio_sse.open_hub(settings) as hub, SSETestClient(trio_sse.create_app(hub=hub)) as client:
        async with client.stream(headers=bearer(token(expires_in=60))) as stream:
            await stream.next_event()
            start = trio.current_time()
            await stream.wait_ended(timeout=120)
            assert 55 <= trio.current_time() - start <= 61
            assert stream.ended  # the response was finished, not cut off
        assert hub.snapshot()["disconnects"] == {"token_expired": 1}


# -- the token matrix: every way of passing a token by every kind of token ----------------------

AUDIENCE, ISSUER = "sse-hub", "https://id.example"
WAYS = ["header", "cookie", "query"]
CASES = [
    "valid",
    "missing",
    "malformed",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "alg_none",
    "alg_confusion",
    "wrong_audience",
    "wrong_issuer",
]
OTHER_SECRET = "another-secret-of-reasonable-length-000"


@attrs.frozen
class KeySetup:
    """One way of configuring auth: the settings, and how to sign a token the server accepts."""

    settings: dict[str, Any]
    key: Any
    algorithm: str
    wrong_key: Any  # same algorithm, another key: a bad signature
    secrets: tuple[str, ...]  # what must never appear in a log line


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hs256_signed_with(secret: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token signed with ``secret`` built by hand (PyJWT refuses a PEM as an HMAC key)."""
    header, body = _b64(b'{"alg":"HS256","typ":"JWT"}'), _b64(json.dumps(claims).encode())
    signature = _b64(hmac.new(secret, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, Any]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(params=["hs256", "rs256"])
def key_setup(request: pytest.FixtureRequest, rsa_keys: tuple[Any, Any], tmp_path: Any) -> KeySetup:
    private, other = rsa_keys
    audience = {"jwt_audience": AUDIENCE, "jwt_issuer": ISSUER}
    if request.param == "hs256":
        return KeySetup({"jwt_secret": SECRET, **audience}, SECRET, "HS256", OTHER_SECRET, (SECRET,))
    path = _write_key(tmp_path, private)
    pem = (tmp_path / "key.pem").read_text()
    return KeySetup({"jwt_public_key": path, **audience}, private, "RS256", other, (pem, pem.splitlines()[1]))


def matrix_token(case: str, setup: KeySetup, rsa_keys: tuple[Any, Any], tmp_path: Any) -> str | None:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "matrix-user",
        "exp": now + 3600,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "sse": {"projects": ["*"], "publish": True, "admin": True},
    }
    if case == "missing":
        return None
    if case == "malformed":
        return "this.is-not.a-jwt"
    if case == "expired":
        claims["exp"] = now - 10
    elif case == "not_yet_valid":
        claims["nbf"] = now + 3600
    elif case == "wrong_audience":
        claims["aud"] = "another-service"
    elif case == "wrong_issuer":
        claims["iss"] = "https://evil.example"
    elif case == "bad_signature":
        return jwt.encode(claims, setup.wrong_key, algorithm=setup.algorithm)
    elif case == "alg_none":
        return jwt.encode(claims, None, algorithm="none")
    elif case == "alg_confusion":
        if setup.algorithm == "RS256":  # HS256 keyed with the public key the server trusts
            return hs256_signed_with((tmp_path / "key.pem").read_bytes(), claims)
        return jwt.encode(claims, rsa_keys[0], algorithm="RS256")  # an asymmetric token for an HMAC server
    return jwt.encode(claims, setup.key, algorithm=setup.algorithm)


def passed(way: str, value: str | None) -> dict[str, Any]:
    """Request keyword arguments carrying ``value`` (None: that way, but without a token)."""
    if way == "header":
        return {"headers": {} if value is None else bearer(value)}
    if way == "cookie":
        return {"headers": {"cookie": "theme=dark" if value is None else f"theme=dark; sse_token={value}"}}
    return {"query": {"access_token": value or ""}}


def assert_invalid_token(status: int | None, headers: dict[str, str], body: Any) -> None:
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert headers["content-type"].startswith("application/json")
    assert body["error"] == "invalid_token" and isinstance(body["message"], str)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("way", WAYS)
async def test_token_matrix_on_the_stream_publish_and_admin_endpoints(
    client_factory, key_setup: KeySetup, rsa_keys: Any, tmp_path: Any, caplog: Any, way: str, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    value = matrix_token(case, key_setup, rsa_keys, tmp_path)
    kwargs = passed(way, value)
    async with client_factory(**key_setup.settings) as (hub, client):
        async with client.stream(**kwargs) as stream:
            stream_status, stream_headers = stream.status, stream.headers
            stream_body = (await stream.next_event()).type if stream.status == 200 else stream.json
        publish = await client.post("/sse/publish", json={"event_type": "commit", "data": 1}, **kwargs)
        listing = await client.get("/sse/connections", **kwargs)
        if case == "valid":
            assert (stream_status, stream_body, publish.status, listing.status) == (200, "connected", 202, 200)
        else:
            assert_invalid_token(stream_status, stream_headers, stream_body)
            for reply in (publish, listing):
                assert_invalid_token(reply.status, reply.headers, reply.json())
            assert hub.snapshot()["events_published"] == 0
    audit = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "trio_sse.audit"]
    if case == "valid":
        assert [line["event"] for line in audit] == ["admin_action"]
        assert audit[0]["who"] == "matrix-user"
    else:
        assert [(line["event"], line["status"], line["who"]) for line in audit] == [
            ("request_refused", 401, "127.0.0.1")
        ] * 3
    # Nothing a caller could reuse ever reaches a log line: not the token, no 18 characters of it, not the key.
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in key_setup.secrets:
        assert secret not in logged
    token_pieces = [value[i : i + 12] for i in range(0, max(0, len(value or "") - 11), 6)] if value else []
    for piece in token_pieces:
        assert piece not in logged, piece


# -- the sse_token cookie is an ambient credential: only listed origins may use it ---------------

LISTED = "https://app.example"


@pytest.mark.parametrize("origins", [(LISTED,), ("*",)])
async def test_the_cookie_is_refused_on_requests_from_origins_not_listed_for_credentials(
    client_factory, origins: tuple[str, ...]
) -> None:
    # A browser attaches the cookie to a "simple" cross-site POST (text/plain, no preflight)
    # from any page: without this check such a page could publish, change the victim's
    # streams or fire test events with the victim's rights (CSRF), even though the answer
    # is withheld from it. `*` allows origins without credentials, so it lists none.
    value = token("victim", publish=True)
    cookie = {"cookie": f"sse_token={value}"}
    commit = {"event_type": "commit", "data": {"forged": True}}
    async with client_factory(jwt_secret=SECRET, cors_origins=origins) as (hub, client):
        async with client.stream(headers=bearer(value)) as stream:
            await stream.next_event()
            subscribe = {"connection_id": stream.connection_id, "event_types": ["commit"]}
            evil = {**cookie, "origin": "https://evil.example", "content-type": "text/plain"}
            for method, path, body in [
                ("POST", "/sse/publish", commit),
                ("POST", "/sse/test-event", commit),
                ("POST", "/sse/subscribe", subscribe),
                ("GET", "/sse/connections", None),
            ]:
                refused = await client.request(method, path, json=body, headers=evil)
                assert refused.status == 401, (path, refused.json())
                assert "origin" in refused.json()["message"]
            assert (await open_stream_status(client, headers=evil))[0] == 401
            assert hub.snapshot()["events_published"] == 0
            assert (await client.post("/sse/subscribe", json=subscribe, headers=evil)).status == 401
            # The same request with the token in a header is not ambient: a foreign page had to know it.
            with_header = {**bearer(value), "origin": "https://evil.example"}
            assert (await client.post("/sse/publish", json=commit, headers=with_header)).status == 202
            # Same origin (Origin matches Host, or the browser says so), no Origin (not a
            # browser's cross-origin request), or a listed origin: the cookie is taken.
            accepted = [
                cookie,
                {**cookie, "origin": "http://testserver"},
                {**cookie, "origin": "http://proxied.example:8443", "sec-fetch-site": "same-origin"},
            ]
            if origins == (LISTED,):
                accepted.append({**cookie, "origin": LISTED})
            for headers in accepted:
                assert (await client.post("/sse/publish", json=commit, headers=headers)).status == 202, headers
                assert (await open_stream_status(client, headers=headers))[0] == 200, headers


async def test_subscribe_never_moves_a_stream_out_of_the_projects_of_the_token_that_opened_it(
    auth_client,
) -> None:
    # The rights that bound a stream are those of the token it was opened with: neither an
    # admin nor another token of the same `sub` may widen them through /sse/subscribe.
    opener = bearer(token("alice", projects=["p1"]))
    async with auth_client as (hub, client):
        async with client.stream(headers=opener, query={"project": "p1"}) as stream:
            await stream.next_event()
            body = {"connection_id": stream.connection_id, "event_types": ["commit"]}
            for caller in (bearer(token("root", admin=True)), bearer(token("alice", projects=["*"]))):
                for project in ("p2", None):
                    moved = await client.post("/sse/subscribe", json={**body, "project_id": project}, headers=caller)
                    assert moved.status == 403, moved.json()
                    assert moved.json()["error"] == "forbidden"
                kept = await client.post("/sse/subscribe", json={**body, "project_id": "p1"}, headers=caller)
                assert kept.status == 200
                assert (await stream.next_event()).type == "subscription_updated"
            await hub.publish("commit", {"secret": True}, project_id="p2")
            marker = await hub.publish("commit", {"n": "marker"}, project_id="p1")
            with trio.fail_after(5):
                assert (await stream.next_event()).id == marker


@pytest.mark.parametrize("project", [["p1"], {"p": 1}, 7])
async def test_subscribe_with_a_project_id_of_the_wrong_type_is_a_400_for_a_limited_token(
    auth_client, project: Any
) -> None:
    alice = bearer(token("alice", projects=["p1"]))
    async with auth_client as (_, client):
        async with client.stream(headers=alice, query={"project": "p1"}) as stream:
            await stream.next_event()
            body = {"connection_id": stream.connection_id, "event_types": ["commit"], "project_id": project}
            for caller in (alice, bearer(token("root", admin=True))):
                reply = await client.post("/sse/subscribe", json=body, headers=caller)
                assert reply.status == 400, reply
                assert reply.json()["error"] == "invalid_request"


async def test_a_signed_token_with_an_exp_beyond_any_float_is_served_not_a_500(auth_client) -> None:
    # JSON integers have no bound: PyJWT accepts exp = 10**400 (the far future), which
    # float() cannot hold. Such a token never expires; it must not crash the request.
    far = jwt.encode(
        {"sub": "alice", "exp": 10**400, "sse": {"projects": ["*"], "publish": True, "admin": True}},
        SECRET,
        algorithm="HS256",
    )
    async with auth_client as (_, client):
        assert (await open_stream_status(client, headers=bearer(far)))[0] == 200
        published = await client.post("/sse/publish", json={"event_type": "commit", "data": 1}, headers=bearer(far))
        assert published.status == 202
        assert (await client.get("/sse/connections", headers=bearer(far))).status == 200


# -- issue 11, item 9: the secret's length and the subject ---------------------------------


@pytest.mark.parametrize("secret", ["k", "x" * 31, "é" * 15 + "x"], ids=["1 byte", "31 bytes", "31 bytes of UTF-8"])
def test_the_prod_profile_refuses_an_hs256_secret_under_32_bytes(secret: str) -> None:
    from trio_sse.settings import SettingsError

    # A short secret is found offline from one token by trying candidates (RFC 7518 3.2
    # asks for a key as long as the hash, 256 bits); then anyone mints admin tokens.
    with pytest.raises(SettingsError) as info:
        trio_sse.create_app(settings=Settings.from_profile("prod", jwt_secret=secret))
    size = len(secret.encode())
    assert str(info.value).startswith(f"jwt_secret is {size} bytes; the prod profile requires at least 32")


@pytest.mark.parametrize("secret", ["x" * 32, "é" * 16], ids=["32 bytes", "32 bytes of UTF-8"])
def test_the_prod_profile_runs_with_a_secret_of_32_bytes(secret: str) -> None:
    trio_sse.create_app(settings=Settings.from_profile("prod", jwt_secret=secret))


def test_the_dev_profile_runs_with_a_short_secret_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_sse.auth")
    trio_sse.create_app(settings=Settings(jwt_secret=f"{time.monotonic_ns():020d}"[-20:]))  # new: not cached
    (record,) = [r for r in caplog.records if r.name == "trio_sse.auth"]
    assert record.levelno == logging.WARNING
    assert "jwt_secret is 20 bytes" in record.getMessage() and "32" in record.getMessage()


async def test_a_token_with_an_empty_sub_is_refused_401(auth_client) -> None:
    # Streams are owned, and per-client limits counted, by sub: every token with an empty
    # one would share them.
    empty = bearer(token(""))
    async with auth_client as (hub, client):
        status, (body, headers) = await open_stream_status(client, headers=empty)
        assert (status, body["error"]) == (401, "invalid_token")
        assert body["message"] == "sub must be a non-empty string"
        assert headers["www-authenticate"].startswith("Bearer")
        publish = await client.post("/sse/publish", json={"event_type": "commit", "data": 1}, headers=empty)
        assert (publish.status, publish.json()["error"]) == (401, "invalid_token")
        assert (await client.get("/sse/connections", headers=empty)).status == 401
        assert hub.snapshot()["events_published"] == 0


def test_the_cookie_is_found_in_any_of_the_cookie_fields_http2_may_split_it_into() -> None:
    # RFC 9113 8.2.3: an HTTP/2 client may send each cookie in a field of its own, and
    # hypercorn passes them on as they came; the first field alone misses the token.
    from trio_sse.http.auth import Authenticator

    authenticator = Authenticator(Settings(jwt_secret=SECRET))
    fields = [(b"cookie", b"theme=dark"), (b"cookie", f"sse_token={token('crumbs')}".encode()), (b"cookie", b"x=1")]
    assert authenticator.authenticate(fields).sub == "crumbs"
