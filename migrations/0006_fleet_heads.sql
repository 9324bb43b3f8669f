-- Fleet heads (issue 20; docs/fleet-heads.md): HEADS leaves and retired fleets.
--
-- Every batch that appends bundles ends with one HEADS leaf (docs/formats.md, "Leaf
-- encoding"; the 49 bytes of docs/fleet-heads.md, "The HEADS leaf"). It is a leaf of
-- the tree like any other, so it lives in `leaves`, with kind 2 and no fleet,
-- sequence or payload digest; a bundle leaf is kind 1 and has all three. The kind is
-- also the leaf's first byte's meaning, so the schema ties them: a HEADS leaf is
-- exactly 49 bytes starting with 2, and no bundle leaf starts with 2 (a reader tells
-- the two apart by that byte alone).
--
-- Adding a column with a constant default rewrites no row (PostgreSQL 11+), so the
-- append-only trigger on leaves is not involved; existing leaves are bundles.

ALTER TABLE leaves ADD COLUMN kind smallint NOT NULL DEFAULT 1;
ALTER TABLE leaves
    ALTER COLUMN fleet_id DROP NOT NULL,
    ALTER COLUMN sequence DROP NOT NULL,
    ALTER COLUMN payload_digest DROP NOT NULL;
ALTER TABLE leaves ADD CONSTRAINT leaves_kind CHECK (
    (kind = 1 AND fleet_id IS NOT NULL AND sequence IS NOT NULL AND payload_digest IS NOT NULL
              AND get_byte(leaf, 0) <> 2)
    OR (kind = 2 AND fleet_id IS NULL AND sequence IS NULL AND payload_digest IS NULL
              AND octet_length(leaf) = 49 AND get_byte(leaf, 0) = 2)
);
-- The sequencer reads the newest HEADS leaf's index (its `previous`) after a restart.
CREATE INDEX leaves_heads ON leaves (idx) WHERE kind = 2;

-- A retired fleet (its newest bundle's payload says "status": "retired") accepts no
-- later bundle, ever: the fleets row of a retired fleet can no longer change.
ALTER TABLE fleets ADD COLUMN retired boolean NOT NULL DEFAULT false;

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
    RETURN NEW;
END $$;
