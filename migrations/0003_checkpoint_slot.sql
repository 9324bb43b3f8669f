-- Bounded growth (issue 23, section 3): a checkpoint row per tree size, and the
-- latest signature in one updatable slot.
--
-- Before this migration an idle log stored a new checkpoint row every
-- checkpoint interval (about 17,000 rows a day at 5 s), in a table whose
-- triggers forbid deletion. Now:
--   * checkpoints gets a row only when the tree size changes: the first
--     signature of each size. A second row of the size of the last row is
--     refused, so "never two roots for one size" holds as before, in SQL. Rows
--     stored before this migration (re-signs of one size) stay: history is
--     append-only.
--   * log_state carries the latest signature (signed_at_ms, note): an idle
--     re-sign updates only that. It may only move forward (size never shrinks,
--     signed time strictly increases) and must name the stored checkpoint row
--     of its size and root (checkpoint_id).
-- 0001 and 0002 are left as they were applied: this file replaces their
-- trigger functions.

ALTER TABLE log_state ADD COLUMN signed_at_ms bigint, ADD COLUMN note text;
-- Fill the slot from the row log_state points at (the old trigger allows it: the
-- size and checkpoint do not move).
UPDATE log_state s SET signed_at_ms = c.signed_at_ms, note = c.note FROM checkpoints c WHERE c.id = s.checkpoint_id;
ALTER TABLE log_state ALTER COLUMN signed_at_ms SET NOT NULL, ALTER COLUMN note SET NOT NULL,
    ADD CONSTRAINT log_state_signed_at_ms_check CHECK (signed_at_ms >= 0);

CREATE OR REPLACE FUNCTION logserver_checkpoints_linear() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last checkpoints%ROWTYPE;
    slot_ms bigint;
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
        IF NEW.tree_size = last.tree_size THEN
            RAISE EXCEPTION 'logserver: a checkpoint of size % is stored already: a re-sign only updates log_state',
                NEW.tree_size USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    -- The slot may be newer than the last row (idle re-signs): times still only move forward.
    SELECT signed_at_ms INTO slot_ms FROM log_state;
    IF FOUND AND NEW.signed_at_ms < slot_ms THEN
        RAISE EXCEPTION 'logserver: checkpoint time % is before the last signed time %',
            NEW.signed_at_ms, slot_ms USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION logserver_log_state_forward() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stored checkpoints%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'logserver: the log state may only move forward'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.tree_size < OLD.tree_size OR NEW.checkpoint_id < OLD.checkpoint_id
                             OR NEW.signed_at_ms <= OLD.signed_at_ms) THEN
        RAISE EXCEPTION 'logserver: the log state may only move forward (size %, signed at % after size %, %)',
            NEW.tree_size, NEW.signed_at_ms, OLD.tree_size, OLD.signed_at_ms
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT * INTO stored FROM checkpoints WHERE id = NEW.checkpoint_id;
    IF NOT FOUND OR stored.tree_size <> NEW.tree_size OR stored.root <> NEW.root
       OR NEW.signed_at_ms < stored.signed_at_ms THEN
        RAISE EXCEPTION 'logserver: the log state must name the stored checkpoint % of its size % and root',
            NEW.checkpoint_id, NEW.tree_size USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

-- Now also on INSERT (the first state must name its checkpoint row too).
DROP TRIGGER log_state_forward ON log_state;
CREATE TRIGGER log_state_forward BEFORE INSERT OR UPDATE OR DELETE ON log_state
    FOR EACH ROW EXECUTE FUNCTION logserver_log_state_forward();
