-- logserver witness schema, version 1 (C2SP tlog-witness).
--
-- Applied by `logserver witness` only, and recorded in witness_schema_migrations
-- (not the log's schema_migrations), so a witness may share a database with a log.
-- Invariants in SQL as well as in code:
--   * witness_identity and witness_evidence rows are never updated or deleted;
--   * a followed log's cosigned size never goes backwards, and a cosigned size
--     never changes its root (the rollback and fork a witness exists to refuse).

CREATE FUNCTION witness_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'witness: % on % is forbidden: rows are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- The witness's cosigner identity: key name and Ed25519 public key. Another key
-- would be another witness; the server refuses to start with one.
CREATE TABLE witness_identity (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
    vkey       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER witness_identity_append_only BEFORE UPDATE OR DELETE ON witness_identity
    FOR EACH ROW EXECUTE FUNCTION witness_refuse_change();

-- The latest checkpoint cosigned for each followed log (tlog-witness: "the witness
-- is only required to keep track of the latest checkpoint it observed and
-- verified"). A row with root NULL is a log never cosigned: its size is 0.
-- add-checkpoint locks the row (SELECT ... FOR UPDATE), compares the old size and
-- updates it in one transaction, committed before the cosignature is returned.
CREATE TABLE witness_logs (
    origin     text PRIMARY KEY CHECK (length(origin) BETWEEN 1 AND 1024),
    tree_size  bigint NOT NULL CHECK (tree_size >= 0),
    root       bytea CHECK (octet_length(root) = 32),
    note       text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((root IS NULL) = (note IS NULL)),
    CHECK (root IS NOT NULL OR tree_size = 0)
);
CREATE FUNCTION witness_logs_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'witness: forgetting log % is forbidden', OLD.origin
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.origin <> OLD.origin OR NEW.tree_size < OLD.tree_size
       OR (OLD.root IS NOT NULL AND NEW.root IS NULL)
       OR (NEW.tree_size = OLD.tree_size AND OLD.root IS NOT NULL AND NEW.root <> OLD.root) THEN
        RAISE EXCEPTION 'witness: log % may only move forward (size % to %)', OLD.origin,
            OLD.tree_size, NEW.tree_size USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER witness_logs_forward BEFORE UPDATE OR DELETE ON witness_logs
    FOR EACH ROW EXECUTE FUNCTION witness_logs_forward();

-- Requests carrying a valid log signature that the witness refused to cosign
-- because they contradict what it cosigned before: a consistency proof that does
-- not verify (422), or another root for the size it cosigned (409). tlog-witness
-- allows logging them, "as it might be proof of log misbehavior". `request` is
-- the whole add-checkpoint body, log-signed checkpoint included; identical
-- requests are kept once.
CREATE TABLE witness_evidence (
    id              bigserial PRIMARY KEY,
    origin          text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('inconsistent_proof', 'root_conflict')),
    old_size        bigint NOT NULL CHECK (old_size >= 0),
    checkpoint_size bigint NOT NULL CHECK (checkpoint_size >= 0),
    stored_size     bigint NOT NULL CHECK (stored_size >= 0),
    stored_note     text,
    request         text NOT NULL,
    request_sha256  bytea NOT NULL UNIQUE CHECK (octet_length(request_sha256) = 32),
    detail          text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER witness_evidence_append_only BEFORE UPDATE OR DELETE ON witness_evidence
    FOR EACH ROW EXECUTE FUNCTION witness_refuse_change();
