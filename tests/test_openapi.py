"""openapi.yaml is the contract: it documents every route, and every real response obeys it.

One real server (real PostgreSQL) is exercised on every route, successes and each
error class; each response is checked against the document: the status is documented
for the operation, the media type is one it lists, documented headers are present and
match their schemas, and JSON bodies validate (JSON Schema 2020-12, `$ref`s resolved
inside the document). Static checks keep the document and the code from drifting:
router routes vs. documented paths, and the error-code enum vs. the codes the code raises.
"""
from __future__ import annotations

import ast
import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator
from multidict import CIMultiDictProxy
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from bundle_factory import BundleFactory, default_authorities, make_envelope, make_key
from logserver.api.keys import SEQUENCER
from logserver.bundle import ALL_CODES, decode_leaf, encode_leaf
from logserver.http import errors as api_errors
from logserver.merkle import leaf_hash
from logserver.write.outcomes import SequencerError
from server_harness import start_server, write_config

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:logserver:openapi"
REGISTRY = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(SPEC))
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
JSON = "application/json"
PAGE_SIZE = 2  # limits.entries_page_size of the test server, so paging is exercised
BODY_TIMEOUT_S = 1  # limits.request_timeout_s of the test server


# --- the document ----------------------------------------------------------------------


def escape(segment: str) -> str:
    """One JSON Pointer reference token (RFC 6901 §3)."""
    return segment.replace("~", "~0").replace("/", "~1")


def lookup(pointer: str) -> object:
    node: object = SPEC
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]  # type: ignore[index]
    return node


def deref(pointer: str) -> tuple[str, dict]:
    """Follow local `$ref`s from `pointer`; return the final pointer and object."""
    node = lookup(pointer)
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"{pointer}: only local $refs are used, got {ref}"
        pointer = ref[1:]
        node = lookup(pointer)
    assert isinstance(node, dict), pointer
    return pointer, node


def validate(schema_pointer: str, instance: object) -> None:
    """Validate against the schema at `schema_pointer`, refs resolved in the document."""
    validator = Draft202012Validator({"$ref": f"{SPEC_URI}#{schema_pointer}"}, registry=REGISTRY)
    validator.validate(instance)


def walk(node: object, pointer: str = ""):
    """Every (pointer, dict) in a YAML tree."""
    if isinstance(node, dict):
        yield pointer, node
        for key, value in node.items():
            yield from walk(value, f"{pointer}/{escape(str(key))}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{pointer}/{i}")


def operations():
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def path_regex(template: str) -> re.Pattern[str]:
    """Match a concrete path to a template; the tile index `{N}` spans segments."""
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos:m.start()])
        out += f"(?P<{m[1]}>.+)" if m[1] == "N" else f"(?P<{m[1]}>[^/]+)"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + "$")


# --- checking one real response ----------------------------------------------------------


@dataclass
class Checked:
    status: int
    headers: CIMultiDictProxy[str]
    content_type: str
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return self.json()["error"]["code"]


def check_response(method: str, template: str, url: str, r: Checked) -> None:
    """The response obeys the document's operation `method template`."""
    op_method = "get" if method == "HEAD" else method.lower()
    op_pointer = f"/paths/{escape(template)}/{op_method}"
    op = lookup(op_pointer)
    assert str(r.status) in op["responses"], (
        f"{method} {url}: status {r.status} is not documented for {op_method} {template}: {r.body[:300]!r}"
    )
    pointer, response = deref(f"{op_pointer}/responses/{r.status}")
    for name in response.get("headers", {}):
        header_pointer, header = deref(f"{pointer}/headers/{escape(name)}")
        if header.get("required"):
            assert name in r.headers, f"{method} {url}: documented header {name} missing"
        if name in r.headers:
            validate(f"{header_pointer}/schema", r.headers[name])
    assert r.content_type in response.get("content", {}), (
        f"{method} {url} -> {r.status}: content type {r.content_type} not in {list(response.get('content', {}))}"
    )
    if method == "HEAD":
        assert r.body == b""
    elif r.content_type == JSON:
        validate(f"{pointer}/content/{escape(JSON)}/schema", json.loads(r.body))
    elif r.content_type == "application/yaml":  # the schema describes the parsed document
        validate(f"{pointer}/content/{escape(r.content_type)}/schema", yaml.safe_load(r.body))
    elif r.content_type.startswith("text/"):
        validate(f"{pointer}/content/{escape(r.content_type)}/schema", r.body.decode("utf-8"))
    if 200 <= r.status < 300:
        check_accepted_request(op_pointer, op, template, url)


