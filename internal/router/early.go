package router

import "sync/atomic"

// Early is the state of an inbox entry that was handed to its recipient's
// connection before its commit (early delivery, §6.7). The recipient's
// acknowledgement and the Writer's commit race; whichever comes first
// decides whether the entry is written at all:
//
//	pending --Ack--> acked (never written: the recipient has the frame)
//	pending --commit takes it--> claimed --commit ok--> stored (queue id set)
//	claimed --Ack--> claimedAcked --commit ok--> stored, and the Writer
//	                                deletes the row itself
//	claimed or claimedAcked --commit fails--> failed
//	stored --Ack--> stored: the caller deletes the row (Ack returns its id)
//
// So exactly one party deletes a row that was written, and a row whose
// recipient acknowledged it before any commit took it is never written:
// the sender's ACK then means "stored or acknowledged by every recipient".
// The zero value is pending.
type Early struct {
	state atomic.Uint32
	qid   atomic.Int64
	// To is the connection the entry was handed to (may be nil). An entry
	// it acknowledged while the commit ran is handed to it once more after
	// the commit, and only to it: it recognises the entry and so learns
	// the queue id (a later re-read of the inbox must skip the row until
	// the Writer's delete commits).
	To Peer
}

const (
	earlyPending uint32 = iota
	earlyAcked
	earlyClaimed
	earlyClaimedAcked
	earlyStored
	earlyFailed
)

// Ack records the recipient's acknowledgement. When the entry is already
// stored it returns the queue id the caller must delete.
func (e *Early) Ack() (qid int64, stored bool) {
	for {
		switch s := e.state.Load(); s {
		case earlyPending:
			if e.state.CompareAndSwap(s, earlyAcked) {
				return 0, false
			}
		case earlyClaimed:
			if e.state.CompareAndSwap(s, earlyClaimedAcked) {
				return 0, false
			}
		case earlyStored:
			return e.qid.Load(), true
		default:
			return 0, false
		}
	}
}

// Unwritten reports whether the entry was acknowledged before any commit
// took it: it is never written (final).
func (e *Early) Unwritten() bool { return e.state.Load() == earlyAcked }

// Settled reports whether the entry's fate is decided: never written,
// stored or failed.
func (e *Early) Settled() bool {
	switch e.state.Load() {
	case earlyAcked, earlyStored, earlyFailed:
		return true
	}
	return false
}

// claim takes the entry for a commit; false when it was acknowledged first
// and must not be written. An entry claimed by an earlier attempt (the
// one-by-one retry after a failed batch) stays claimed.
func (e *Early) claim() bool {
	for {
		switch s := e.state.Load(); s {
		case earlyPending:
			if e.state.CompareAndSwap(s, earlyClaimed) {
				return true
			}
		case earlyAcked:
			return false
		default:
			return true
		}
	}
}

// stored records the commit; true when the entry was acknowledged while
// the commit ran, so the Writer must delete it.
func (e *Early) stored(qid int64) (ackedMeanwhile bool) {
	e.qid.Store(qid)
	if e.state.CompareAndSwap(earlyClaimed, earlyStored) {
		return false
	}
	// claimedAcked: only the Writer changes it from here.
	e.state.Store(earlyStored)
	return true
}

// failed records a failed commit.
func (e *Early) failed() { e.state.Store(earlyFailed) }
