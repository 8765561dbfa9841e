package sqlite

import (
	"context"
)

// RemoveDeviceMemberships (§6.11) removes the device from every channel and
// group in one transaction. Channels whose only member is the device are
// deleted (their membership goes by cascade); channels that were already
// empty are left alone.
func (q *queries) RemoveDeviceMemberships(ctx context.Context, deviceID string) error {
	defer q.membersChanged(true)
	return q.atomic(ctx, func(ex execer) error {
		if _, err := q.exec(ctx, ex, "remove device memberships",
			`DELETE FROM channels
			WHERE channel_id IN (SELECT channel_id FROM channel_members WHERE member = ?)
			AND NOT EXISTS (
				SELECT 1 FROM channel_members AS other
				WHERE other.channel_id = channels.channel_id AND other.member <> ?)`,
			deviceID, deviceID); err != nil {
			return err
		}
		if _, err := q.exec(ctx, ex, "remove device memberships",
			`DELETE FROM channel_members WHERE member = ?`, deviceID); err != nil {
			return err
		}
		_, err := q.exec(ctx, ex, "remove device memberships",
			`DELETE FROM group_members WHERE device_id = ?`, deviceID)
		return err
	})
}
