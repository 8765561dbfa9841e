-- Per-device inbox usage, for the inbox quota (limits.max_inbox_entries,
-- limits.max_inbox_bytes; an extension of §9). Kept by triggers, so that
-- every way a row comes or goes (insert, delete on ACK, purge, a device's
-- deletion cascading) keeps it exact without the code having to.
--
-- Unlike SQLite (one writer, one row per device), the rows here are
-- deltas: a device's usage is the sum of its rows. The triggers only
-- insert, so writers on several nodes never wait for each other's row
-- locks and cannot deadlock on a shared counter; PurgeExpiredInbox folds
-- the deltas of each device into one row. No foreign key: the delta
-- written while a device's entries are deleted with the device would
-- violate it; rows of deleted devices sum to zero and are dropped by the
-- fold.
CREATE TABLE inbox_usage (
    recipient_device TEXT COLLATE "C" NOT NULL,
    entries          BIGINT NOT NULL,
    bytes            BIGINT NOT NULL
);
CREATE INDEX inbox_usage_recipient ON inbox_usage (recipient_device);
INSERT INTO inbox_usage (recipient_device, entries, bytes)
    SELECT recipient_device, count(*), sum(octet_length(payload)) FROM relay_queue GROUP BY recipient_device;

CREATE FUNCTION relay_queue_usage_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_usage (recipient_device, entries, bytes)
        SELECT recipient_device, count(*), sum(octet_length(payload)) FROM new_rows GROUP BY recipient_device;
    RETURN NULL;
END $$;

CREATE FUNCTION relay_queue_usage_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_usage (recipient_device, entries, bytes)
        SELECT recipient_device, -count(*), -sum(octet_length(payload)) FROM old_rows GROUP BY recipient_device;
    RETURN NULL;
END $$;

CREATE TRIGGER relay_queue_usage_insert AFTER INSERT ON relay_queue
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION relay_queue_usage_insert();
CREATE TRIGGER relay_queue_usage_delete AFTER DELETE ON relay_queue
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION relay_queue_usage_delete();
