-- Cosigned freshness (issue 20, section 4; docs/witness.md "Freshness"): the latest
-- re-sign of the published size, cosigned by witnesses.
--
-- published_checkpoints holds each published size's first signature with its
-- cosignatures, append-only, and an idle log adds no row there (0003). So that a
-- client can tell that a checkpoint is still current, the log asks its witnesses,
-- every witnessing.refresh_s, to cosign its newest re-sign of the same size (same
-- tree, newer signed time); what a quorum cosigned is kept here, in one row that
-- only moves forward and always names a stored checkpoint's tree:
--   * signed_at_ms strictly increases, tree_size never shrinks;
--   * checkpoint_id is a stored checkpoint of tree_size, and the note's checkpoint
--     body (the text before its blank line) is that row's;
--   * its size is a published size (a refresh never publishes a tree first).
-- The published checkpoint is this row when its size is the last published row's
-- and it was signed later; otherwise that row.

CREATE TABLE published_refresh (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    checkpoint_id bigint NOT NULL REFERENCES checkpoints (id),
    tree_size     bigint NOT NULL CHECK (tree_size >= 0),
    signed_at_ms  bigint NOT NULL CHECK (signed_at_ms >= 0),
    note          text NOT NULL,
    quorum_met    boolean NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION logserver_published_refresh_forward() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    signed checkpoints%ROWTYPE;
BEGIN
    SELECT * INTO signed FROM checkpoints WHERE id = NEW.checkpoint_id;
    IF NOT FOUND OR signed.tree_size <> NEW.tree_size
            OR split_part(NEW.note, E'\n\n', 1) <> split_part(signed.note, E'\n\n', 1) THEN
        RAISE EXCEPTION 'logserver: a refreshed checkpoint must re-sign stored checkpoint % (size %)',
            NEW.checkpoint_id, NEW.tree_size USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM published_checkpoints WHERE checkpoint_id = NEW.checkpoint_id) THEN
        RAISE EXCEPTION 'logserver: a refresh of checkpoint % whose size was never published',
            NEW.checkpoint_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.tree_size < OLD.tree_size OR NEW.signed_at_ms <= OLD.signed_at_ms) THEN
        RAISE EXCEPTION 'logserver: the refreshed checkpoint only moves forward (size % at % after size % at %)',
            NEW.tree_size, NEW.signed_at_ms, OLD.tree_size, OLD.signed_at_ms
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER published_refresh_forward BEFORE INSERT OR UPDATE ON published_refresh
    FOR EACH ROW EXECUTE FUNCTION logserver_published_refresh_forward();
CREATE TRIGGER published_refresh_no_delete BEFORE DELETE ON published_refresh
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();