def check_accepted_request(op_pointer: str, op: dict, template: str, url: str) -> None:
    """A request the server accepted uses only documented parameters, with valid values."""
    params = {}
    for i in range(len(op.get("parameters", []))):
        p_pointer, p_obj = deref(f"{op_pointer}/parameters/{i}")
        params[(p_obj["in"], p_obj["name"])] = p_pointer
    parts = urlsplit(url)
    match = path_regex(template).match(parts.path)
    assert match, f"{url} does not match {template}"
    for name, value in match.groupdict().items():
        validate(f"{params[('path', name)]}/schema", value)
    if not template.startswith(("/v1/", "/tile/", "/checkpoint")):
        return  # the operations routes ignore query parameters (documented)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        assert ("query", name) in params, f"{url}: query parameter {name} is not documented"
        validate(f"{params[('query', name)]}/schema", value)


# --- the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    extra = f"[limits]\nentries_page_size = {PAGE_SIZE}\nrequest_timeout_s = {BODY_TIMEOUT_S}\n"
    cfg = write_config(tmp_path_factory.mktemp("openapi"), database_url, extra=extra)
    s = await start_server(cfg)
    yield s
    await s.close()


async def call(server, method: str, template: str, url: str, *, want: int, **kwargs) -> Checked:
    """Send a request, check the response against the document, and its status."""
    async with server.session.request(method, url, **kwargs) as resp:
        r = Checked(resp.status, resp.headers, resp.content_type, await resp.read())
    check_response(method, template, url, r)
    assert r.status == want, f"{method} {url}: got {r.status}, want {want}: {r.body[:300]!r}"
    return r


async def submit(server, body: bytes, *, want: int, url: str = "/v1/bundles",
                 content_type: str | None = JSON, **kwargs) -> Checked:
    headers = {"Content-Type": content_type} if content_type else {}
    return await call(server, "POST", "/v1/bundles", url, want=want, data=body, headers=headers, **kwargs)


async def log_size(server) -> int:
    return (await call(server, "GET", "/v1/log", "/v1/log", want=200)).json()["tree_size"]


# --- static: the document against the code ------------------------------------------------


def test_router_routes_and_documented_operations_are_the_same(server):
    served = {(r.method, r.resource.canonical) for r in server.app.router.routes() if r.method != "HEAD"}
    documented = {
        (method.upper(), SPEC["paths"][path].get("x-aiohttp-route", path)) for path, method, _ in operations()
    }
    assert served == documented
    # The document promises HEAD on every GET route (aiohttp's add_get adds it).
    heads = {r.resource.canonical for r in server.app.router.routes() if r.method == "HEAD"}
    assert heads == {route for method, route in served if method == "GET"}


def test_document_structure():
    assert SPEC["openapi"].startswith("3.1.")
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for pointer, node in walk(SPEC):
        if "$ref" in node:
            deref(pointer)  # resolves
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, f"{pointer}: open object schema"
            assert node.get("required"), f"{pointer}: no required fields"
    op_ids = [op["operationId"] for _, _, op in operations()]
    assert len(op_ids) == len(set(op_ids))
    for path, method, op in operations():
        assert "503" in op["responses"], f"{method} {path}: 503 not documented"
        for status in op["responses"]:
            pointer, response = deref(f"/paths/{escape(path)}/{method}/responses/{status}")
            assert "Cache-Control" in response.get("headers", {}), f"{pointer}: Cache-Control not documented"
            if status == "503" and path != "/readyz":
                assert "Retry-After" in response["headers"], f"{pointer}: Retry-After not documented"
            for media, content in response["content"].items():
                assert "schema" in content, f"{pointer} {media}: no schema"


