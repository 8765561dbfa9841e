package httpapi

import (
	"errors"
	"strings"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/store"
)

// Limits and details of §8.4.6.
const (
	MaxFriends         = 512
	MaxFriendFieldSize = 256 // bytes, handle and alias

	detailTooManyFriends  = "too many friends"
	detailUserIDRequired  = "user_id is required"
	detailFriendFieldLong = "handle or alias too long"

	friendsBlobKey = "friends"
)

type friend struct {
	Alias  *string `json:"alias"`
	Handle *string `json:"handle"`
	UserID string  `json:"user_id"`
}

type friendsResponse struct {
	Friends []friend `json:"friends"`
}

// getFriends is GET /api/friends (§8.4.6).
func (a *API) getFriends(c *call) (any, error) {
	payload, err := a.d.Store.GetUserBlob(c.ctx, c.auth.user.ID, friendsBlobKey)
	if errors.Is(err, store.ErrNotFound) {
		return friendsResponse{Friends: []friend{}}, nil
	}
	if err != nil {
		return nil, err
	}
	list, err := decodeStoredFriends(payload)
	if err != nil {
		return nil, err
	}
	return friendsResponse{Friends: list}, nil
}

// putFriends is PUT /api/friends (§8.4.6).
func (a *API) putFriends(c *call) (any, error) {
	v, ok := member(c.body, "friends")
	if !ok || v.Kind != canonjson.Array {
		return nil, badRequest(detailInvalidJSON)
	}
	if len(v.Arr) > MaxFriends {
		return nil, badRequest(detailTooManyFriends)
	}
	list := make([]friend, 0, len(v.Arr))
	for _, e := range v.Arr {
		if e.Kind != canonjson.Object {
			return nil, badRequest(detailInvalidJSON)
		}
		uid, ok := member(e, "user_id")
		if !ok || uid.Kind != canonjson.String || strings.TrimSpace(uid.Str) == "" {
			return nil, badRequest(detailUserIDRequired)
		}
		handle, err := optString(e, "handle")
		if err != nil {
			return nil, err
		}
		alias, err := optString(e, "alias")
		if err != nil {
			return nil, err
		}
		if (handle != nil && len(*handle) > MaxFriendFieldSize) || (alias != nil && len(*alias) > MaxFriendFieldSize) {
			return nil, badRequest(detailFriendFieldLong)
		}
		list = append(list, friend{Alias: alias, Handle: handle, UserID: uid.Str})
	}
	b, err := canonjson.Marshal(list)
	if err != nil {
		return nil, err
	}
	if err := a.d.Store.PutUserBlob(c.ctx, c.auth.user.ID, friendsBlobKey, string(b), micro(c.now)); err != nil {
		return nil, err
	}
	return friendsResponse{Friends: list}, nil
}

// decodeStoredFriends reads the stored list: the canonical JSON array of
// {"alias","handle","user_id"} objects written by putFriends.
func decodeStoredFriends(payload string) ([]friend, error) {
	v, err := canonjson.Parse([]byte(payload))
	if err != nil {
		return nil, err
	}
	if v.Kind != canonjson.Array {
		return nil, errors.New("stored friends list is not an array")
	}
	out := make([]friend, 0, len(v.Arr))
	for _, e := range v.Arr {
		uid, _ := member(e, "user_id")
		f := friend{UserID: uid.Str}
		if h, ok := member(e, "handle"); ok && h.Kind == canonjson.String {
			s := h.Str
			f.Handle = &s
		}
		if al, ok := member(e, "alias"); ok && al.Kind == canonjson.String {
			s := al.Str
			f.Alias = &s
		}
		out = append(out, f)
	}
	return out, nil
}
