-- Per-device inbox usage, for the inbox quota (limits.max_inbox_entries,
-- limits.max_inbox_bytes; an extension of §9). Kept by triggers, so that
-- every way a row comes or goes (insert, delete on ACK, purge, a device's
-- deletion cascading) keeps it exact without the code having to.
CREATE TABLE inbox_usage (
    recipient_device TEXT    NOT NULL PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    entries          INTEGER NOT NULL,
    bytes            INTEGER NOT NULL
);
INSERT INTO inbox_usage (recipient_device, entries, bytes)
    SELECT recipient_device, count(*), sum(length(payload)) FROM relay_queue GROUP BY recipient_device;
CREATE TRIGGER relay_queue_usage_insert AFTER INSERT ON relay_queue BEGIN
    INSERT INTO inbox_usage (recipient_device, entries, bytes) VALUES (NEW.recipient_device, 1, length(NEW.payload))
    ON CONFLICT (recipient_device) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER relay_queue_usage_delete AFTER DELETE ON relay_queue BEGIN
    UPDATE inbox_usage SET entries = entries - 1, bytes = bytes - length(OLD.payload)
    WHERE recipient_device = OLD.recipient_device;
END;
