-- Static publication (issue 19, docs/deployment.md): how far each publication target
-- (a directory served by nginx, an S3 bucket) has been published.
--
-- One row per target name (the name in [[publication.targets]]). The row says:
-- the checkpoint of this size, root and signing time is on the target, and so is
-- every tile and entry bundle it needs (logserver/write/sequencer.py, step 9).
-- Written only after the target's checkpoint object was replaced, never in the
-- sequencing transaction: a submission never waits for a target.
--   * it only moves forward: the size never shrinks, and at one size the signing
--     time never goes back;
--   * it names a signed checkpoint: the size and root of a stored checkpoint row,
--     so a published root can never be one the log did not sign.
-- What is on the target itself stays the authority for what a publisher resumes
-- from (a target wiped or replaced is refilled); this row is the progress that
-- metrics, /readyz and `logserver fsck --target` read.

CREATE TABLE publication_progress (
    target       text PRIMARY KEY CHECK (target ~ '^[A-Za-z0-9._-]{1,64}$'),
    tree_size    bigint NOT NULL CHECK (tree_size >= 0),
    root         bytea NOT NULL CHECK (octet_length(root) = 32),
    signed_at_ms bigint NOT NULL CHECK (signed_at_ms >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION logserver_publication_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM checkpoints WHERE tree_size = NEW.tree_size AND root = NEW.root) THEN
        RAISE EXCEPTION 'logserver: target % published size % with root %, which no stored checkpoint has',
            NEW.target, NEW.tree_size, encode(NEW.root, 'hex') USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.target <> OLD.target OR NEW.tree_size < OLD.tree_size
            OR (NEW.tree_size = OLD.tree_size AND NEW.signed_at_ms < OLD.signed_at_ms)) THEN
        RAISE EXCEPTION 'logserver: publication progress of % only moves forward (size % at % after size % at %)',
            OLD.target, NEW.tree_size, NEW.signed_at_ms, OLD.tree_size, OLD.signed_at_ms
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER publication_progress_forward BEFORE INSERT OR UPDATE ON publication_progress
    FOR EACH ROW EXECUTE FUNCTION logserver_publication_forward();
CREATE TRIGGER publication_progress_no_delete BEFORE DELETE ON publication_progress
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();
