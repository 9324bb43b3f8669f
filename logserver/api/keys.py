"""Typed application keys shared by the route modules (aiohttp web.AppKey)."""
from __future__ import annotations

from aiohttp import web

from ..bundle import AuthoritySet
from ..config import Config
from ..cosigning import Publisher
from ..http.budget import ByteBudget
from ..keys.log_key import LogKey
from ..read.tree_reader import TreeReader
from ..storage import Store
from ..write.admission import AdmissionPool
from ..write.deadlines import Deadlines
from ..write.sequencer import Sequencer
from .compression import Gzipper
from .metrics import Metrics

CONFIG = web.AppKey("config", Config)
LOG_KEY = web.AppKey("log_key", LogKey)
AUTHORITIES = web.AppKey("authorities", AuthoritySet)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", Store)
READER = web.AppKey("reader", TreeReader)
SEQUENCER = web.AppKey("sequencer", Sequencer)  # or a forwarding.RemoteSequencer in a worker
CLOCK = web.AppKey("clock", object)  # () -> float POSIX seconds
PUBLISHER = web.AppKey("publisher", Publisher)  # the checkpoint served and stapled into receipts
WITNESS_POLICY = web.AppKey("witness_policy", object)  # Policy | None
WORKER = web.AppKey("worker", object)  # forwarding.WorkerRole | None (serve --workers)
ADMISSION = web.AppKey("admission", AdmissionPool)  # submissions checked in helper processes
COMMIT_DEADLINES = web.AppKey("commit_deadlines", Deadlines)  # commit_timeout_s for submissions
GZIPPER = web.AppKey("gzipper", Gzipper)  # entry bundles gzipped off the loop, full ones once
RESPONSE_BUDGET = web.AppKey("response_budget", ByteBudget)  # bytes pinned by large responses in flight
