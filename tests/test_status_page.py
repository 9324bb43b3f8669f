"""The status page (GET /, issue 22 §5): its JSON (GET /v1/status) from a real log with a
real witness, and the page itself rendered by a real headless Chromium (tests/chromium.py),
read as a person would read it (`document.body.innerText`, after its script filled it in
from the JSON API), with its links, its plot and its Content-Security-Policy enforced.

The log has a witness policy of two witnesses and a quorum of one: w1 is a real
`logserver witness` app, w2's URL answers nothing (connection refused), so the page
shows one witness cosigning and one that never did. Three fleets: one updated three
times, one retired, one with a single bundle.

LOGSERVER_STATUS_SCREENSHOT=docs/status-page.png also writes the page's screenshot there
(how the one in docs/ was made; docs/operations.md, "Status page").
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import pg
from bundle_factory import BundleFactory
from chromium import Chromium, Page
from logserver.api.status import CONTENT_SECURITY_POLICY
from logserver.formats.cosignature import CosignatureSigner
from logserver.keys.log_key import LogKey, generate_log_key_pem
from server_harness import ORIGIN, start_server, write_config
from witness_harness import start_witness, write_witness_config

JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Log:
    def __init__(self, server, witness, down_url: str):
        self.server, self.witness, self.down_url = server, witness, down_url

    async def submit(self, body: bytes) -> dict:
        async with self.server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()

    async def get(self, path: str):
        async with self.server.session.get(path) as resp:
            return resp.status, resp.headers, await resp.read()

    async def status(self) -> dict:
        async with self.server.session.get("/v1/status") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.fixture(scope="module")
async def log(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("status-page")
    pem = generate_log_key_pem()
    log_vkey = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None)).vkey
    witness_db = await pg.create_database(pg_admin_url, "t_status_page_w1")
    witness = await start_witness(write_witness_config(base / "w1", "witness.test/w1", witness_db, [log_vkey]))
    down_url = f"http://127.0.0.1:{free_port()}"
    down_vkey = CosignatureSigner("witness.test/w2", Ed25519PrivateKey.generate()).verifier().vkey
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(
        f"witness w1 {witness.vkey} {witness.submission_url}\nwitness w2 {down_vkey} {down_url}\n"
        "group any 1 w1 w2\nquorum any\n")
    extra = ('witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 2\nmax_wait_s = 5\n\n'
             '[sequencer]\ncheckpoint_interval_s = 1\n')
    server = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=pem))
    try:
        yield Log(server, witness, down_url)
    finally:
        await server.close()
        await witness.close()
        await pg.drop_database(pg_admin_url, witness_db)


@pytest.fixture(scope="module")
async def filled(log):
    """Three fleets submitted one bundle at a time, so the tree grows in several checkpoints."""
    busy, retiring, single = (BundleFactory(fleet_id=f) for f in ("fleet-busy", "fleet-retiring", "fleet-single"))
    for body in (busy.envelope_json(), retiring.envelope_json(), busy.envelope_json(),
                 retiring.envelope_json(status="retired"), single.envelope_json(), busy.envelope_json()):
        receipt = await log.submit(body)
    return receipt


async def test_status_json_names_fleets_witnesses_and_the_tree_history(log, filled):
    status = await log.status()
    async with log.server.session.get("/v1/log") as resp:
        info = await resp.json()
    assert (status["origin"], status["verifier_key"]) == (info["origin"], info["verifier_key"])
    assert status["witnessed"] is True
    published = status["published"]
    assert published["tree_size"] == info["tree_size"] >= filled["tree_size"]
    assert published["age_seconds"] >= 0 and published["signed_at"].endswith("Z")
    assert status["signed"]["tree_size"] >= published["tree_size"]

    assert status["fleets"]["count"] == 3 and status["fleets"]["retired"] == 1
    fleets = {f["fleet_id"]: (f["sequence"], f["status"]) for f in status["fleets"]["shown"]}
    assert fleets == {"fleet-busy": (2, "active"), "fleet-retiring": (1, "retired"), "fleet-single": (0, "active")}
    # Most recently updated first: each fleet's latest bundle index, descending.
    indexes = [f["index"] for f in status["fleets"]["shown"]]
    assert indexes == sorted(indexes, reverse=True)
    assert status["fleets"]["shown"][0]["fleet_id"] == "fleet-busy"

    witnesses = {w["name"]: w for w in status["witnesses"]["witnesses"]}
    assert status["witnesses"]["quorum"] == "any" and set(witnesses) == {"w1", "w2"}
    w1, w2 = witnesses["w1"], witnesses["w2"]
    assert w1["on_published_checkpoint"] is True and w1["verifier_key"] == log.witness.vkey
    assert w1["last_cosigned"]["tree_size"] == published["tree_size"]
    assert w2 == {"name": "w2", "url": log.down_url, "verifier_key": w2["verifier_key"],
                  "on_published_checkpoint": False, "last_cosigned": None}

    sizes = [p["tree_size"] for p in status["tree_sizes"]]
    times = [p["signed_at"] for p in status["tree_sizes"]]
    assert sizes == sorted(sizes) and times == sorted(times)
    assert sizes[0] == 0 and sizes[-1] == status["signed"]["tree_size"]
    assert len(set(sizes)) >= 4  # one submission per batch: several sizes were signed

    roles = [(a["role"], a["algorithm"]) for a in status["authorities"]]
    assert roles[0][0] == "signer" and ("countersigner", roles[-1][1]) == roles[-1]


async def test_status_route_refuses_query_parameters(log):
    status, _, body = await log.get("/v1/status?verbose=1")
    assert status == 400 and b'"bad_request"' in body


async def test_page_files_are_served_with_a_strict_csp(log):
    for path, media in (("/", "text/html"), ("/status.js", "text/javascript"), ("/status.css", "text/css")):
        status, headers, _ = await log.get(path)
        assert status == 200 and headers["Content-Type"].startswith(media + ";"), (path, headers)
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, html = await log.get("/")
    # Nothing inline for the CSP to allow: no inline script or style, no event handler attribute.
    text = html.decode()
    assert "<script>" not in text and "<style" not in text and not re.search(r"\s(style|on[a-z]+)=", text, re.I)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", png[:16]
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
async def browser(tmp_path_factory):
    """One headless Chromium for the module, stopped by its pid at the end."""
    chromium = Chromium(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        await chromium.start()
        yield chromium
    finally:
        await chromium.close()


async def open_page(browser: Chromium, url: str) -> tuple[Page, str]:
    """A new tab at `url`, once its script has filled it in: (the page, its data-state)."""
    page = await browser.new_page()
    await page.navigate(url)
    # The new document, its script done: data-state moves from "loading" to "ready" or "error".
    state = await page.wait_for(
        f"location.href === {json.dumps(url)} && document.body !== null"
        " && document.body.dataset.state !== 'loading' && document.body.dataset.state")
    return page, state


async def test_page_in_headless_chromium(log, filled, browser, tmp_path):
    status = await log.status()
    page, state = await open_page(browser, log.server.url + "/")
    assert state == "ready", await page.evaluate("document.getElementById('error').textContent")
    text = await page.evaluate("document.body.innerText")
    size = f"{status['published']['tree_size']:,}"

    # What a person reads: the log, its key, the checkpoint and its age ...
    assert f"Transparency log {ORIGIN}" in text
    assert status["verifier_key"] in text and "-----BEGIN PUBLIC KEY-----" in text
    assert f"Tree size\n{size}" in text.replace("\t", "\n")
    assert status["published"]["root"] in text
    assert " ago)" in text  # the checkpoint's age
    # ... each witness and when it last cosigned ...
    assert '2 witness(es), quorum "any"; 1 cosigned the published checkpoint.' in text
    w1 = next(line for line in text.splitlines() if line.startswith("w1\t")).split("\t")
    assert w1[1].startswith(f"size {size} at ") and w1[1].endswith(" ago") and w1[2] == "yes", w1
    w2 = next(line for line in text.splitlines() if line.startswith("w2\t")).split("\t")
    assert w2[1:] == ["never (in the last 10,000 checkpoints)", "no", log.down_url], w2
    # ... the fleets, their latest sequence and status, with links to their proofs ...
    assert "3 fleet(s), 2 active, 1 retired." in text
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in text.splitlines() if line.startswith("fleet-")}
    assert rows["fleet-busy"][:2] == ["2", "active"] and rows["fleet-retiring"][:2] == ["1", "retired"]
    assert rows["fleet-single"][:2] == ["0", "active"]
    assert "latest bundle and receipt · fleet-head proof" in rows["fleet-busy"][-1]
    links = await page.evaluate("[...document.querySelectorAll('#fleets a')].map(a => a.href)")
    base = log.server.url
    assert f"{base}/v1/fleets/fleet-retiring" in links and f"{base}/v1/fleets/fleet-retiring/head" in links
    # ... and the tree size over time, one dot per point of /v1/status.
    dots = await page.evaluate("document.querySelectorAll('#plot svg circle').length")
    assert dots == len((await log.status())["tree_sizes"]) or dots == len(status["tree_sizes"])
    assert await page.evaluate("document.querySelector('#plot svg path.line').getAttribute('d').length") > 10

    # The browser enforces the CSP: an inline script added to the page does not run,
    # and a violation is reported; the page's own files raised none.
    assert not [e for e in page.events if e["method"] == "Log.entryAdded"
                and e["params"]["entry"]["source"] in ("security", "violation", "javascript")]
    assert not [e for e in page.events if e["method"] == "Runtime.exceptionThrown"]
    ran = await page.evaluate(
        "new Promise(done => {"
        "  document.addEventListener('securitypolicyviolation', e => done('blocked: ' + e.violatedDirective));"
        "  const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1';"
        "  document.body.append(s); setTimeout(() => done(window.inlineRan ? 'ran' : 'silent'), 2000); })")
    assert ran == "blocked: script-src-elem", ran

    png = await page.screenshot()
    width, height = _png_size(png)
    assert width == 1200 and height > 600
    (tmp_path / "status-page.png").write_bytes(png)
    if os.environ.get("LOGSERVER_STATUS_SCREENSHOT"):
        Path(os.environ["LOGSERVER_STATUS_SCREENSHOT"]).write_bytes(png)


async def test_page_says_what_it_could_not_read(database_url, pg_admin_url, browser, tmp_path):
    """A witnessed log whose only witness never answers has published nothing: /v1/log
    answers 503, and the page says so, with what /v1/status still tells."""
    db = await pg.create_database(pg_admin_url, "t_status_page_unpublished")
    directory = tmp_path / "log"
    directory.mkdir()
    down_vkey = CosignatureSigner("witness.test/gone", Ed25519PrivateKey.generate()).verifier().vkey
    (directory / "witnesses.policy").write_text(
        f"witness gone {down_vkey} http://127.0.0.1:{free_port()}\nquorum gone\n")
    extra = 'witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 1\n'
    server = await start_server(write_config(directory, db, extra=extra))
    try:
        page, state = await open_page(browser, server.url + "/")
        assert state == "error"
        text = await page.evaluate("document.body.innerText")
        assert "Could not read the log: v1/log: 503 witness_quorum_unavailable: " in text, text
        assert "Tree size\tnone published yet" in text or "Tree size\nnone published yet" in text, text
        assert "no checkpoint has a witness quorum yet" in text
        assert '1 witness(es), quorum "gone"; 0 cosigned the published checkpoint.' in text
        assert "0 fleet(s), 0 active, 0 retired." in text
        assert f"Transparency log {ORIGIN}" in text  # from /v1/status, which still answers
    finally:
        await server.close()
        await pg.drop_database(pg_admin_url, db)
