-- The chained heads layout (issue 20; docs/fleet-heads.md, "The heads tree").
--
-- The heads tree's positions are the order in which fleets first appeared in the log,
-- so a new fleet is appended to the tree instead of shifting every row after it (the
-- sorted layout of release 0.2.0 cost O(fleets) hashes per new fleet under the
-- sequencer lock). That order is kept here: `first_idx`, the index of the fleet's
-- first bundle, set when its row is inserted and never changed.
--
-- HEADS leaves of the chained layout start with byte 3; release 0.2.0's (byte 2) stay
-- where they are, valid leaves of the log: both are kind 2, and no bundle leaf starts
-- with either byte.

ALTER TABLE fleets ADD COLUMN first_idx bigint REFERENCES leaves (idx);
-- Backfill: a fleet's first bundle is its smallest index (sequences only grow). The
-- forward-only trigger refuses an update that does not advance the sequence, so it is
-- off for this one statement, inside this migration's transaction.
ALTER TABLE fleets DISABLE TRIGGER fleets_forward;
UPDATE fleets f SET first_idx = m.first_idx
    FROM (SELECT fleet_id, min(idx) AS first_idx FROM leaves WHERE kind = 1 GROUP BY fleet_id) m
    WHERE m.fleet_id = f.fleet_id;
ALTER TABLE fleets ENABLE TRIGGER fleets_forward;
ALTER TABLE fleets ALTER COLUMN first_idx SET NOT NULL;
ALTER TABLE fleets ADD CONSTRAINT fleets_first_idx CHECK (first_idx <= idx);
CREATE UNIQUE INDEX fleets_by_first_idx ON fleets (first_idx);

CREATE OR REPLACE FUNCTION logserver_fleets_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.sequence <= OLD.sequence OR NEW.idx <= OLD.idx THEN
        RAISE EXCEPTION 'logserver: fleet % may only move to a larger sequence', OLD.fleet_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.retired THEN
        RAISE EXCEPTION 'logserver: fleet % is retired: it accepts no later bundle', OLD.fleet_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.first_idx IS DISTINCT FROM OLD.first_idx THEN
        RAISE EXCEPTION 'logserver: fleet % keeps its first index %', OLD.fleet_id, OLD.first_idx
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE leaves DROP CONSTRAINT leaves_kind;
ALTER TABLE leaves ADD CONSTRAINT leaves_kind CHECK (
    (kind = 1 AND fleet_id IS NOT NULL AND sequence IS NOT NULL AND payload_digest IS NOT NULL
              AND get_byte(leaf, 0) NOT IN (2, 3))
    OR (kind = 2 AND fleet_id IS NULL AND sequence IS NULL AND payload_digest IS NULL
              AND octet_length(leaf) = 49 AND get_byte(leaf, 0) IN (2, 3))
);