def _codes_in_api_source() -> set[str]:
    """String codes the API, HTTP and server modules pass to ApiError/error_response, `code=` or {"code": ...}."""
    codes: set[str] = set()
    for path in [p for d in ("api", "http", "server") for p in (ROOT / "logserver" / d).glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("ApiError", "error_response") and len(node.args) >= 2:
                    arg = node.args[1]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        codes.add(arg.value)
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                        codes.add(kw.value.value)
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "code" and isinstance(v, ast.Constant):
                        codes.add(v.value)
            elif isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                for arg, default in zip(positional[len(positional) - len(node.defaults):], node.defaults, strict=True):
                    if arg.arg == "code" and isinstance(default, ast.Constant):
                        codes.add(default.value)
    return codes


def _sequencer_codes() -> set[str]:
    seen, todo = set(), [SequencerError]
    while todo:
        cls = todo.pop()
        seen.add(cls.code)
        todo.extend(cls.__subclasses__())
    return seen


def test_error_code_enum_is_exactly_the_codes_the_server_produces():
    documented = set(SPEC["components"]["schemas"]["ErrorCode"]["enum"])
    produced = (
        set(ALL_CODES)
        | _sequencer_codes()
        | set(api_errors._HTTP_CODES.values())
        | {"error", "unavailable"}  # the middleware's fallbacks for other 4xx / any 5xx
        | _codes_in_api_source()
    )
    assert documented == produced, (
        f"undocumented: {sorted(produced - documented)}; stale: {sorted(documented - produced)}"
    )
    # Every narrowed error schema only names codes of the enum.
    for name, schema in SPEC["components"]["schemas"].items():
        if schema.get("allOf") == [{"$ref": "#/components/schemas/Error"}]:
            code = schema["properties"]["error"]["properties"]["code"]
            narrowed = set(code.get("enum", [])) | ({code["const"]} if "const" in code else set())
            assert narrowed and narrowed <= documented, name


async def test_served_openapi_is_this_file(server, monkeypatch):
    monkeypatch.delenv("LOGSERVER_OPENAPI", raising=False)
    r = await call(server, "GET", "/openapi.yaml", "/openapi.yaml", want=200)
    assert r.body == SPEC_PATH.read_bytes()


# --- POST /v1/bundles ---------------------------------------------------------------------


async def test_submit_appends_then_answers_duplicates(server):
    envelope = BundleFactory(fleet_id="oa-dup").envelope()
    body = envelope.to_json()
    first = (await submit(server, body, want=201)).json()
    assert first["duplicate"] is False
    assert first["leaf_hash"] == leaf_hash(encode_leaf(envelope)).hex()

    again = (await submit(server, body, want=200)).json()
    assert (again["duplicate"], again["index"], again["leaf_hash"]) == (True, first["index"], first["leaf_hash"])
    assert "envelope" not in again

    # Same payload, new signatures (ECDSA signing is randomised): the receipt is for
    # the logged envelope, which comes with it.
    resigned = make_envelope(envelope.payload).to_json()
    assert resigned != body
    other = (await submit(server, resigned, want=200)).json()
    assert (other["duplicate"], other["leaf_hash"]) == (True, first["leaf_hash"])
    # The log holds the canonical leaf: signatures in ascending keyid order.
    assert other["envelope"] == decode_leaf(encode_leaf(envelope)).to_dict()


async def test_submit_rollback_and_equivocation_conflict(server):
    factory = BundleFactory(fleet_id="oa-conflict")
    await submit(server, factory.envelope_json(sequence=5), want=201)
    r = await submit(server, factory.envelope_json(sequence=3), want=409)
    assert r.code == "rollback"
    r = await submit(server, factory.envelope_json(sequence=5, keys=[make_key("hsm-x", "x25519")]), want=409)
    assert r.code == "equivocation"


def _envelope_json(**overrides) -> bytes:
    return BundleFactory(fleet_id="oa-refused").envelope_json(**overrides)


def _envelope_dict(**overrides) -> dict:
    return BundleFactory(fleet_id="oa-refused").envelope(**overrides).to_dict()


def _swapped_signatures() -> bytes:
    factory = BundleFactory(fleet_id="oa-refused")
    a, b = factory.envelope().to_dict(), factory.envelope().to_dict()  # sequences 0 and 1
    return json.dumps({**a, "signatures": b["signatures"]}).encode()


def _repeated_signature() -> bytes:
    d = _envelope_dict()
    return json.dumps({**d, "signatures": [d["signatures"][0]] * 2}).encode()


def _seventeen_signatures() -> bytes:
    d = _envelope_dict()
    sig = d["signatures"][0]["sig"]
    return json.dumps({**d, "signatures": [{"keyid": f"k{i}", "sig": sig} for i in range(17)]}).encode()


AUTH = default_authorities()
REFUSALS = {
    # name: (body, content type, url, status, code)
    "unknown query parameter": (lambda: _envelope_json(), JSON, "/v1/bundles?dry_run=1", 400, "bad_request"),
    "no content type": (lambda: _envelope_json(), None, "/v1/bundles", 415, "unsupported_media_type"),
    "text content type": (lambda: _envelope_json(), "text/plain", "/v1/bundles", 415, "unsupported_media_type"),
    "not JSON": (lambda: b"{not json", JSON, "/v1/bundles", 400, "malformed_envelope"),
    "empty object": (lambda: b"{}", JSON, "/v1/bundles", 400, "malformed_envelope"),
    "repeated keyid": (_repeated_signature, JSON, "/v1/bundles", 400, "duplicate_signature"),
    "17 signatures": (_seventeen_signatures, JSON, "/v1/bundles", 400, "too_many_signatures"),
    "payload schema": (lambda: make_envelope(b'{"fleet_id":1}').to_json(), JSON, "/v1/bundles", 400,
                       "malformed_payload"),
    "body over the limit": (lambda: b" " * 70_000, JSON, "/v1/bundles", 413, "too_large"),
    "payload type": (lambda: make_envelope(payload_type="text/plain").to_json(), JSON, "/v1/bundles", 422,
                     "unsupported_payload_type"),
    "no signer": (lambda: make_envelope(signers=[AUTH.countersigner]).to_json(), JSON, "/v1/bundles", 422,
                  "signer_signature_missing"),
    "no countersigner": (lambda: make_envelope(signers=[AUTH.signer]).to_json(), JSON, "/v1/bundles", 422,
                         "countersigner_signature_missing"),
    "bad signature": (_swapped_signatures, JSON, "/v1/bundles", 422, "invalid_signature"),
    "expired": (lambda: _envelope_json(not_before="2020-01-01T00:00:00Z", not_after="2021-01-01T00:00:00Z"),
                JSON, "/v1/bundles", 422, "expired"),
    "inverted window": (lambda: _envelope_json(not_before="2031-01-01T00:00:00Z", not_after="2030-01-01T00:00:00Z"),
                        JSON, "/v1/bundles", 422, "invalid_validity_window"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_submit_refusals(server, name):
    make_body, content_type, url, status, code = REFUSALS[name]
    r = await submit(server, make_body(), url=url, content_type=content_type, want=status)
    assert r.code == code


async def test_submit_body_without_length_is_cut_at_the_limit(server):
    async def chunks():
        for _ in range(70):
            yield b" " * 1024

    r = await submit(server, chunks(), want=413)
    assert r.code == "too_large"


async def test_submit_stalled_body_times_out(server):
    release = asyncio.Event()

    async def stalled():
        yield b'{"payloadType":'
        await release.wait()  # never more, until the server has answered

    try:
        r = await submit(server, stalled(), want=408)
    finally:
        release.set()
    assert r.code == "request_timeout"


async def test_halted_sequencer_answers_503(server):
    sequencer = server.app[SEQUENCER]
    sequencer.halted = "test: the pre-sign check failed"
    try:
        r = await submit(server, BundleFactory(fleet_id="oa-halted").envelope_json(), want=503)
        assert r.code == "integrity_check_failed"
        ready = await call(server, "GET", "/readyz", "/readyz", want=503)
        assert ready.json() == {"status": "halted", "reason": "test: the pre-sign check failed"}
    finally:
        sequencer.halted = None
    await call(server, "GET", "/readyz", "/readyz", want=200)


# --- JSON read routes ----------------------------------------------------------------------


async def test_log_info(server):
    info = (await call(server, "GET", "/v1/log", "/v1/log", want=200)).json()
    assert info["checkpoint"].startswith(info["origin"] + "\n")
    r = await call(server, "GET", "/v1/log", "/v1/log?verbose=1", want=400)
    assert r.code == "bad_request"
    head = await call(server, "HEAD", "/v1/log", "/v1/log", want=200)
    assert head.body == b""


async def test_inclusion_proofs(server):
    receipt = (await submit(server, BundleFactory(fleet_id="oa-incl").envelope_json(), want=201)).json()
    index, size, lh = receipt["index"], receipt["tree_size"], receipt["leaf_hash"]
    t = "/v1/proof/inclusion"
    by_index = (await call(server, "GET", t, f"{t}?tree_size={size}&index={index}", want=200)).json()
    assert by_index == {"index": index, "tree_size": size, "leaf_hash": lh, "proof": receipt["inclusion_proof"]}
    by_hash = (await call(server, "GET", t, f"{t}?leaf_hash={lh}&tree_size={size}", want=200)).json()
    assert by_hash == by_index

    bad = [
        f"{t}?index={index}",  # tree_size missing
        f"{t}?tree_size={size}",  # neither index nor leaf_hash
        f"{t}?tree_size={size}&index={index}&leaf_hash={lh}",  # both
        f"{t}?tree_size={size}&index=0{index}",  # leading zero
        f"{t}?tree_size={size}&index=-1",
        f"{t}?tree_size=9223372036854775808&index=0",  # above 2^63-1
        f"{t}?tree_size={size + 1000}&index=0",  # beyond the latest checkpoint
        f"{t}?tree_size={index}&index={index}",  # index not below tree_size
        f"{t}?tree_size={size}&leaf_hash={lh.upper()}",
        f"{t}?tree_size={size}&tree_size={size}&index=0",  # repeated
        f"{t}?tree_size={size}&index=0&proof=1",  # unknown
    ]
    for url in bad:
        assert (await call(server, "GET", t, url, want=400)).code == "bad_request", url
    r = await call(server, "GET", t, f"{t}?tree_size={size}&leaf_hash={'00' * 32}", want=404)
    assert r.code == "not_found"


async def test_consistency_proofs(server):
    await submit(server, BundleFactory(fleet_id="oa-cons").envelope_json(), want=201)
    size = await log_size(server)
    t = "/v1/proof/consistency"
    proof = (await call(server, "GET", t, f"{t}?first=1&second={size}", want=200)).json()
    assert (proof["first"], proof["second"]) == (1, size)
    empty = (await call(server, "GET", t, f"{t}?first=0&second={size}", want=200)).json()
    assert empty["proof"] == []
    for url in (f"{t}?first={size}&second={size - 1}", f"{t}?first=1&second={size + 1000}", f"{t}?first=1",
                f"{t}?first=+1&second={size}", f"{t}?first=1&second={size}&x=y"):
        assert (await call(server, "GET", t, url, want=400)).code == "bad_request", url


async def test_entries_pages(server):
    factory = BundleFactory(fleet_id="oa-entries")
    for _ in range(PAGE_SIZE + 1):
        await submit(server, factory.envelope_json(), want=201)
    size = await log_size(server)
    t = "/v1/entries"
    page = (await call(server, "GET", t, f"{t}?start=0&end={size}", want=200)).json()
    assert (page["start"], page["end"]) == (0, PAGE_SIZE)
    assert [e["index"] for e in page["entries"]] == list(range(PAGE_SIZE))
    last = (await call(server, "GET", t, f"{t}?start={size - 1}&end={size}", want=200)).json()
    assert len(last["entries"]) == 1
    for url in (f"{t}?start=1&end=1", f"{t}?start=0&end={size + 1}", f"{t}?start=00&end=1", f"{t}?start=0",
                f"{t}?start=0&end=1&limit=1"):
        assert (await call(server, "GET", t, url, want=400)).code == "bad_request", url


async def test_bundles_and_fleets(server):
    factory = BundleFactory(fleet_id="oa-fleet")
    await submit(server, factory.envelope_json(), want=201)
    latest = factory.envelope()
    receipt = (await submit(server, latest.to_json(), want=201)).json()

    b = "/v1/bundles/{leaf_hash}"
    entry = (await call(server, "GET", b, f"/v1/bundles/{receipt['leaf_hash']}", want=200)).json()
    assert (entry["index"], entry["envelope"]) == (receipt["index"], decode_leaf(encode_leaf(latest)).to_dict())
    assert entry["receipt"]["leaf_hash"] == receipt["leaf_hash"]
    f = "/v1/fleets/{fleet_id}"
    head = (await call(server, "GET", f, "/v1/fleets/oa-fleet", want=200)).json()
    assert (head["fleet_id"], head["sequence"], head["index"]) == ("oa-fleet", 1, receipt["index"])

    for url in (f"/v1/bundles/{receipt['leaf_hash'].upper()}", "/v1/bundles/abc",
                f"/v1/bundles/{receipt['leaf_hash']}?full=1"):
        assert (await call(server, "GET", b, url, want=400)).code == "bad_request", url
    assert (await call(server, "GET", b, f"/v1/bundles/{'ab' * 32}", want=404)).code == "not_found"
    for url in ("/v1/fleets/bad%20id", "/v1/fleets/" + "a" * 129, "/v1/fleets/oa-fleet?x=1"):
        assert (await call(server, "GET", f, url, want=400)).code == "bad_request", url
    assert (await call(server, "GET", f, "/v1/fleets/no-such-fleet", want=404)).code == "not_found"

    h = "/v1/fleets/{fleet_id}/head"
    present = (await call(server, "GET", h, "/v1/fleets/oa-fleet/head", want=200)).json()
    assert present["row"]["leaf_index"] == receipt["index"]
    absent = (await call(server, "GET", h, "/v1/fleets/no-such-fleet/head", want=200)).json()
    assert absent["version"] == 2 and "row" not in absent, absent
    # 'no-such-fleet' sorts below every oa-* fleet: the wrapping link (the greatest fleet id
    # to the smallest) covers it.
    link = (absent["covering"]["fleet_id"], absent["covering"]["next_fleet_id"])
    assert "no-such-fleet" < link[1] < link[0] and all(f.startswith("oa-") for f in link), absent
    for url in ("/v1/fleets/bad%20id/head", "/v1/fleets/" + "a" * 129 + "/head"):
        assert (await call(server, "GET", h, url, want=400)).code == "bad_fleet_id", url
    assert (await call(server, "GET", h, "/v1/fleets/oa-fleet/head?x=1", want=400)).code == "bad_request"


# --- C2SP routes ------------------------------------------------------------------------------


async def test_checkpoint(server):
    r = await call(server, "GET", "/checkpoint", "/checkpoint", want=200)
    assert r.body.decode().count("\n\u2014 ") == 2  # signed-note and cosignature/v1 lines
    assert (await call(server, "GET", "/checkpoint", "/checkpoint?a=b", want=400)).code == "bad_request"


async def test_tiles(server):
    # Fill the first full tile: 256 one-entry fleets, submitted concurrently.
    size = await log_size(server)
    bodies = [BundleFactory(fleet_id=f"oa-tile-{i}").envelope_json() for i in range(max(0, 256 - size))]
    await asyncio.gather(*(submit(server, body, want=201) for body in bodies))
    assert await log_size(server) >= 256

    h, e = "/tile/{L}/{N}", "/tile/entries/{N}"
    full = await call(server, "GET", h, "/tile/0/000", want=200)
    assert len(full.body) == 256 * 32 and full.headers["Cache-Control"].endswith("immutable")
    partial = await call(server, "GET", h, "/tile/0/000.p/3", want=200)
    assert partial.body == full.body[: 3 * 32] and partial.headers["Cache-Control"] == "public, max-age=60"
    level1 = await call(server, "GET", h, "/tile/1/000.p/1", want=200)
    assert len(level1.body) == 32
    bundle = await call(server, "GET", e, "/tile/entries/000", want=200)
    assert bundle.headers["Content-Encoding"] == "gzip"  # aiohttp asks for gzip and decodes it
    plain = await call(server, "GET", e, "/tile/entries/000.p/2", want=200, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and bundle.body.startswith(plain.body)

    for template, url in ((h, "/tile/0/001"), (h, "/tile/1/000"), (e, "/tile/entries/001"),
                          (e, "/tile/entries/x001/000")):
        assert (await call(server, "GET", template, url, want=404)).code == "tile_not_found", url
    for template, url in ((h, "/tile/0/00"), (h, "/tile/64/000"), (h, "/tile/00/000"), (h, "/tile/0/x000/000"),
                          (h, "/tile/0/000.p/256"), (h, "/tile/0/000.p/0"), (e, "/tile/entries/000.p/01")):
        assert (await call(server, "GET", template, url, want=400)).code == "bad_tile_path", url
    assert (await call(server, "GET", h, "/tile/0/000?x=1", want=400)).code == "bad_request"


# --- operations and unrouted requests ---------------------------------------------------------


async def test_operations_routes(server):
    metrics = await call(server, "GET", "/metrics", "/metrics", want=200)
    assert b"logserver_tree_size" in metrics.body
    assert (await call(server, "GET", "/healthz", "/healthz?probe=1", want=200)).json() == {"status": "ok"}
    ready = (await call(server, "GET", "/readyz", "/readyz", want=200)).json()
    assert ready == {"status": "ok", "tree_size": await log_size(server)}


async def test_status_page_routes(server):
    await submit(server, BundleFactory(fleet_id="oa-status").envelope_json(), want=201)
    status = (await call(server, "GET", "/v1/status", "/v1/status", want=200)).json()
    assert status["fleets"]["count"] >= 1 and status["witnesses"] is None
    assert (await call(server, "GET", "/v1/status", "/v1/status?all=1", want=400)).code == "bad_request"
    for path in ("/", "/status.js", "/status.css"):
        await call(server, "GET", path, path, want=200)
        await call(server, "GET", path, path + "?utm_source=x", want=200)  # ignored, as documented
        assert (await call(server, "HEAD", path, path, want=200)).body == b""


async def test_unrouted_requests_get_the_error_shape(server):
    error_schema = "/components/schemas/Error"
    async with server.session.get("/v2/nothing") as resp:
        assert (resp.status, resp.content_type, resp.headers["Cache-Control"]) == (404, JSON, "no-store")
        body = await resp.json()
        validate(error_schema, body)
        assert body["error"]["code"] == "not_found"
    for method, path, allowed in (("POST", "/v1/log", "GET"), ("DELETE", "/v1/bundles", "POST")):
        async with server.session.request(method, path) as resp:
            assert (resp.status, resp.content_type) == (405, JSON)
            body = await resp.json()
            validate(error_schema, body)
            assert body["error"]["code"] == "method_not_allowed"
            assert allowed in resp.headers["Allow"]
