-- logserver witness schema, version 2: post-quantum keys (C2SP tlog-cosignature v1.1).
--
-- A witness may hold an Ed25519 cosignature/v1 key (signature type 0x04), an ML-DSA-44
-- subtree/v1 key (0x06), or both. witness_identity keeps the name and the first key
-- the database ever saw (now 32 or 1312 bytes); witness_keys lists every key that has
-- cosigned from this database. A server starts only if it keeps the name and at least
-- one of those keys: another key set would be another witness vouching for a history
-- it never checked. Keys are only ever added (append-only, like the identity).

ALTER TABLE witness_identity DROP CONSTRAINT witness_identity_public_key_check;
ALTER TABLE witness_identity ADD CONSTRAINT witness_identity_public_key_size
    CHECK (octet_length(public_key) IN (32, 1312));

CREATE TABLE witness_keys (
    vkey       text PRIMARY KEY,
    sig_type   smallint NOT NULL CHECK (sig_type IN (4, 6)),
    public_key bytea NOT NULL UNIQUE,
    added_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (octet_length(public_key) = CASE sig_type WHEN 4 THEN 32 ELSE 1312 END)
);
CREATE TRIGGER witness_keys_append_only BEFORE UPDATE OR DELETE ON witness_keys
    FOR EACH ROW EXECUTE FUNCTION witness_refuse_change();

-- A version-1 witness had one Ed25519 key: its identity.
INSERT INTO witness_keys (vkey, sig_type, public_key)
    SELECT vkey, 4, public_key FROM witness_identity;

-- witness_logs.note now holds the cosigned checkpoint served to monitors (tlog-witness
-- GET <monitoring prefix>/<origin hash>/checkpoint): the checkpoint text, the log's
-- signatures that verified and the witness's cosignature lines. Rows written by version
-- 1 hold the log's note alone until the next checkpoint is cosigned.
