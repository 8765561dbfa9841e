-- Per-device inbox usage, for the inbox quota (limits.max_inbox_entries,
-- limits.max_inbox_bytes; an extension of §9). Kept by triggers, so that
-- every way a row comes or goes (insert, delete on ACK, purge, a device's
-- deletion cascading) keeps it exact without the code having to. The
-- triggers are per statement and take the usage rows in recipient order,
-- so that two nodes inserting for the same recipients cannot deadlock.
CREATE TABLE inbox_usage (
    recipient_device TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    entries          BIGINT NOT NULL,
    bytes            BIGINT NOT NULL
);
INSERT INTO inbox_usage (recipient_device, entries, bytes)
    SELECT recipient_device, count(*), sum(octet_length(payload)) FROM relay_queue GROUP BY recipient_device;

CREATE FUNCTION relay_queue_usage_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_usage AS u (recipient_device, entries, bytes)
        SELECT recipient_device, count(*), sum(octet_length(payload))
        FROM new_rows GROUP BY recipient_device ORDER BY recipient_device
    ON CONFLICT (recipient_device) DO UPDATE
        SET entries = u.entries + EXCLUDED.entries, bytes = u.bytes + EXCLUDED.bytes;
    RETURN NULL;
END $$;

CREATE FUNCTION relay_queue_usage_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT recipient_device, count(*) AS n, sum(octet_length(payload)) AS b
             FROM old_rows GROUP BY recipient_device ORDER BY recipient_device
    LOOP
        UPDATE inbox_usage SET entries = entries - r.n, bytes = bytes - r.b
        WHERE recipient_device = r.recipient_device;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER relay_queue_usage_insert AFTER INSERT ON relay_queue
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION relay_queue_usage_insert();
CREATE TRIGGER relay_queue_usage_delete AFTER DELETE ON relay_queue
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION relay_queue_usage_delete();
