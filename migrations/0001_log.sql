-- logserver schema, version 1.
--
-- Invariants live here as well as in the code: a bug in the server must not be
-- able to fork the log or rewrite history, whatever the application does.
--   * leaves, checkpoints and log_identity rows are inserted and never updated
--     or deleted (triggers below refuse it);
--   * hash tiles only ever grow by appending hashes (trigger below);
--   * every checkpoint at a given tree size has the same root, and tree sizes
--     and signing times never go backwards (trigger below);
--   * log_state is a single row updated by compare-and-swap on tree_size.

CREATE FUNCTION logserver_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'logserver: % on % is forbidden: rows are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- The log's identity: its origin (also the signed-note key name) and its
-- Ed25519 public key. A server started with another origin or key refuses to run.
CREATE TABLE log_identity (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    origin     text NOT NULL CHECK (length(origin) BETWEEN 1 AND 255),
    public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
    vkey       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER log_identity_append_only BEFORE UPDATE OR DELETE ON log_identity
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();

-- Leaves in log order. `leaf` is the canonical leaf encoding (docs/formats.md);
-- leaf_hash = SHA-256(0x00 || leaf), checked by fsck and the pre-sign check.
CREATE TABLE leaves (
    idx            bigint PRIMARY KEY CHECK (idx >= 0),
    leaf_hash      bytea NOT NULL UNIQUE CHECK (octet_length(leaf_hash) = 32),
    leaf           bytea NOT NULL CHECK (octet_length(leaf) BETWEEN 1 AND 65535),
    fleet_id       text NOT NULL CHECK (fleet_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    sequence       bigint NOT NULL CHECK (sequence >= 0),
    payload_digest bytea NOT NULL CHECK (octet_length(payload_digest) = 32),
    integrated_at  timestamptz NOT NULL,
    UNIQUE (fleet_id, sequence)
);
CREATE TRIGGER leaves_append_only BEFORE UPDATE OR DELETE ON leaves
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();

-- C2SP tlog-tiles hash tiles: tile (level, idx) holds the hashes of tree level
-- 8*level, nodes idx*256 .. idx*256+n-1, concatenated. A row holds the widest
-- version of its tile; narrower (partial) versions are its prefixes, which is
-- why an update may only append.
CREATE TABLE tiles (
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx    bigint NOT NULL CHECK (idx >= 0),
    hashes bytea NOT NULL CHECK (octet_length(hashes) BETWEEN 32 AND 8192
                                 AND octet_length(hashes) % 32 = 0),
    PRIMARY KEY (level, idx)
);
CREATE FUNCTION logserver_tiles_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'logserver: deleting tile %/% is forbidden', OLD.level, OLD.idx
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.level <> OLD.level OR NEW.idx <> OLD.idx
       OR octet_length(NEW.hashes) < octet_length(OLD.hashes)
       OR substring(NEW.hashes FROM 1 FOR octet_length(OLD.hashes)) <> OLD.hashes THEN
        RAISE EXCEPTION 'logserver: tile %/% may only grow by appending hashes', OLD.level, OLD.idx
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tiles_append_only BEFORE UPDATE OR DELETE ON tiles
    FOR EACH ROW EXECUTE FUNCTION logserver_tiles_append_only();

-- Every checkpoint the log has signed, in signing order.
CREATE TABLE checkpoints (
    id           bigserial PRIMARY KEY,
    tree_size    bigint NOT NULL CHECK (tree_size >= 0),
    root         bytea NOT NULL CHECK (octet_length(root) = 32),
    signed_at_ms bigint NOT NULL CHECK (signed_at_ms >= 0),
    note         text NOT NULL
);
CREATE INDEX checkpoints_by_size ON checkpoints (tree_size, id);
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();

CREATE FUNCTION logserver_checkpoints_linear() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last checkpoints%ROWTYPE;
BEGIN
    SELECT * INTO last FROM checkpoints ORDER BY id DESC LIMIT 1;
    IF FOUND THEN
        IF NEW.tree_size < last.tree_size THEN
            RAISE EXCEPTION 'logserver: checkpoint size % is below the last signed size %',
                NEW.tree_size, last.tree_size USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.signed_at_ms < last.signed_at_ms THEN
            RAISE EXCEPTION 'logserver: checkpoint time % is before the last signed time %',
                NEW.signed_at_ms, last.signed_at_ms USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.tree_size = last.tree_size AND NEW.root <> last.root THEN
            RAISE EXCEPTION 'logserver: fork refused: a checkpoint of size % with another root exists',
                NEW.tree_size USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER checkpoints_linear BEFORE INSERT ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION logserver_checkpoints_linear();

-- The single mutable row: the log's current size and latest checkpoint. The
-- sequencer locks it (SELECT ... FOR UPDATE) and updates it by compare-and-swap
-- on tree_size in the same transaction that adds leaves, tiles and checkpoint.
CREATE TABLE log_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tree_size     bigint NOT NULL CHECK (tree_size >= 0),
    root          bytea NOT NULL CHECK (octet_length(root) = 32),
    checkpoint_id bigint NOT NULL REFERENCES checkpoints (id)
);
CREATE FUNCTION logserver_log_state_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.tree_size < OLD.tree_size OR NEW.checkpoint_id < OLD.checkpoint_id THEN
        RAISE EXCEPTION 'logserver: the log state may only move forward'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER log_state_forward BEFORE UPDATE OR DELETE ON log_state
    FOR EACH ROW EXECUTE FUNCTION logserver_log_state_forward();

-- Each fleet's latest logged bundle (rollback protection: a new bundle must
-- carry a larger sequence).
CREATE TABLE fleets (
    fleet_id text PRIMARY KEY,
    sequence bigint NOT NULL CHECK (sequence >= 0),
    idx      bigint NOT NULL REFERENCES leaves (idx)
);
CREATE FUNCTION logserver_fleets_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.sequence <= OLD.sequence OR NEW.idx <= OLD.idx THEN
        RAISE EXCEPTION 'logserver: fleet % may only move to a larger sequence', OLD.fleet_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fleets_forward BEFORE UPDATE OR DELETE ON fleets
    FOR EACH ROW EXECUTE FUNCTION logserver_fleets_forward();
