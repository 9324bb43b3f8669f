-- Witness cosignatures (C2SP tlog-witness, tlog-cosignature) and the checkpoints the
-- log publishes with them. Only used with `witness_policy` in the config.
--   * checkpoint_cosignatures: every verified cosignature line a witness returned,
--     keyed by the checkpoint it cosigns; append-only.
--   * published_checkpoints: what GET /checkpoint, /v1/log and receipts serve: a
--     signed checkpoint with the cosignature lines stapled to it; append-only, and
--     only ever moving forward (checkpoint id and tree size).

CREATE TABLE checkpoint_cosignatures (
    checkpoint_id bigint NOT NULL REFERENCES checkpoints (id),
    witness       text NOT NULL CHECK (length(witness) BETWEEN 1 AND 1024),
    key_id        bytea NOT NULL CHECK (octet_length(key_id) = 4),
    line          text NOT NULL CHECK (line LIKE E'\u2014 %' AND right(line, 1) = E'\n'),
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (checkpoint_id, witness, key_id)
);
CREATE TRIGGER checkpoint_cosignatures_append_only BEFORE UPDATE OR DELETE ON checkpoint_cosignatures
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();

CREATE TABLE published_checkpoints (
    checkpoint_id bigint PRIMARY KEY REFERENCES checkpoints (id),
    tree_size     bigint NOT NULL CHECK (tree_size >= 0),
    note          text NOT NULL,
    quorum_met    boolean NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER published_checkpoints_append_only BEFORE UPDATE OR DELETE ON published_checkpoints
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();

CREATE FUNCTION logserver_published_forward() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last published_checkpoints%ROWTYPE;
    signed checkpoints%ROWTYPE;
BEGIN
    SELECT * INTO signed FROM checkpoints WHERE id = NEW.checkpoint_id;
    IF signed.tree_size <> NEW.tree_size OR left(NEW.note, length(signed.note)) <> signed.note THEN
        RAISE EXCEPTION 'logserver: a published checkpoint must be signed checkpoint % with lines added',
            NEW.checkpoint_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT * INTO last FROM published_checkpoints ORDER BY checkpoint_id DESC LIMIT 1;
    IF FOUND AND (NEW.checkpoint_id <= last.checkpoint_id OR NEW.tree_size < last.tree_size) THEN
        RAISE EXCEPTION 'logserver: published checkpoints only move forward (% after %)',
            NEW.checkpoint_id, last.checkpoint_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER published_checkpoints_forward BEFORE INSERT ON published_checkpoints
    FOR EACH ROW EXECUTE FUNCTION logserver_published_forward();
