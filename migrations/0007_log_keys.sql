-- The log's published checkpoint keys (issue 21 §1; docs/operations.md, "Adding an
-- ML-DSA-44 key to a log").
--
-- log_identity records the origin and the Ed25519 key, fixed for the log's life. A log
-- may later add an ML-DSA-44 key (note signature type 0x06) under the same origin:
-- clients then pin it and may require its signature on every checkpoint, so once the
-- log has signed with a key, a configuration without that key would break them. Every
-- vkey the log has signed a checkpoint with is a row here, recorded at start-up before
-- the first checkpoint it signs, never updated or deleted; a start whose configuration
-- lacks one of them is refused (storage/store.py, ensure_published_keys).

CREATE TABLE log_keys (
    vkey       text PRIMARY KEY CHECK (length(vkey) BETWEEN 1 AND 4096),
    sig_type   smallint NOT NULL CHECK (sig_type IN (1, 4, 6)),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER log_keys_append_only BEFORE UPDATE OR DELETE ON log_keys
    FOR EACH ROW EXECUTE FUNCTION logserver_refuse_change();

-- An existing log's Ed25519 signed-note key (0x01); its cosignature/v1 key (0x04) is
-- the same key and is recorded with the next start.
INSERT INTO log_keys (vkey, sig_type) SELECT vkey, 1 FROM log_identity;
