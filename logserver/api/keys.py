"""Typed application keys shared by the route modules (aiohttp web.AppKey).

A key whose value is not an instance of one class is written `web.AppKey[T](name)`:
the constructor's second argument takes only a class."""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..bundle import AuthoritySet
from ..config import Config
from ..cosigning import Publisher
from ..formats import Policy
from ..http.budget import ByteBudget
from ..keys.log_key import LogKey
from ..publish import StaticPublisher
from ..read.heads_reader import HeadsReader
from ..read.tree_reader import TreeReader
from ..storage import Store
from ..workers.forwarding import RemoteSequencer, WorkerRole
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
SEQUENCER = web.AppKey[Sequencer | RemoteSequencer]("sequencer")  # RemoteSequencer: a serve --workers forwarder
CLOCK = web.AppKey[Callable[[], float]]("clock")  # POSIX seconds
PUBLISHER = web.AppKey("publisher", Publisher)  # the checkpoint served and stapled into receipts
WITNESS_POLICY = web.AppKey[Policy | None]("witness_policy")  # None: no witnesses
WORKER = web.AppKey[WorkerRole | None]("worker")  # None: not under serve --workers
ADMISSION = web.AppKey("admission", AdmissionPool)  # submissions checked in helper processes
COMMIT_DEADLINES = web.AppKey("commit_deadlines", Deadlines)  # commit_timeout_s for submissions
GZIPPER = web.AppKey("gzipper", Gzipper)  # entry bundles gzipped off the loop, full ones once
RESPONSE_BUDGET = web.AppKey("response_budget", ByteBudget)  # bytes pinned by large responses in flight
STATIC = web.AppKey[StaticPublisher | None]("static")  # static publication targets (None: none configured)
HEADS = web.AppKey("heads", HeadsReader)  # the heads table for fleet-head proofs, per process
